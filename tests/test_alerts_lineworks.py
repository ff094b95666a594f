"""The LINE WORKS channel against a real local HTTP server standing in for LINE WORKS:
it verifies the service account's JWT with the public key, issues access tokens that
expire on the test's clock, refuses expired or revoked tokens with 401, and records
bot messages. The callback (a 「確認」 reply) goes to the real ack server."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from alerts.ack import CALLBACK_PATH, AckServer, LineWorksAcks
from alerts.lineworks import GRANT_TYPE, is_ack_text
from alerts.service import AlertService
from core.config import ConfigError
from tests.alerts_support import Clock, alerts_config, http_double, service, transition

CLIENT_ID = "client-abc"
SERVICE_ACCOUNT = "x1y2z.serviceaccount@town.example"
BOT_SECRET = "bot-secret-123"


def _unb64(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


@dataclass
class LineWorks:
    """A local LINE WORKS: token endpoint and bot message API."""

    public_key: rsa.RSAPublicKey
    clock: Clock
    lifetime_s: int = 3600
    port: int = 0
    tokens: dict[str, float] = field(default_factory=dict)  # token → expiry (clock)
    claims: list[dict[str, Any]] = field(default_factory=list)  # verified assertions
    messages: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # path, body
    refused: list[str] = field(default_factory=list)  # why requests got 4xx
    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)  # message API
    always_401: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def verify_jwt(self, assertion: str) -> dict[str, Any] | None:
        try:
            h, c, s = assertion.split(".")
            self.public_key.verify(
                _unb64(s), f"{h}.{c}".encode(), padding.PKCS1v15(), hashes.SHA256()
            )
        except (ValueError, InvalidSignature):
            return None
        header, claims = json.loads(_unb64(h)), json.loads(_unb64(c))
        now = self.clock().timestamp()
        ok = (
            header == {"alg": "RS256", "typ": "JWT"}
            and claims["iss"] == CLIENT_ID
            and claims["sub"] == SERVICE_ACCOUNT
            and abs(claims["iat"] - now) <= 5
            and 0 < claims["exp"] - claims["iat"] <= 3600
        )
        return dict(claims) if ok else None

    def token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if form.get("grant_type") != GRANT_TYPE or form.get("scope") != "bot":
            self.refused.append("grant")
            return 400, {"error": "unsupported_grant_type"}
        if (form.get("client_id"), form.get("client_secret")) != (CLIENT_ID, "cs-xyz"):
            self.refused.append("client")
            return 401, {"error": "invalid_client"}
        claims = self.verify_jwt(form.get("assertion", ""))
        if claims is None:
            self.refused.append("jwt")
            return 400, {"error": "invalid_grant"}
        self.claims.append(claims)
        value = f"tok-{len(self.claims)}"
        self.tokens[value] = self.clock().timestamp() + self.lifetime_s
        # LINE WORKS sends expires_in as a string
        return 200, {
            "access_token": value,
            "token_type": "Bearer",
            "expires_in": str(self.lifetime_s),
            "scope": "bot",
        }

    def message(self, path: str, auth: str, body: dict[str, Any]) -> tuple[int, dict[str, str]]:
        value = auth.removeprefix("Bearer ")
        expiry = self.tokens.get(value)
        if self.always_401 or expiry is None or self.clock().timestamp() >= expiry:
            self.refused.append(f"401 {value}")
            return 401, {}
        if self.script:
            return self.script.pop(0)
        self.messages.append((path, body))
        return 201, {}


@contextmanager
def lineworks_server(public_key: rsa.RSAPublicKey, clock: Clock) -> Iterator[LineWorks]:
    lw = LineWorks(public_key, clock)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_a: Any) -> None:
            pass

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers: dict[str, str] = {}
            with lock:
                if self.path == "/oauth2/v2.0/token":
                    assert self.headers["Content-Type"] == "application/x-www-form-urlencoded"
                    status, answer = lw.token(dict(urllib.parse.parse_qsl(raw.decode())))
                    out = json.dumps(answer).encode()
                else:
                    body = json.loads(raw)
                    auth = self.headers.get("Authorization", "")
                    status, headers = lw.message(self.path, auth, body)
                    out = b"{}"
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    lw.port = int(server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield lw
    finally:
        server.shutdown()
        server.server_close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _key_pair(tmp_path: Path) -> tuple[Path, rsa.RSAPublicKey]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "private_20261206.key"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path, key.public_key()


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, rsa.RSAPublicKey]:
    return _key_pair(tmp_path)


def _channel(lw: LineWorks, key_file: Path, **kw: Any) -> dict[str, Any]:
    target = {} if "channel_id" in kw else {"user_id": "user-sato"}
    return {
        "auth_url": f"{lw.url}/oauth2/v2.0/token",
        "api_url": lw.url,
        "client_id": CLIENT_ID,
        "client_secret": "cs-xyz",
        "service_account": SERVICE_ACCOUNT,
        "private_key_file": str(key_file),
        "bot_id": "2000001",
        "bot_secret": BOT_SECRET,
        **target,
        **kw,
    }


def _svc(tmp_path: Path, clock: Clock, receivers: dict[str, Any], **extra: Any) -> Any:
    return service(
        tmp_path,
        {"receivers": receivers, "routes": [{"receivers": sorted(receivers)}], **extra},
        clock,
    )


def test_token_exchange_message_and_token_kept_until_shortly_before_expiry(
    tmp_path: Path, keys: tuple[Path, rsa.RSAPublicKey]
) -> None:
    key_file, public = keys
    clock = Clock()
    with lineworks_server(public, clock) as lw:
        svc, out = _svc(tmp_path, clock, {"sato": {"lineworks": _channel(lw, key_file)}})
        out.add(transition("water.leak", "M001", message="連続流量 24時間"))
        svc.tick()
        assert len(lw.claims) == 1 and lw.refused == []
        path, body = lw.messages[0]
        assert path == "/bots/2000001/users/user-sato/messages"
        assert body["content"]["type"] == "text"
        text = body["content"]["text"]
        assert "連続流量 24時間" in text and "確認 (応答) はこちら: " in text and "/ack?t=" in text

        clock.advance(minutes=30)  # the token is kept
        out.add(transition("snow.depth", "ST01", at=clock()))
        svc.tick()
        assert (len(lw.messages), len(lw.claims)) == (2, 1)

        clock.advance(minutes=26)  # 4 min before expiry: renewed before LINE WORKS refuses
        out.add(transition("snow.depth", "ST02", at=clock()))
        svc.tick()
        assert (len(lw.messages), len(lw.claims)) == (3, 2)

        clock.advance(hours=3)  # long expired: a new token, not a 401 first
        out.add(transition("snow.depth", "ST03", at=clock()))
        svc.tick()
        assert len(lw.claims) == 3
        assert "ST03" in lw.messages[-1][1]["content"]["text"]  # (after hourly reminders)
    assert lw.refused == []  # never sent an expired token
    assert svc.store.query("SELECT DISTINCT status, channel FROM notifications") == [
        {"status": "sent", "channel": "lineworks"}
    ]


def test_expired_token_is_refused_then_renewed_once(
    tmp_path: Path, keys: tuple[Path, rsa.RSAPublicKey]
) -> None:
    """LINE WORKS forgot the token (revoked, reissued elsewhere): one 401, a new token,
    delivered on the same attempt."""
    key_file, public = keys
    clock = Clock()
    with lineworks_server(public, clock) as lw:
        svc, out = _svc(tmp_path, clock, {"sato": {"lineworks": _channel(lw, key_file)}})
        out.add(transition("snow.depth", "ST01"))
        svc.tick()
        lw.tokens.clear()
        clock.advance(minutes=5)
        out.add(transition("snow.depth", "ST02", at=clock()))
        svc.tick()
    assert lw.refused == ["401 tok-1"]
    assert (len(lw.messages), len(lw.claims)) == (2, 2)
    rows = svc.store.query("SELECT channel, ok, detail FROM attempts ORDER BY id")
    assert [r["ok"] for r in rows] == [1, 1]
    assert "token renewed after 401" in rows[1]["detail"]


def test_401_twice_is_permanent_and_the_next_channel_takes_over(
    tmp_path: Path, keys: tuple[Path, rsa.RSAPublicKey]
) -> None:
    key_file, public = keys
    clock = Clock()
    with lineworks_server(public, clock) as lw, http_double() as hook:
        lw.always_401 = True
        svc, out = _svc(
            tmp_path,
            clock,
            {
                "sato": {
                    "order": ["lineworks", "webhook"],
                    "lineworks": _channel(lw, key_file),
                    "webhook": {"url": hook.url},
                }
            },
            retry={"attempts": 3, "backoff_s": 10},
        )
        out.add(transition("snow.dispatch", "town", subject_kind="town"))
        svc.tick()
    assert len(lw.claims) == 2 and len(lw.refused) == 2  # renewed once, no more
    assert len(hook.requests) == 1  # at once, without the retry backoff
    rows = svc.store.query("SELECT channel, ok, detail FROM attempts ORDER BY id")
    assert [(r["channel"], r["ok"]) for r in rows] == [("lineworks", 0), ("webhook", 1)]
    assert "newly issued token too" in rows[0]["detail"]


def test_429_honours_retry_after_and_5xx_backs_off(
    tmp_path: Path, keys: tuple[Path, rsa.RSAPublicKey]
) -> None:
    key_file, public = keys
    clock = Clock()
    with lineworks_server(public, clock) as lw:
        lw.script = [(429, {"Retry-After": "120"}), (503, {})]
        svc, out = _svc(
            tmp_path,
            clock,
            {"sato": {"lineworks": _channel(lw, key_file)}},
            retry={"attempts": 5, "backoff_s": 2},
        )
        out.add(transition("snow.dispatch", "town", subject_kind="town"))
        svc.tick()
        clock.advance(seconds=119)
        svc.tick()
        assert lw.script == [(503, {})]  # Retry-After: 120 s
        clock.advance(seconds=1)
        svc.tick()
        assert lw.script == [] and lw.messages == []
        clock.advance(seconds=3)
        svc.tick()
        assert lw.messages == []  # 503: backoff 2 · 2
        clock.advance(seconds=1)
        svc.tick()
    assert len(lw.messages) == 1 and len(lw.claims) == 1  # one token throughout
    assert svc.stats["retried_lineworks"] == 2
    assert svc.store.query("SELECT status FROM notifications") == [{"status": "sent"}]


def test_a_key_the_app_does_not_know_is_a_permanent_failure(
    tmp_path: Path, keys: tuple[Path, rsa.RSAPublicKey]
) -> None:
    _, public = keys
    wrong_key, _ = _key_pair(tmp_path / "..")  # a key pair LINE WORKS never saw
    clock = Clock()
    with lineworks_server(public, clock) as lw, http_double() as hook:
        svc, out = _svc(
            tmp_path,
            clock,
            {
                "sato": {
                    "order": ["lineworks", "webhook"],
                    "lineworks": _channel(lw, wrong_key),
                    "webhook": {"url": hook.url},
                }
            },
        )
        out.add(transition("snow.dispatch", "town", subject_kind="town"))
        svc.tick()
    assert lw.refused == ["jwt"] and lw.messages == [] and len(hook.requests) == 1
    detail = svc.store.query("SELECT detail FROM attempts ORDER BY id")[0]["detail"]
    assert detail.startswith("LINE WORKS token: HTTP 400") and "invalid_grant" in detail


def test_config_errors_name_the_field(tmp_path: Path) -> None:
    base = {
        "client_id": "c",
        "client_secret_env": "LW_SECRET_UNSET",
        "service_account": "s",
        "private_key_file": "missing.key",
        "bot_id": "1",
        "user_id": "u",
    }
    with pytest.raises(ConfigError) as err:
        alerts_config(tmp_path, {"receivers": {"sato": {"lineworks": base}}})
    msg = str(err.value)
    assert "alerts.receivers.sato.lineworks.private_key_file: no such file" in msg
    assert "alerts.receivers.sato.lineworks.client_secret_env: environment variable" in msg
    with pytest.raises(ConfigError) as err:
        alerts_config(tmp_path, {"receivers": {"sato": {"lineworks": {**base, "channel_id": "r"}}}})
    assert "give exactly one of user_id or channel_id" in str(err.value)


def _sign(body: bytes, secret: str = BOT_SECRET) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def _callback(port: int, event: dict[str, Any], signature: str | None = "sign") -> tuple[int, str]:
    """POST ``event``; signature "sign": signed with the bot secret, None: unsigned."""
    body = json.dumps(event, ensure_ascii=False).encode()
    if signature == "sign":
        signature = _sign(body)
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{CALLBACK_PATH}", data=body, method="POST"
    )
    req.add_header("Content-Type", "application/json; charset=UTF-8")
    req.add_header("X-WORKS-BotId", "2000001")
    if signature is not None:
        req.add_header("X-WORKS-Signature", signature)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _reply(text: str, user: str = "user-sato", room: str | None = None) -> dict[str, Any]:
    source: dict[str, Any] = {"userId": user, "domainId": 40029600}
    if room:
        source["channelId"] = room
    return {
        "type": "message",
        "source": source,
        "issuedTime": "2026-01-14T18:01:00.000Z",
        "content": {"type": "text", "text": text},
    }


def _firing(svc: AlertService) -> list[dict[str, Any]]:
    return svc.store.query("SELECT key, status, acked_by, ack_via FROM alerts ORDER BY id")


def test_callback_forged_and_unsigned_refused_valid_kakunin_acknowledges(
    tmp_path: Path, keys: tuple[Path, rsa.RSAPublicKey]
) -> None:
    key_file, public = keys
    clock = Clock()
    with lineworks_server(public, clock) as lw:
        svc, out = _svc(
            tmp_path,
            clock,
            {
                "sato": {"lineworks": _channel(lw, key_file)},
                "suzuki": {"lineworks": _channel(lw, key_file, user_id="user-suzuki")},
            },
            ack={"port": _free_port(), "secret": "x"},  # the service's own ack server
        )
        out.add(transition("snow.dispatch", "town", subject_kind="town"))
        svc.tick()
    svc.start_listeners()
    assert svc.ack_server is not None
    srv = svc.ack_server
    try:
        body = json.dumps(_reply("確認"), ensure_ascii=False).encode()
        assert _callback(srv.port, _reply("確認"), None) == (401, "signature required")
        forged = _sign(body, "not-the-bot-secret")
        assert _callback(srv.port, _reply("確認"), forged) == (403, "bad signature")
        # signed for another body: a replay with the text changed
        assert _callback(srv.port, _reply("確認"), _sign(b"{}"))[0] == 403
        assert [a["status"] for a in _firing(svc)] == ["firing"]

        assert _callback(srv.port, _reply("こんにちは")) == (200, "not an acknowledgement")
        stranger = _reply("確認", user="user-unknown")
        assert _callback(srv.port, stranger) == (200, "unknown user")
        assert [a["status"] for a in _firing(svc)] == ["firing"]

        assert _callback(srv.port, _reply("確認 ")) == (200, "acknowledged 1")
        assert _callback(srv.port, _reply("確認")) == (200, "nothing to acknowledge")
        # a bounded body: refused before anything reads it
        huge = _reply("確認" + "あ" * 6000)
        assert _callback(srv.port, huge)[0] == 413
    finally:
        svc.stop_listeners()
    assert _firing(svc) == [
        {
            "key": "snow.dispatch:town",
            "status": "acknowledged",
            "acked_by": "sato",  # the receiver this LINE WORKS user is
            "ack_via": "lineworks",
        }
    ]
    svc.tick()  # who took it: suzuki, also paged, hears that sato did
    notices = svc.store.query("SELECT receiver FROM notifications WHERE kind = 'ack'")
    assert notices == [{"receiver": "suzuki"}]


def test_reply_in_a_talk_room_acknowledges_for_the_sender(
    tmp_path: Path, keys: tuple[Path, rsa.RSAPublicKey]
) -> None:
    key_file, public = keys
    clock = Clock()
    with lineworks_server(public, clock) as lw:
        svc, out = service(
            tmp_path,
            {
                "receivers": {
                    "room": {"lineworks": _channel(lw, key_file, channel_id="room-1")},
                    # sato is paged elsewhere; on LINE WORKS the bot knows him as user-sato
                    "sato": {
                        "order": ["console"],
                        "console": {},
                        "lineworks": _channel(lw, key_file),
                    },
                },
                "routes": [{"receivers": ["room"]}],
            },
            clock,
        )
        out.add(transition("snow.dispatch", "town", subject_kind="town"))
        svc.tick()
    assert [p for p, _ in lw.messages] == ["/bots/2000001/channels/room-1/messages"]
    acks = LineWorksAcks.from_receivers(svc.cfg.receivers, 3600)
    srv = AckServer(svc.store, svc.key, "127.0.0.1", 0, svc.t, lineworks=acks).start()
    try:
        reply = _reply("了解しました!", room="room-1")
        assert _callback(srv.port, reply) == (200, "acknowledged 1")
    finally:
        srv.stop()
    assert _firing(svc)[0]["acked_by"] == "sato"


@pytest.mark.parametrize(
    ("text", "ack"),
    [("確認", True), ("確認しました。", True), ("ＯＫ", True), ("了解", True), ("確認中?", False)],
)
def test_ack_words(text: str, ack: bool) -> None:
    assert is_ack_text(text) is ack
