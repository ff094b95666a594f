"""Everyone paged learns who took it (docs/alerts.md#who-took-it): when someone
acknowledges, each receiver a notice about the alert reached gets one short notice
「○○さんが確認しました (HH:MM)」 on the channel that reached them; once, never repeated,
and not when the alert is silenced. Against a real local SMTP server (aiosmtpd) and
real local webhook servers; time is a fake clock."""

from __future__ import annotations

import email
import email.policy
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import Envelope, Session

from alerts.service import AlertService
from alerts.store import Store
from tests.alerts_support import Clock, alerts_config, http_double, service, transition

ESCALATION = {
    "repeat_interval_min": 600,
    "routes": [{"escalation": "plow"}],
    "escalations": {
        "plow": {
            "steps": [
                {"targets": ["primary"], "after_min": 10},
                {"targets": ["secondary"], "after_min": 10},
                {"targets": ["supervisor"]},
            ]
        }
    },
}


class Inbox:
    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []

    async def handle_DATA(self, _server: Any, _session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        self.messages.append(email.message_from_bytes(raw, policy=email.policy.default))
        return "250 OK"

    def subjects(self) -> list[str]:
        return [str(m["Subject"]) for m in self.messages]


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


def _mail(port: int, to: str) -> dict[str, Any]:
    return {"host": "127.0.0.1", "port": port, "starttls": False, "to": [to]}


def test_everyone_paged_learns_who_took_it_once(tmp_path: Path, smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    clock = Clock()  # 03:00 JST
    with http_double() as primary, http_double() as supervisor:
        receivers = {
            "primary": {"label": "佐藤", "webhook": {"url": primary.url}},
            "secondary": {"label": "鈴木", "email": _mail(port, "suzuki@town.example")},
            "supervisor": {"webhook": {"url": supervisor.url}},
        }
        svc, out = service(tmp_path, {**ESCALATION, "receivers": receivers}, clock)
        out.add(transition("snow.dispatch", "town", subject_kind="town"))
        svc.tick()
        clock.advance(minutes=10)
        svc.tick()  # unacknowledged: the secondary is paged by e-mail
        assert len(primary.requests) == 1 and len(inbox.messages) == 1
        clock.advance(minutes=2)
        # 田中 acknowledges from another process (the CLI, the ack server): the store
        # on the same file, its own connection
        other = Store(svc.cfg.state_dir / "alerts.sqlite")
        assert len(other.acknowledge([1], "田中", "cli", clock.t.timestamp())) == 1
        other.close()
        svc.tick()
        # both who were paged learn it on the channel that reached them
        assert len(primary.requests) == 2 and len(inbox.messages) == 2
        notice = primary.requests[1].body
        assert notice["kind"] == "ack" and notice["status"] == "acknowledged"
        assert notice["text"].startswith("[雪水] 田中さんが確認しました (03:12)")
        assert notice["acked_by"] == "田中" and notice["ack_url"] is None
        assert [a["key"] for a in notice["acknowledged"]] == ["snow.dispatch:town"]
        assert inbox.subjects()[1] == "[雪水] 田中さんが確認しました (03:12)"
        body = inbox.messages[1].get_body(("plain",))
        assert body is not None
        text = body.get_content()
        assert "田中さんが確認しました" in text and "#1 " in text and "town" in text
        # never repeated: an hour of ticks, and a restart of the service
        for _ in range(6):
            clock.advance(minutes=10)
            svc.tick()
        svc.store.close()
        cfg, ac = alerts_config(tmp_path, {**ESCALATION, "receivers": receivers})
        again = AlertService(cfg, ac, now=clock)
        again.tick()
        again.store.close()
    assert len(primary.requests) == 2 and len(inbox.messages) == 2
    assert supervisor.requests == []  # acknowledged before its turn: neither paged nor told


def test_the_notice_takes_the_channel_that_reached_them_and_skips_the_acker(
    tmp_path: Path, smtp: tuple[Inbox, int]
) -> None:
    inbox, port = smtp
    clock = Clock()
    # the primary's webhook refuses (400: permanent), so e-mail reached them
    with http_double([(400, {})]) as hook, http_double() as second:
        receivers = {
            "primary": {
                "label": "佐藤",
                "order": ["webhook", "email"],
                "webhook": {"url": hook.url},
                "email": _mail(port, "sato@town.example"),
            },
            "secondary": {"label": "鈴木", "webhook": {"url": second.url}},
        }
        routes = {"routes": [{"receivers": ["primary", "secondary"]}]}
        svc, out = service(tmp_path, {**routes, "receivers": receivers}, clock)
        out.add(transition("water.leak", "M002", subject_kind="meter"))
        svc.tick()
        assert len(hook.requests) == 1 and len(inbox.messages) == 1 and len(second.requests) == 1
        clock.advance(minutes=5)
        svc.store.acknowledge([1], "鈴木", "link", clock.t.timestamp())
        svc.tick()
    # the e-mail that reached 佐藤 carries the notice; the refusing webhook is not tried
    assert len(hook.requests) == 1
    assert inbox.subjects()[1] == "[雪水] 鈴木さんが確認しました (03:05)"
    # 鈴木 acknowledged: nothing to tell them
    assert len(second.requests) == 1
    sent = svc.store.query("SELECT receiver, channel FROM notifications WHERE kind = 'ack'")
    assert sent == [{"receiver": "primary", "channel": "email"}]


def test_a_silence_suppresses_the_notice(tmp_path: Path) -> None:
    clock = Clock()
    with http_double() as hook:
        receivers = {"primary": {"webhook": {"url": hook.url}}}
        svc, out = service(
            tmp_path, {"receivers": receivers, "routes": [{"receivers": ["primary"]}]}, clock
        )
        out.add(
            transition("snow.depth", "ST01"),
            transition("snow.depth", "ST02", at=clock.t),
        )
        svc.tick()
        assert len(hook.requests) == 1
        t = clock.t.timestamp()
        svc.store.add_silence("snow.*", "ST02", None, t, t + 1800, "test", "工事中")
        svc.store.acknowledge([2], "田中", "cli", t + 60)  # ST02: silenced
        clock.advance(minutes=2)
        svc.tick()
        assert len(hook.requests) == 1
        clock.advance(minutes=40)  # the silence is over: still not told (decided once)
        svc.tick()
        assert len(hook.requests) == 1
        svc.store.acknowledge([1], "田中", "cli", clock.t.timestamp())  # ST01: not silenced
        svc.tick()
    assert len(hook.requests) == 2
    told = hook.requests[1].body
    assert [a["subject"] for a in told["acknowledged"]] == ["ST01"]
    assert svc.stats["acknowledged"] == 2 and svc.stats["ack_notices"] == 1


def test_an_upgraded_state_file_tells_nobody_about_old_acknowledgements(tmp_path: Path) -> None:
    """Alerts acknowledged before the notice existed are not announced after an upgrade."""
    clock = Clock()
    with http_double() as hook:
        receivers = {"primary": {"webhook": {"url": hook.url}}}
        alerts = {"receivers": receivers, "routes": [{"receivers": ["primary"]}]}
        svc, out = service(tmp_path, alerts, clock)
        out.add(transition("snow.depth", "ST01"))
        svc.tick()
        svc.store.acknowledge([1], "田中", "cli", clock.t.timestamp())
        # as an older version left it: no ack_noticed column
        with svc.store.tx() as db:
            db.execute("ALTER TABLE alerts DROP COLUMN ack_noticed")
        svc.store.close()
        cfg, ac = alerts_config(tmp_path, alerts)
        again = AlertService(cfg, ac, now=clock)
        clock.advance(minutes=1)
        again.tick()
        again.store.close()
    assert len(hook.requests) == 1
