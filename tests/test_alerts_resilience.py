"""One bad record or one dead channel must not stop on-call alerting.

- InfluxDB refusing an ``alert_event`` point (a real 400 from a field-type conflict,
  a real 413 from a small ``max-body-size``) sets that point aside and the service
  carries on: later alerts still reach a real SMTP server or webhook.
- A critical notification that failed on every channel (a real local HTTP server
  answering 503, or a port nobody listens on) starts over within minutes, and raises
  ``system.delivery_failed`` through the other receivers and the console
  (docs/alerts.md#critical-retries, docs/alerts.md#delivery-failed).
"""

from __future__ import annotations

import email
import email.message
import email.policy
import json
import logging
import re
import socket
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import Envelope, Session

from alerts.cli import _summary
from alerts.config import load_alerts_config
from alerts.schema import ALERT_EVENT
from alerts.store import DDL, Store
from core.config import Config, ConfigError
from devtools.localstack import InfluxDB1
from tests.alerts_support import T0, Clock, http_double, service, transition


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Inbox:
    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []

    async def handle_DATA(self, _server: Any, _session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        self.messages.append(email.message_from_bytes(raw, policy=email.policy.default))
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    ctl = Controller(inbox, hostname="127.0.0.1", port=_free_port())
    ctl.start()
    yield inbox, ctl.port
    ctl.stop()


@dataclass(eq=False)
class SmallBodyInfluxDB(InfluxDB1):
    """InfluxDB 1.x that answers 413 to a write body over ``max_body_size`` bytes."""

    max_body_size: int = 1000

    def config_text(self) -> str:
        text = super().config_text()
        return text.replace("[http]\n", f"[http]\n  max-body-size = {self.max_body_size}\n", 1)


@pytest.fixture
def small_influx(tmp_path: Path) -> Iterator[SmallBodyInfluxDB]:
    db = SmallBodyInfluxDB(tmp_path / "influx-small")
    db.start()
    yield db
    db.stop()


def _firing_subjects(influx: InfluxDB1, db: str) -> list[str]:
    rows = influx.series(
        f'SELECT "key", "subject" FROM "{ALERT_EVENT}" WHERE "event" = \'firing\'', db
    )
    return sorted(r["subject"] for r in rows)


def test_a_refused_alert_event_is_set_aside_and_alerting_carries_on(
    tmp_path: Path,
    influx: InfluxDB1,
    tag: str,
    smtp: tuple[Inbox, int],
    capsys: pytest.CaptureFixture[str],
) -> None:
    inbox, port = smtp
    clock = Clock()
    # An older version wrote `by` as an integer: InfluxDB now refuses the string `by`
    # of acknowledged events in that shard with a real 400 (field type conflict).
    influx.create_database(tag)
    influx.write(
        "alert_event,category=snow,event=acknowledged,rule=old,severity=info "
        f"alert_id=0i,by=1i {int(T0.timestamp() * 1000)}",
        tag,
    )
    svc, out = service(
        tmp_path,
        {
            "write_events": True,
            "group_interval_s": 0,
            "receivers": {
                "oncall": {
                    "email": {
                        "host": "127.0.0.1",
                        "port": port,
                        "starttls": False,
                        "to": ["oncall@town.example"],
                    }
                }
            },
            "routes": [{"receivers": ["oncall"]}],
        },
        clock,
        influx={"url": influx.url, "database": tag},
    )
    out.add(transition("snow.depth", "ST01"))
    svc.tick()
    svc.store.acknowledge([1], "sato", "cli", clock.t.timestamp() + 60)
    clock.advance(minutes=2)
    out.add(transition("snow.depth", "ST02", at=clock.t))
    svc.tick()  # one batch: the refused acknowledgement and ST02's firing
    clock.advance(minutes=2)
    out.add(transition("snow.depth", "ST03", at=clock.t))
    svc.tick()
    svc.tick()  # nothing left to retry: the refused point does not come back

    subjects = [str(m["Subject"]) for m in inbox.messages]
    assert len(subjects) == 4 and "ST03" in subjects[3], subjects
    assert subjects[2] == "[雪水] satoさんが確認しました (03:01)"  # who took ST01
    assert _firing_subjects(influx, tag) == ["ST01", "ST02", "ST03"]
    assert svc.store.query("SELECT COUNT(*) AS n FROM events") == [{"n": 0}]
    n, rejected = svc.store.rejected_events()
    assert n == 1 and rejected[0]["status"] == 400
    assert "field type conflict" in rejected[0]["reason"]
    assert 'by="sato"' in rejected[0]["line"] and "event=acknowledged" in rejected[0]["line"]
    assert svc.stats["events_rejected"] == 1
    _summary(svc.cfg, svc.store)
    shown = capsys.readouterr().out
    assert "alert_event points InfluxDB refused (set aside): 1" in shown
    assert "field type conflict" in shown


def test_a_batch_too_large_is_split_and_a_line_too_large_is_set_aside(
    tmp_path: Path, small_influx: SmallBodyInfluxDB, tag: str
) -> None:
    clock = Clock()
    small_influx.create_database(tag)
    with http_double() as hook:
        svc, out = service(
            tmp_path,
            {
                "write_events": True,
                "receivers": {"chat": {"webhook": {"url": hook.url}}},
                "routes": [{"receivers": ["chat"]}],
            },
            clock,
            influx={"url": small_influx.url, "database": tag},
        )
        out.add(*[transition("snow.depth", f"ST{i:02d}") for i in range(1, 11)])
        out.add(transition("snow.depth", "ST99", message="積雪 " + "深" * 600))  # 1.8 kB alone
        svc.tick()
        clock.advance(minutes=10)
        out.add(transition("water.burst", "M001", subject_kind="meter"))
        svc.tick()
    assert "M001" in hook.texts()[-1], "a later alert still reaches the webhook"
    expected = sorted([f"ST{i:02d}" for i in range(1, 11)] + ["M001"])
    assert _firing_subjects(small_influx, tag) == expected
    n, rejected = svc.store.rejected_events()
    assert n == 1 and rejected[0]["status"] == 413
    assert "subject=ST99" in rejected[0]["line"]
    assert svc.store.query("SELECT COUNT(*) AS n FROM events") == [{"n": 0}]


def _two_receivers(url: str, backup_url: str, **alerts: Any) -> dict[str, Any]:
    return {
        "retry": {"attempts": 2, "backoff_s": 10},
        "receivers": {
            "sato": {"label": "佐藤", "webhook": {"url": url}},
            "kacho": {"webhook": {"url": backup_url}},
        },
        "routes": [{"receivers": ["sato"]}],
        **alerts,
    }


def test_a_failed_critical_notice_is_retried_within_minutes_and_raises_delivery_failed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    with http_double([(503, {})] * 3) as broken, http_double() as kacho:
        svc, out = service(tmp_path, _two_receivers(broken.url, kacho.url), clock)
        out.add(transition("snow.dispatch", "town", subject_kind="town"))
        with caplog.at_level(logging.INFO):
            svc.tick()  # 503
            clock.advance(seconds=10)
            svc.tick()  # 503 again: failed on every channel
        failed_at = clock.t
        assert len(broken.requests) == 2
        # the other receiver hears of it at once, and so does the console
        assert len(kacho.requests) == 1
        told = kacho.requests[0].body
        assert told["alerts"][0]["rule"] == "system.delivery_failed"
        assert told["alerts"][0]["subject"] == "sato"
        assert "届きませんでした" in told["text"] and "2分後に再送します" in told["text"]
        assert any(
            r.levelno == logging.ERROR and "system.delivery_failed" in r.getMessage()
            for r in caplog.records
        )
        console = svc.store.query(
            "SELECT status FROM notifications WHERE receiver = 'console' AND kind = 'firing'"
        )
        assert console == [{"status": "sent"}]

        clock.advance(seconds=119)
        svc.tick()
        assert len(broken.requests) == 2  # the second round starts 2 minutes after
        clock.advance(seconds=1)
        svc.tick()  # round 2, first attempt: 503
        clock.advance(seconds=10)
        svc.tick()  # 200
        assert clock.t - failed_at <= timedelta(minutes=5)
        assert len(broken.requests) == 4
        assert {r.body["notification_id"] for r in broken.requests} == {1}
        # reached again: the delivery_failed alert resolves, and kacho is told so
        assert len(kacho.requests) == 2
        assert kacho.requests[1].body["kind"] == "resolved"
    rows = svc.store.query("SELECT rule, status FROM alerts ORDER BY id")
    assert rows == [
        {"rule": "snow.dispatch", "status": "firing"},
        {"rule": "system.delivery_failed", "status": "resolved"},
    ]
    note = svc.store.one("SELECT status, rounds, retry_at FROM notifications WHERE id = 1")
    assert note == {"status": "sent", "rounds": 1, "retry_at": None}


def test_rounds_follow_the_schedule_and_stop_once_acknowledged(tmp_path: Path) -> None:
    clock = Clock()
    dead = f"http://127.0.0.1:{_free_port()}/hook"  # connection refused
    with http_double() as kacho:
        svc, out = service(
            tmp_path,
            _two_receivers(dead, kacho.url, retry={"attempts": 1, "critical_rounds_min": [2, 5]}),
            clock,
        )
        out.add(transition("snow.dispatch", "town", subject_kind="town"))
        svc.tick()
        starts = []
        for _ in range(20):  # 20 minutes, a tick a minute
            clock.advance(minutes=1)
            before = len(svc.store.attempts_of(1))
            svc.tick()
            if len(svc.store.attempts_of(1)) > before:
                starts.append(round((clock.t - T0).total_seconds() / 60))
        assert starts == [2, 7]  # then the list is used up: failed, no more rounds
        # one delivery_failed alert while it is open: later rounds count duplicates
        assert [r["body"]["alerts"][0]["rule"] for r in map(vars, kacho.requests)] == [
            "system.delivery_failed"
        ]
        assert svc.store.query("SELECT duplicates FROM alerts WHERE id = 2") == [{"duplicates": 2}]

        # a new failed critical notice, then acknowledged: its rounds stop
        out.add(transition("snow.town_alert", "town", subject_kind="town"))
        svc.tick()
        nid = svc.store.one("SELECT MAX(id) AS id FROM notifications WHERE receiver = 'sato'")
        assert nid is not None
        svc.store.acknowledge([3], "sato", "cli", clock.t.timestamp())
        clock.advance(minutes=3)
        svc.tick()
        assert len(svc.store.attempts_of(nid["id"])) == 1
        row = svc.store.one("SELECT status, retry_at FROM notifications WHERE id = ?", (nid["id"],))
        assert row == {"status": "failed", "retry_at": None}


def test_a_failed_warning_waits_for_the_reminder(tmp_path: Path) -> None:
    clock = Clock()
    dead = f"http://127.0.0.1:{_free_port()}/hook"
    with http_double() as kacho:
        svc, out = service(tmp_path, _two_receivers(dead, kacho.url, retry={"attempts": 1}), clock)
        out.add(transition("water.leak", "M001", severity="warning"))
        svc.tick()
        clock.advance(minutes=30)
        svc.tick()
    assert kacho.requests == []
    assert svc.store.query("SELECT status, rounds, retry_at FROM notifications") == [
        {"status": "failed", "rounds": 1, "retry_at": None}
    ]
    assert len(svc.store.attempts_of(1)) == 1


def test_delivery_failed_to_names_known_receivers(tmp_path: Path) -> None:
    cfg = Config.model_validate(
        {"alerts": {"state_dir": str(tmp_path), "delivery_failed_to": ["nobody"]}}
    )
    with pytest.raises(ConfigError, match=r"alerts\.delivery_failed_to\.0: unknown receiver"):
        load_alerts_config(cfg, environ={})


def test_the_delivery_failed_body_is_json_a_receiver_can_read(tmp_path: Path) -> None:
    clock = Clock()
    dead = f"http://127.0.0.1:{_free_port()}/hook"
    with http_double() as kacho:
        svc, out = service(
            tmp_path,
            _two_receivers(dead, kacho.url, retry={"attempts": 1}, lang="en"),
            clock,
        )
        out.add(transition("snow.dispatch", "town", subject_kind="town"))
        svc.tick()
    body = kacho.requests[0].body
    assert json.loads(json.dumps(body))["alerts"][0]["severity"] == "critical"
    assert "failed on every channel" in body["text"] and "retrying in 2 min" in body["text"]


def test_rounds_survive_a_restart(tmp_path: Path) -> None:
    clock = Clock()
    with http_double([(503, {})]) as broken, http_double() as kacho:
        cfg = _two_receivers(broken.url, kacho.url, retry={"attempts": 1})
        svc, out = service(tmp_path, cfg, clock)
        out.add(transition("snow.dispatch", "town", subject_kind="town"))
        svc.tick()
        svc.store.close()  # the process dies; its state file stays
        clock.advance(minutes=2)
        again, _ = service(tmp_path, cfg, clock)
        again.tick()
    assert len(broken.requests) == 2
    assert again.store.one("SELECT status FROM notifications WHERE id = 1") == {"status": "sent"}
    assert again.store.query("SELECT status FROM alerts WHERE id = 2") == [{"status": "resolved"}]


def test_a_state_file_from_before_the_rounds_gets_the_new_columns(tmp_path: Path) -> None:
    path = tmp_path / "alerts.sqlite"
    old = re.sub(r"last_error TEXT,.*?\n\);", "last_error TEXT\n);", DDL, flags=re.S)
    old = old.split("CREATE TABLE IF NOT EXISTS rejected_events")[0]
    con = sqlite3.connect(path)
    con.executescript(old)
    con.execute(
        "INSERT INTO notifications (receiver, kind, step, created_at, alert_ids, title, body, "
        "retry_key, next_at) VALUES ('sato', 'firing', 0, 1, '[]', 't', '{}', 'k', 1)"
    )
    con.commit()
    cols = {r[1] for r in con.execute("PRAGMA table_info(notifications)")}
    con.close()
    assert "rounds" not in cols and "retry_at" not in cols
    store = Store(path)
    row = store.one("SELECT receiver, rounds, retry_at FROM notifications")
    assert row == {"receiver": "sato", "rounds": 0, "retry_at": None}
    assert store.rejected_events() == (0, [])
    assert store.rejected_outbox() == (0, [])
    store.close()
