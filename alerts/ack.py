"""Acknowledgement links: HMAC-signed, expiring, served by core.httpserve.

A link names one notification (``/ack?t=<id>.<expiry>.<signature>``); acknowledging it
acknowledges the alerts that notification named, by the receiver it was sent to (the
link is the credential; no form field can name someone else).
``GET`` shows what would be acknowledged and a button; only ``POST`` acknowledges, so
a mail scanner that pre-fetches links acknowledges nothing. A tampered, expired or
unknown token gets the same 403 page, which names no alert (docs/alerts.md#acknowledge).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import logging
import urllib.parse
from collections.abc import Callable
from typing import Any

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


MAX_BODY = 4096  # the form is one token field: ~100 bytes
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
    ) -> None:
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

    def start(self) -> AckServer:
        self.http.start()
        return self

    def stop(self) -> None:
        self.http.shutdown()
        self.http.close()


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
