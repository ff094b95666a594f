"""LINE WORKS API 2.0: service-account tokens, bot messages, callback signatures.

A notification goes out as a bot message to one staff member
(``/bots/{botId}/users/{userId}/messages``) or to a talk room
(``/bots/{botId}/channels/{channelId}/messages``) with an access token obtained by the
service account (docs/alerts.md#line-works):

- a JWT (RS256, signed with the service account's private key; iss = client id,
  sub = service account, iat, exp ≤ 1 h) is exchanged at the token endpoint
  (grant ``urn:ietf:params:oauth:grant-type:jwt-bearer``) for an access token;
- the token is kept (:class:`TokenCache`) until shortly before it expires, then a new
  one is obtained the same way; no refresh token is kept (a new JWT is as cheap);
- a message refused with 401 gets a new token and is tried once more; a second 401 is
  a permanent failure (the receiver's next channel takes over, alerts/delivery.py).

Replies come back on the bot's callback; :func:`signature_ok` checks
``X-WORKS-Signature`` (base64 HMAC-SHA256 of the body with the bot secret) and
:func:`is_ack_text` says whether a reply means "acknowledged" (alerts/ack.py).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import unicodedata
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from alerts.channels import DeliveryError, Outgoing, post
from alerts.config import LineWorksChannel, lineworks_client_secret

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
JWT_LIFETIME_S = 3600  # LINE WORKS accepts an assertion valid for at most 60 minutes
RENEW_BEFORE_S = 300.0  # a token is renewed this long before it expires
TEXT_MAX = 2000  # characters in one LINE WORKS text message
# replies that acknowledge (after NFKC, lower case, without trailing 。.!！)
ACK_WORDS = frozenset({"確認", "確認しました", "確認します", "了解", "了解しました", "ack", "ok"})


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def load_private_key(path: Path) -> rsa.RSAPrivateKey:
    """The service account's RSA private key (PEM, PKCS#8 as issued, or PKCS#1)."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise DeliveryError(
            f"LINE WORKS private_key_file {path}: cannot read an unencrypted PEM key ({exc})",
            retryable=False,
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise DeliveryError(f"LINE WORKS private_key_file {path}: not an RSA key", retryable=False)
    return key


def make_jwt(ch: LineWorksChannel, key: rsa.RSAPrivateKey, now_s: float) -> str:
    """The service account's assertion: RS256 over header.claims."""
    iat = int(now_s)
    header = {"alg": "RS256", "typ": "JWT"}
    claims = {
        "iss": ch.client_id,
        "sub": ch.service_account,
        "iat": iat,
        "exp": iat + JWT_LIFETIME_S,
    }
    signing_input = ".".join(
        _b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
    )
    sig = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{_b64url(sig)}"


@dataclass(frozen=True)
class Token:
    value: str
    expires_at: float


class TokenCache:
    """Access tokens per (token endpoint, client id, service account, scope), shared by
    every receiver using the same app; thread-safe."""

    def __init__(self) -> None:
        self._tokens: dict[tuple[str, str, str, str], Token] = {}
        self._lock = threading.Lock()
        self.issued = 0  # tokens obtained (for tests and the log)

    @staticmethod
    def _key(ch: LineWorksChannel) -> tuple[str, str, str, str]:
        return (ch.auth_url, ch.client_id, ch.service_account, ch.scope)

    def get(self, ch: LineWorksChannel, now_s: float) -> str:
        """A token valid for at least RENEW_BEFORE_S more (or half its lifetime)."""
        with self._lock:
            tok = self._tokens.get(self._key(ch))
            if tok is not None and now_s < tok.expires_at:
                return tok.value
            tok = self._issue(ch, now_s)
            self._tokens[self._key(ch)] = tok
            return tok.value

    def drop(self, ch: LineWorksChannel, value: str) -> None:
        """Forget ``value`` (the API refused it); the next get() obtains a new one."""
        with self._lock:
            tok = self._tokens.get(self._key(ch))
            if tok is not None and tok.value == value:
                del self._tokens[self._key(ch)]

    def _issue(self, ch: LineWorksChannel, now_s: float) -> Token:
        assertion = make_jwt(ch, load_private_key(ch.private_key_file), now_s)
        form = urllib.parse.urlencode(
            {
                "assertion": assertion,
                "grant_type": GRANT_TYPE,
                "client_id": ch.client_id,
                "client_secret": lineworks_client_secret(ch),
                "scope": ch.scope,
            }
        ).encode()
        try:
            _, text = post(ch.auth_url, form, "application/x-www-form-urlencoded", {}, ch.timeout_s)
        except DeliveryError as exc:
            raise DeliveryError(
                f"LINE WORKS token: {exc}",
                retryable=exc.retryable,
                retry_after_s=exc.retry_after_s,
                status=exc.status,
            ) from None
        try:
            answer = json.loads(text)
            value = str(answer["access_token"])
            lifetime = float(answer["expires_in"])  # LINE WORKS sends it as a string
        except (ValueError, KeyError, TypeError) as exc:
            raise DeliveryError(
                f"LINE WORKS token: unexpected answer from {ch.auth_url} ({exc!r})",
                retryable=True,
            ) from None
        self.issued += 1
        early = min(RENEW_BEFORE_S, lifetime / 2)
        return Token(value, now_s + lifetime - early)


def message_url(ch: LineWorksChannel) -> str:
    bot = urllib.parse.quote(ch.bot_id, safe="")
    if ch.user_id:
        target = f"users/{urllib.parse.quote(ch.user_id, safe='')}"
    else:
        target = f"channels/{urllib.parse.quote(ch.channel_id or '', safe='')}"
    return f"{ch.api_url.rstrip('/')}/bots/{bot}/{target}/messages"


def send_lineworks(ch: LineWorksChannel, msg: Outgoing, tokens: TokenCache, now_s: float) -> str:
    """One bot message carrying the notification's text and acknowledge link."""
    text = msg.text if len(msg.text) <= TEXT_MAX else msg.text[: TEXT_MAX - 1] + "…"
    data = json.dumps({"content": {"type": "text", "text": text}}, ensure_ascii=False).encode()
    url = message_url(ch)
    for renewed in (False, True):
        token = tokens.get(ch, now_s)
        try:
            status, _ = post(
                url,
                data,
                "application/json; charset=utf-8",
                {"Authorization": f"Bearer {token}"},
                ch.timeout_s,
            )
        except DeliveryError as exc:
            if exc.status != 401:
                raise
            tokens.drop(ch, token)
            if renewed:
                raise DeliveryError(
                    f"LINE WORKS refused a newly issued token too (HTTP 401 from {url}); "
                    "check the app's scopes (bot) and the bot's membership",
                    retryable=False,
                    status=401,
                ) from None
            continue
        return f"HTTP {status}" + (" (token renewed after 401)" if renewed else "")
    raise AssertionError("unreachable")  # pragma: no cover


def signature_ok(bot_secret: str, body: bytes, signature: str | None) -> bool:
    """``X-WORKS-Signature`` is base64(HMAC-SHA256(bot secret, body))."""
    if not bot_secret or not signature:
        return False
    mac = hmac.new(bot_secret.encode(), body, hashlib.sha256).digest()
    return hmac.compare_digest(base64.b64encode(mac), signature.strip().encode())


def is_ack_text(text: str) -> bool:
    """A reply meaning "I take it": 確認, 了解, ack, OK (full-width too)."""
    t = unicodedata.normalize("NFKC", text).strip().lower().rstrip("。.!！ ")
    return t in ACK_WORDS
