"""Test doubles for the alerts tests: an outbox writer, a fake clock and a scripted HTTP
server standing in for webhook receivers and the LINE Messaging API."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from alerts.config import AlertsConfig, load_alerts_config
from alerts.service import AlertService
from core.config import Config
from rules.transitions import OUTBOX_DDL, Severity, Status, Transition

T0 = datetime(2026, 1, 14, 18, 0, tzinfo=UTC)  # 03:00 JST


class Clock:
    def __init__(self, start: datetime = T0) -> None:
        self.t = start

    def __call__(self) -> datetime:
        return self.t

    def advance(self, **kw: float) -> None:
        self.t += timedelta(**kw)


def transition(
    rule: str,
    subject: str,
    *,
    status: str = "firing",
    severity: str = "critical",
    subject_kind: str = "station",
    district: str | None = None,
    at: datetime = T0,
    message: str = "",
) -> Transition:
    return Transition(
        key=f"{rule}:{subject}",
        rule=rule,
        category=rule.partition(".")[0],  # the family, as the rules engine names it
        subject=subject,
        subject_kind=subject_kind,
        district=district,
        severity=Severity(severity),
        status=Status(status),
        event_time=at,
        detected_at=at,
        message=message or f"{subject}: {rule} テスト",
    )


class Outbox:
    """Writes transitions the way the rules engine does (rules/transitions.py)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        con = sqlite3.connect(path)
        con.execute(OUTBOX_DDL)
        con.commit()
        con.close()

    def add(self, *items: Transition) -> None:
        con = sqlite3.connect(self.path)
        with con:
            con.executemany(
                "INSERT INTO outbox (key, status, event_time, record) VALUES (?, ?, ?, ?)",
                [
                    (t.key, t.status.value, t.event_time.isoformat(), t.model_dump_json())
                    for t in items
                ],
            )
        con.close()


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class HttpDouble:
    """A local HTTP server answering with scripted statuses (then 200), recording requests."""

    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def texts(self) -> list[str]:
        return [str(r.body.get("text") or r.body["messages"][0]["text"]) for r in self.requests]


@contextmanager
def http_double(script: list[tuple[int, dict[str, str]]] | None = None) -> Iterator[HttpDouble]:
    double = HttpDouble(script=list(script or []))
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_a: Any) -> None:
            pass

        def do_POST(self) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(n) or b"{}")
            with lock:
                double.requests.append(Request(self.path, dict(self.headers), body))
                status, headers = double.script.pop(0) if double.script else (200, {})
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    double.port = int(server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield double
    finally:
        server.shutdown()
        server.server_close()


def alerts_config(
    tmp_path: Path, alerts: dict[str, Any], **core: Any
) -> tuple[Config, AlertsConfig]:
    data = {
        "state_dir": str(tmp_path / "alerts"),
        "outbox": str(tmp_path / "rules.sqlite"),
        "write_events": False,
        "write_metrics": False,
        "group_wait_s": 0,
        "ack": {"port": 0, "secret": "test-secret"},
        **alerts,
    }
    cfg = Config.model_validate({"alerts": data, **core})
    return cfg, load_alerts_config(cfg, environ={})


def service(
    tmp_path: Path, alerts: dict[str, Any], clock: Clock, **core: Any
) -> tuple[AlertService, Outbox]:
    cfg, ac = alerts_config(tmp_path, alerts, **core)
    return AlertService(cfg, ac, now=clock), Outbox(ac.outbox)
