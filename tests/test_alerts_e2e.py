"""Scenario → ingest's processor → InfluxDB → rules (live cycles, SQLite outbox) →
alerts → a real local SMTP server: the on-call person gets exactly one dispatch call for
the heavy snow night, the water section one leak notice for the watched household."""

from __future__ import annotations

import email
import email.message
import email.policy
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import Envelope, Session

from alerts.service import AlertService
from core.config import Config, InfluxConfig, load_config, load_registry
from core.influxql import InfluxQuery
from devtools.localstack import InfluxDB1
from devtools.rulelab import load_scenario_into
from rules.config import with_settings
from rules.engine import Engine, steps
from rules.families import FAMILIES
from rules.model import ms_to_dt
from rules.sources import LiveSource
from rules.state import SqliteState
from tests.alerts_support import Clock, alerts_config
from tests.conftest import REPO, SAMPLE_CONFIG

STEP_MS = 600_000


class Inbox:
    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []

    async def handle_DATA(self, _server: Any, _session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        self.messages.append(email.message_from_bytes(raw, policy=email.policy.default))
        return "250 OK"

    def to(self, address: str) -> list[email.message.EmailMessage]:
        return [m for m in self.messages if address in str(m["To"])]


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    inbox = Inbox()
    ctl = Controller(inbox, hostname="127.0.0.1", port=port)
    ctl.start()
    yield inbox, port
    ctl.stop()


def _alerts(tmp_path: Path, port: int) -> dict[str, Any]:
    return {
        "outbox": str(tmp_path / "rules.sqlite"),
        "repeat_interval_min": 24 * 60,
        "defaults": {
            "email": {
                "host": "127.0.0.1",
                "port": port,
                "starttls": False,
                "from_addr": "yukimizu@localhost",
            }
        },
        "receivers": {
            "oncall": {"email": {"to": ["oncall@localhost"]}},
            "water": {"email": {"to": ["suido@localhost"]}},
        },
        "routes": [
            {"categories": ["snow", "plow"], "severities": ["critical"], "receivers": ["oncall"]},
            {
                "categories": ["water"],
                "severities": ["info"],
                "digest": True,
                "receivers": ["water"],
            },
            {"categories": ["water"], "receivers": ["water"]},
        ],
    }


def _run(influx: InfluxDB1, tmp_path: Path, name: str, port: int) -> None:
    """Rules and alerts side by side, as the two services would run, step by step."""
    cfg: Config = load_config(SAMPLE_CONFIG, environ={})
    db = f"e2e_{name.replace('-', '_')}"
    loaded = load_scenario_into(
        influx, db, REPO / "scenarios" / f"{name}.toml", cfg, truth_dir=tmp_path / "truth"
    )
    client = InfluxQuery(InfluxConfig(url=influx.url, database=db, create_database=False))
    engine = Engine(
        load_registry(cfg), with_settings(cfg), SqliteState(tmp_path / "rules.sqlite"), FAMILIES
    )
    acfg, ac = alerts_config(tmp_path, _alerts(tmp_path, port))
    clock = Clock(ms_to_dt(loaded.start_ms))
    alerts = AlertService(acfg, ac, now=clock)
    source = LiveSource(client)
    for now in steps(loaded.start_ms, loaded.end_ms + 86_400_000, STEP_MS):
        engine.cycle(now, source, emit_after_ms=loaded.start_ms)
        clock.t = ms_to_dt(now + 5_000)
        alerts.tick()
    engine.state.close()


def test_heavy_snow_night_one_dispatch_call(
    influx: InfluxDB1, tmp_path: Path, smtp: tuple[Inbox, int]
) -> None:
    inbox, port = smtp
    _run(influx, tmp_path, "heavy-snow-night", port)
    calls = [m for m in inbox.to("oncall@localhost") if "snow.dispatch" in str(m["Subject"])]
    firing = [m for m in calls if "発報" in str(m["Subject"])]
    assert len(firing) == 1, [str(m["Subject"]) for m in calls]
    body = firing[0].get_body(("plain",))
    assert body is not None
    text = body.get_content()
    assert "除雪出動基準に達しました" in text and "基準 10 cm" in text
    assert "ack" in text  # an acknowledge link
    assert inbox.to("suido@localhost") == [] or all(
        "snow." not in str(m["Subject"]) for m in inbox.to("suido@localhost")
    )


def test_watched_household_leak_one_notice_to_the_water_section(
    influx: InfluxDB1, tmp_path: Path, smtp: tuple[Inbox, int]
) -> None:
    inbox, port = smtp
    _run(influx, tmp_path, "watched-household-leak", port)
    water = inbox.to("suido@localhost")
    leak = [m for m in water if "water.leak_continuous" in _text(m) and "M003" in _text(m)]
    assert len(leak) == 1, [str(m["Subject"]) for m in water]
    assert inbox.to("oncall@localhost") == []  # a small leak wakes nobody at night


def _text(m: email.message.EmailMessage) -> str:
    body = m.get_body(("plain",))
    return str(m["Subject"]) + (body.get_content() if body is not None else "")
