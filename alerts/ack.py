"""Acknowledgement links: HMAC-signed, expiring, served by core.httpserve.

A link names one notification (``/ack?t=<id>.<expiry>.<signature>``); acknowledging it
acknowledges the alerts that notification named, by the receiver it was sent to (the
link is the credential; no form field can name someone else).
``GET`` shows what would be acknowledged and a button; only ``POST`` acknowledges, so
a mail scanner that pre-fetches links acknowledges nothing. A tampered, expired or
unknown token gets the same 403 page, which names no alert (docs/alerts.md#acknowledge).

``POST /lineworks/callback`` takes a LINE WORKS bot's callback: a signed reply such as
「確認」 from a staff member mapped to a receiver acknowledges the newest notification
that reached them (or their talk room) over LINE WORKS; unsigned or forged requests are
refused (docs/alerts.md#line-works).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import logging
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from alerts.config import Receiver, lineworks_bot_secret
from alerts.lineworks import is_ack_text, signature_ok
from alerts.store import Store
from core.httpserve import HttpServer, Limits, Request, Response

log = logging.getLogger(__name__)


def _sig(key: bytes, nid: int, exp: int) -> str:
    mac = hmac.new(key, f"ack:{nid}:{exp}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def make_token(key: bytes, nid: int, exp: int) -> str:
    return f"{nid}.{exp}.{_sig(key, nid, exp)}"


def verify_token(key: bytes, token: str, now_s: float) -> int | None:
    """The notification id of a valid, unexpired token; None otherwise."""
    parts = token.split(".")
    if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
        return None
    nid, exp = int(parts[0]), int(parts[1])
    if not hmac.compare_digest(_sig(key, nid, exp), parts[2]):
        return None
    if now_s > exp:
        return None
    return nid


def ack_url(base_url: str, key: bytes, nid: int, exp: int) -> str:
    return f"{base_url.rstrip('/')}/ack?t={make_token(key, nid, exp)}"


_REFUSED = (
    "<!doctype html><meta charset=utf-8><title>yukimizu</title>"
    "<p>このリンクは無効か、期限切れです。/ This link is invalid or has expired.</p>"
)


# the form is one token field (~100 bytes); a LINE WORKS callback carries one text
# message of at most 2,000 characters (≤ 6 KB in UTF-8) and its source
MAX_BODY = 16384
CALLBACK_PATH = "/lineworks/callback"
MAX_CONNECTIONS = 64  # staff opening links; beyond, stalled connections are displaced
REQUEST_TIMEOUT_S = 10.0  # a request's head and body within this of its first byte
LIMITS = Limits(
    max_connections=MAX_CONNECTIONS,
    max_body_bytes=MAX_BODY,
    methods=frozenset({"GET", "POST"}),
    request_timeout_s=REQUEST_TIMEOUT_S,
    idle_timeout_s=REQUEST_TIMEOUT_S,
    send_timeout_s=REQUEST_TIMEOUT_S,
    max_requests=100,
    server_name="yukimizu-ack",
)


def _page(status: int, body: str) -> Response:
    return Response(
        status,
        body.encode(),
        [
            ("Content-Type", "text/html; charset=utf-8"),
            ("Cache-Control", "no-store"),
            ("Referrer-Policy", "no-referrer"),
            ("X-Content-Type-Options", "nosniff"),
        ],
    )


@dataclass
class LineWorksAcks:
    """Who is who on LINE WORKS, from the receivers' ``lineworks`` blocks: the bots'
    secrets, the staff member (user id) each receiver is, the talk rooms they share."""

    secrets: dict[str, set[str]] = field(default_factory=dict)  # bot id → bot secrets
    users: dict[tuple[str, str], str] = field(default_factory=dict)  # (bot, user) → receiver
    rooms: dict[tuple[str, str], list[str]] = field(default_factory=dict)  # (bot, channel)
    ttl_s: float = 24 * 3600.0  # a reply acknowledges notifications sent this recently

    @classmethod
    def from_receivers(cls, receivers: Mapping[str, Receiver], ttl_s: float) -> LineWorksAcks:
        out = cls(ttl_s=ttl_s)
        for name, rec in receivers.items():
            lw = rec.lineworks
            if lw is None:
                continue
            secret = lineworks_bot_secret(lw)
            if secret:
                out.secrets.setdefault(lw.bot_id, set()).add(secret)
            if lw.user_id:
                out.users.setdefault((lw.bot_id, lw.user_id), name)
            if lw.channel_id:
                out.rooms.setdefault((lw.bot_id, lw.channel_id), []).append(name)
        return out


def _text(status: int, body: str) -> Response:
    return Response(
        status,
        body.encode(),
        [("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", "no-store")],
    )


class AckServer:
    """The link server (core.httpserve: one event loop) on ``listen:port``, its loop in a
    daemon thread beside the service's own loop. The handler runs on that thread and
    touches only the store (which has its own lock)."""

    def __init__(
        self,
        store: Store,
        key: bytes,
        listen: str,
        port: int,
        now_s: Callable[[], float],
        *,
        limits: Limits = LIMITS,
        lineworks: LineWorksAcks | None = None,
    ) -> None:
        self.lineworks = lineworks
        self.store = store
        self.key = key
        self.now_s = now_s
        self.http = HttpServer(self.handle, listen, port, limits, name="ack-http")
        self.port = self.http.port

    def lookup(self, token: str) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
        nid = verify_token(self.key, token, self.now_s())
        if nid is None:
            return None
        return self.store.ack_scope(nid)

    def handle(self, req: Request) -> Response:
        if req.path == CALLBACK_PATH and self.lineworks is not None:
            return self.lineworks_callback(req, self.lineworks)
        if req.path != "/ack":
            return _page(404, _REFUSED)
        params = dict(urllib.parse.parse_qsl(req.query))
        if req.method == "POST":
            params.update(urllib.parse.parse_qsl(req.body.decode("utf-8", "replace")))
        token = params.get("t", "")
        found = self.lookup(token)
        if found is None:
            return _page(403, _REFUSED)
        note, alerts = found
        if req.method == "GET":
            return _page(200, _confirm_page(token, note, alerts))
        # The acknowledger is whom the link was sent to: holding the link is the proof,
        # and nothing in the request can name someone else.
        by = str(note["receiver"])
        changed = self.store.acknowledge([int(a["id"]) for a in alerts], by, "link", self.now_s())
        log.info("acknowledged by %s via link: alerts %s", by, [a["id"] for a in changed])
        items = "".join(f"<li>{html.escape(a['key'])}</li>" for a in alerts)
        return _page(
            200,
            "<!doctype html><meta charset=utf-8><title>yukimizu</title>"
            f"<p>確認しました ({html.escape(by)}): {len(changed)} 件 / acknowledged</p>"
            f"<ul>{items}</ul>",
        )

    def lineworks_callback(self, req: Request, lw: LineWorksAcks) -> Response:
        """A bot's callback: verified, then a 確認 reply acknowledges for the sender."""
        event = _verified_event(req, lw)
        if isinstance(event, Response):
            return event
        # 200 from here on: the event is LINE WORKS's own, whatever we make of it
        bot, user, room, text = event
        if not is_ack_text(text):
            return _text(200, "not an acknowledgement")
        by = lw.users.get((bot, user))
        if by is None:
            log.warning("LINE WORKS reply from user %s, who is no receiver of bot %s", user, bot)
            return _text(200, "unknown user")
        scope = lw.rooms.get((bot, room), []) if room else [by]
        now = self.now_s()
        nid = self.store.latest_sent_firing(scope, "lineworks", now - lw.ttl_s)
        found = self.store.ack_scope(nid) if nid is not None else None
        if found is None:
            log.info("LINE WORKS 確認 from %s: nothing firing to acknowledge", by)
            return _text(200, "nothing to acknowledge")
        # The acknowledger is the receiver this LINE WORKS user is, never the text.
        ids = [int(a["id"]) for a in found[1]]
        changed = self.store.acknowledge(ids, by, "lineworks", now)
        log.info(
            "acknowledged by %s via LINE WORKS (notification #%s): alerts %s",
            by,
            nid,
            [a["id"] for a in changed],
        )
        return _text(200, f"acknowledged {len(changed)}")

    def start(self) -> AckServer:
        self.http.start()
        return self

    def stop(self) -> None:
        self.http.shutdown()
        self.http.close()


def _verified_event(req: Request, lw: LineWorksAcks) -> tuple[str, str, str, str] | Response:
    """(bot, user, talk room or "", text) of a correctly signed text message event;
    a refusal (401 unsigned, 403 forged, 400 unreadable) or 200 for other events."""
    if req.method != "POST":
        return _text(405, "POST only")
    bot = req.headers.get("x-works-botid", "")
    signature = req.headers.get("x-works-signature")
    if not signature:
        log.warning("LINE WORKS callback without X-WORKS-Signature refused (bot %r)", bot)
        return _text(401, "signature required")
    if not any(signature_ok(s, req.body, signature) for s in lw.secrets.get(bot, ())):
        log.warning("LINE WORKS callback with a wrong signature refused (bot %r)", bot)
        return _text(403, "bad signature")
    try:
        event = json.loads(req.body)
        kind, source = event["type"], event["source"]
        user, room = str(source["userId"]), str(source.get("channelId") or "")
        content = event.get("content") or {}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("LINE WORKS callback: unreadable event (%r): %r", exc, req.body[:200])
        return _text(400, "unreadable event")
    if kind != "message" or not isinstance(content, dict) or content.get("type") != "text":
        return _text(200, "ignored")
    return bot, user, room, str(content.get("text", ""))


def _confirm_page(token: str, note: dict[str, Any], alerts: list[dict[str, Any]]) -> str:
    rows = "".join(
        f"<li>{html.escape(a['key'])} — {html.escape(a['status'])}: "
        f"{html.escape(a['message'])}</li>"
        for a in alerts
    )
    return (
        "<!doctype html><meta charset=utf-8><title>yukimizu 確認</title>"
        f"<p>次の警報を確認済みにします / acknowledge:</p><ul>{rows}</ul>"
        '<form method="post" action="/ack">'
        f'<input type="hidden" name="t" value="{html.escape(token)}">'
        f"<p>確認者 / acknowledged by: {html.escape(note['receiver'])}</p>"
        '<button type="submit">確認 / Acknowledge</button></form>'
    )
