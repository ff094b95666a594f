"""A Web Push receiver for the tests: a local HTTP server playing the push service and
the browser at once. It checks the VAPID signature (RFC 8292) and decrypts each
message as the browser would (RFC 8291 with RFC 8188 aes128gcm), written here with
`cryptography` from the RFCs rather than with the library the sender uses, so a
message it cannot decrypt fails the test. Its answers (201, 404, 410, 429 …) are set
per endpoint."""

from __future__ import annotations

import base64
import http.client
import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64u(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _point(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def _hkdf(salt: bytes, ikm: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


@dataclass
class Browser:
    """One subscribed browser: its P-256 key pair and authentication secret."""

    path: str
    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    auth: bytes = field(default_factory=lambda: os.urandom(16))

    def keys(self) -> dict[str, str]:
        return {"p256dh": b64u(_point(self.key.public_key())), "auth": b64u(self.auth)}

    def decrypt(self, body: bytes) -> bytes:
        """RFC 8291 §3.4 and RFC 8188 §2: one record, the sender's key as keyid."""
        salt, rs, idlen = body[:16], int.from_bytes(body[16:20], "big"), body[20]
        sender = body[21 : 21 + idlen]
        ciphertext = body[21 + idlen :]
        assert idlen == 65 and len(ciphertext) <= rs, (idlen, rs, len(ciphertext))
        as_public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), sender)
        shared = self.key.exchange(ec.ECDH(), as_public)
        ua_public = _point(self.key.public_key())
        ikm = _hkdf(self.auth, shared, b"WebPush: info\x00" + ua_public + sender, 32)
        cek = _hkdf(salt, ikm, b"Content-Encoding: aes128gcm\x00", 16)
        nonce = _hkdf(salt, ikm, b"Content-Encoding: nonce\x00", 12)
        padded = AESGCM(cek).decrypt(nonce, ciphertext, None)
        data = padded.rstrip(b"\x00")
        assert data.endswith(b"\x02"), "last record's delimiter missing"
        return data[:-1]


def verify_vapid(authorization: str, audience: str) -> dict[str, Any]:
    """The claims of ``vapid t=<JWT>, k=<key>`` once its ES256 signature checks out."""
    scheme, _, params = authorization.partition(" ")
    assert scheme == "vapid", authorization[:40]
    parts = dict(p.strip().split("=", 1) for p in params.split(","))
    head_b64, claims_b64, sig_b64 = parts["t"].split(".")
    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64u(parts["k"]))
    sig = unb64u(sig_b64)
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    key.verify(der, f"{head_b64}.{claims_b64}".encode(), ec.ECDSA(hashes.SHA256()))
    assert json.loads(unb64u(head_b64)) == {"typ": "JWT", "alg": "ES256"}
    claims: dict[str, Any] = json.loads(unb64u(claims_b64))
    assert claims["aud"] == audience and claims["exp"] > time.time(), claims
    claims["k"] = parts["k"]
    return claims


@dataclass
class Received:
    path: str
    status: int
    headers: dict[str, str]
    payload: dict[str, Any] | None  # decrypted, when it was answered 201
    claims: dict[str, Any] | None


class Receiver:
    """The push service on 127.0.0.1; ``answers[path]`` queues statuses (then 201)."""

    def __init__(self) -> None:
        self.browsers: dict[str, Browser] = {}
        self.answers: dict[str, list[tuple[int, dict[str, str]]]] = {}
        self.received: list[Received] = []
        self.errors: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.handle(self, body)

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.http.server_address[1]}"
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()

    def browser(self, name: str) -> tuple[Browser, dict[str, Any]]:
        b = Browser("/push/" + name)
        self.browsers[b.path] = b
        return b, {"endpoint": self.origin + b.path, "keys": b.keys()}

    def handle(self, h: BaseHTTPRequestHandler, body: bytes) -> None:
        headers = {k.lower(): v for k, v in h.headers.items()}
        queue = self.answers.get(h.path) or []
        status, extra = queue.pop(0) if queue else (201, {})
        payload = claims = None
        if status == 201:
            try:
                claims = verify_vapid(headers.get("authorization", ""), self.origin)
                assert headers.get("content-encoding") == "aes128gcm", headers
                assert int(headers["ttl"]) > 0, headers
                payload = json.loads(self.browsers[h.path].decrypt(body))
            except (AssertionError, KeyError, ValueError, InvalidSignature) as exc:
                self.errors.append(f"{h.path}: {exc!r}")
                status = 400
        self.received.append(Received(h.path, status, headers, payload, claims))
        h.send_response(status)
        for k, v in extra.items():
            h.send_header(k, v)
        h.send_header("Content-Length", "0")
        h.end_headers()

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@contextmanager
def receiving() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        r.close()


def post_json(
    port: int, path: str, body: bytes, ctype: str = "application/json"
) -> tuple[int, dict[str, str], bytes]:
    """POST to 127.0.0.1:port; status, headers (lower-case) and body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": ctype})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()
