"""Acknowledgement links: HMAC-signed, expiring, served by a small stdlib HTTP server.

A link names one notification (``/ack?t=<id>.<expiry>.<signature>``); acknowledging it
acknowledges the alerts that notification named, by the receiver it was sent to.
``GET`` shows what would be acknowledged and a button; only ``POST`` acknowledges, so
a mail scanner that pre-fetches links acknowledges nothing. A tampered, expired or
unknown token gets the same 403 page, which names no alert (docs/alerts.md#acknowledge).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import logging
import threading
import urllib.parse
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from alerts.store import Store

log = logging.getLogger(__name__)

MAX_BODY = 4096


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


class AckServer:
    """``ThreadingHTTPServer`` on ``listen:port`` in a daemon thread."""

    def __init__(
        self, store: Store, key: bytes, listen: str, port: int, now_s: Callable[[], float]
    ) -> None:
        self.store = store
        self.key = key
        self.now_s = now_s
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, fmt: str, *args: Any) -> None:
                log.debug("ack http: " + fmt, *args)

            def _reply(self, status: int, body: str) -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Cache-Control", "no-store")
                self.send_header("Referrer-Policy", "no-referrer")
                self.end_headers()
                self.wfile.write(data)

            def _params(self) -> dict[str, str]:
                url = urllib.parse.urlsplit(self.path)
                q = dict(urllib.parse.parse_qsl(url.query))
                if self.command == "POST":
                    n = int(self.headers.get("Content-Length") or 0)
                    if n > MAX_BODY:
                        return {}
                    q.update(urllib.parse.parse_qsl(self.rfile.read(n).decode("utf-8", "replace")))
                return q

            def _handle(self) -> None:
                if urllib.parse.urlsplit(self.path).path != "/ack":
                    self._reply(HTTPStatus.NOT_FOUND, _REFUSED)
                    return
                params = self._params()
                token = params.get("t", "")
                found = server.lookup(token)
                if found is None:
                    self._reply(HTTPStatus.FORBIDDEN, _REFUSED)
                    return
                note, alerts = found
                if self.command == "GET":
                    self._reply(HTTPStatus.OK, _confirm_page(token, note, alerts))
                    return
                by = (params.get("by") or note["receiver"]).strip()[:100] or note["receiver"]
                ids = [int(a["id"]) for a in alerts]
                changed = server.store.acknowledge(ids, by, "link", server.now_s())
                log.info("acknowledged by %s via link: alerts %s", by, [a["id"] for a in changed])
                items = "".join(f"<li>{html.escape(a['key'])}</li>" for a in alerts)
                self._reply(
                    HTTPStatus.OK,
                    "<!doctype html><meta charset=utf-8><title>yukimizu</title>"
                    f"<p>確認しました ({html.escape(by)}): {len(changed)} 件 / acknowledged</p>"
                    f"<ul>{items}</ul>",
                )

            def do_GET(self) -> None:
                self._handle()

            def do_POST(self) -> None:
                self._handle()

        self.httpd = ThreadingHTTPServer((listen, port), Handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, name="ack-http", daemon=True
        )

    def lookup(self, token: str) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
        nid = verify_token(self.key, token, self.now_s())
        if nid is None:
            return None
        note = self.store.one(
            "SELECT id, receiver, alert_ids FROM notifications WHERE id = ?", (nid,)
        )
        if note is None:
            return None
        ids = [int(x) for x in json.loads(note["alert_ids"])]
        if not ids:
            return None
        marks = ",".join("?" * len(ids))
        alerts = self.store.query(
            f"SELECT id, key, status, acked_by, message FROM alerts WHERE id IN ({marks})",
            tuple(ids),
        )
        return note, alerts

    def start(self) -> AckServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(5)


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
        f'名前 / name: <input name="by" value="{html.escape(note["receiver"])}"> '
        '<button type="submit">確認 / Acknowledge</button></form>'
    )
