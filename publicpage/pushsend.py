"""Send "your road is done" notices (docs/public.md#web-push).

Run by ``public run`` after each build, on the snapshot the page was built from: a
subscribed segment whose last plowing (``segment_status``, the page's
``last_plowed``) is newer than the subscription's last notice gets one notice — one
message per subscription per round, naming its roads. Encryption (RFC 8291
aes128gcm) and VAPID (RFC 8292) are pywebpush's; what is ours is how the push
services' answers are honoured:

- 201/202: sent; the segments are marked notified.
- 404/410: the subscription is gone (the resident unsubscribed, the browser dropped
  it): dropped here too (RFC 8030 §7.3 / the services' docs).
- 429 (and 503 with Retry-After): that push service is not sent anything more until
  Retry-After has passed (seconds or an HTTP date; 60 s if absent, at most a day);
  the notice stays due and goes out on a later round.
- other errors and network failures: counted; a subscription failing
  ``drop_after_failures`` times in a row is dropped.
"""

from __future__ import annotations

import base64
import email.utils
import logging
import urllib.parse
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import requests
from cryptography.hazmat.primitives import serialization
from py_vapid import Vapid02
from pywebpush import WebPushException, webpush

from core.config import ConfigError
from publicpage.config import PushConfig
from publicpage.push import Due, PushStore
from publicpage.snapshot import JST

log = logging.getLogger(__name__)

__all__ = [
    "Answer",
    "Sender",
    "application_server_key",
    "load_vapid",
    "notice_payload",
    "send_round",
]

DEFAULT_RETRY_S = 60
MAX_RETRY_S = 24 * 3600


@dataclass(frozen=True, slots=True)
class Answer:
    """What a push service said: the status and its Retry-After (None if absent)."""

    status: int
    retry_after: str | None = None


# (subscription info, payload) -> the push service's answer; raises OSError or
# requests.RequestException when it could not be reached.
Post = Callable[[dict[str, Any], bytes], Answer]


def load_vapid(path: Path) -> Vapid02:
    """The VAPID private key (PEM), e.g. made with ``openssl ecparam``; ConfigError if
    missing or unusable. (py_vapid's own from_file makes a new key when the file is
    missing: a mistyped path would silently invalidate every subscription.)"""
    field = "public.push.vapid_key_file"
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{field}: cannot read {path}: {exc.strerror}") from exc
    try:
        return Vapid02.from_pem(pem)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{field}: {path} is not a private key in PEM") from exc


def application_server_key(vapid: Vapid02) -> str:
    """The public key a browser subscribes with (``applicationServerKey``), base64url."""
    raw = vapid.public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class Sender:
    """Posts one encrypted notice with pywebpush (a requests session, VAPID signed)."""

    def __init__(self, vapid: Vapid02, pcfg: PushConfig) -> None:
        self.vapid = vapid
        self.pcfg = pcfg
        self.session = requests.Session()

    def __call__(self, info: dict[str, Any], payload: bytes) -> Answer:
        try:
            resp = webpush(
                info,
                data=payload.decode(),
                vapid_private_key=self.vapid,
                vapid_claims={"sub": self.pcfg.subject},  # aud and exp: pywebpush's
                content_encoding="aes128gcm",
                ttl=self.pcfg.ttl_s,
                timeout=self.pcfg.timeout_s,
                headers={"Urgency": "normal"},
                requests_session=self.session,
            )
        except WebPushException as exc:
            if exc.response is None:
                raise requests.ConnectionError(str(exc)) from exc
            return Answer(exc.response.status_code, exc.response.headers.get("Retry-After"))
        assert isinstance(resp, requests.Response)
        return Answer(resp.status_code, resp.headers.get("Retry-After"))

    def close(self) -> None:
        self.session.close()


def _hhmm(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, JST).strftime("%H:%M")


def notice_payload(due: Due, names: Mapping[str, str]) -> bytes:
    """The notice (JSON for the page's service worker), a few hundred bytes: far under
    the 4,078 bytes of plaintext one aes128gcm record carries for every push service."""
    done = sorted(due.plowed, key=lambda p: p[1])
    first = names.get(done[0][0], done[0][0])
    body = f"{first}の除雪が終わりました（{_hhmm(done[0][1])}）"
    if len(done) > 1:
        body = f"{first}ほか{len(done) - 1}区間の除雪が終わりました（{_hhmm(done[-1][1])}）"
    return orjson.dumps(
        {"title": "除雪のお知らせ", "body": body, "tag": "yukimizu-" + done[0][0], "url": "./"}
    )


def _retry_after_s(value: str | None, now_ms: int) -> int:
    if value:
        text = value.strip()
        if text.isdigit():
            return max(1, min(int(text), MAX_RETRY_S))
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            when = None
        if when is not None and when.tzinfo is not None:
            return max(1, min(int(when.timestamp() - now_ms / 1000), MAX_RETRY_S))
    return DEFAULT_RETRY_S


def plowed_times(segments: list[dict[str, Any]]) -> dict[str, int]:
    """segment → its last plowing (ms), from the snapshot's segments."""
    out = {}
    for s in segments:
        if s.get("last_plowed"):
            out[s["id"]] = int(datetime.fromisoformat(s["last_plowed"]).timestamp() * 1000)
    return out


def send_round(
    store: PushStore,
    segments: list[dict[str, Any]],
    now_ms: int,
    post: Post,
    pcfg: PushConfig,
) -> Counter[str]:
    """One round: purge expired subscriptions, send what is due; the counts."""
    counts: Counter[str] = Counter()
    counts["expired"] = store.purge_expired(now_ms)
    names = {s["id"]: s["name"] for s in segments}
    blocked: dict[str, int] = {}
    for due in store.due(plowed_times(segments), pcfg.max_sends_per_run):
        host = (urllib.parse.urlsplit(due.endpoint).hostname or "").lower()
        if host not in blocked:
            blocked[host] = store.blocked_until(host)
        if blocked[host] > now_ms:
            counts["deferred"] += 1
            continue
        info = {"endpoint": due.endpoint, "keys": {"p256dh": due.p256dh, "auth": due.auth}}
        try:
            answer = post(info, notice_payload(due, names))
        except (OSError, requests.RequestException) as exc:
            log.warning("push: %s unreachable: %s", host, exc)
            counts["failed"] += 1
            counts["dropped"] += store.failed(due.endpoint, pcfg.drop_after_failures)
            continue
        if answer.status in (200, 201, 202):
            store.notified(due)
            counts["sent"] += 1
        elif answer.status in (404, 410):
            store.drop(due.endpoint)
            counts["dropped"] += 1
        elif answer.status == 429 or (answer.status == 503 and answer.retry_after):
            wait_s = _retry_after_s(answer.retry_after, now_ms)
            blocked[host] = now_ms + wait_s * 1000
            store.block(host, blocked[host])
            log.warning("push: %s answered %d; waiting %d s", host, answer.status, wait_s)
            counts["deferred"] += 1
        else:
            log.warning("push: %s answered %d", host, answer.status)
            counts["failed"] += 1
            counts["dropped"] += store.failed(due.endpoint, pcfg.drop_after_failures)
    return counts
