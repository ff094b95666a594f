"""Alert channels against real local servers: aiosmtpd (plain and with AUTH), stdlib HTTP
servers as webhook and LINE endpoints (500, 429 + Retry-After, connection refused), the
test Mosquitto (retained state, ack topic), InfluxDB 1.x (alert_event points)."""

from __future__ import annotations

import email
import email.policy
import json
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from paho.mqtt.enums import CallbackAPIVersion

from alerts.cli import _summary
from alerts.config import load_alerts_config
from alerts.schema import ALERT_EVENT
from alerts.service import AlertService
from core.config import Config
from devtools.localstack import InfluxDB1, Mosquitto
from tests.alerts_support import Clock, Outbox, http_double, service, transition
from tests.conftest import REPO, wait_for


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Inbox:
    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []
        self.envelopes: list[Envelope] = []

    async def handle_DATA(self, _server: Any, _session: Session, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
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


def _authenticator(_server: Any, _session: Any, _env: Any, mechanism: str, data: Any) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"yuki", b"pw-123")
    return AuthResult(success=ok, handled=False)


@pytest.fixture
def smtp_auth() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    ctl = Controller(
        inbox,
        hostname="127.0.0.1",
        port=_free_port(),
        authenticator=_authenticator,
        auth_required=True,
        auth_require_tls=False,  # no certificates in the test: AUTH over plain TCP
    )
    ctl.start()
    yield inbox, ctl.port
    ctl.stop()


def test_email_plain_japanese_subject_and_ack_link(tmp_path: Path, smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    svc, out = service(
        tmp_path,
        {
            "receivers": {
                "water": {
                    "email": {
                        "host": "127.0.0.1",
                        "port": port,
                        "starttls": False,
                        "from_addr": "alerts@town.example",
                        "to": ["water@town.example"],
                    }
                }
            },
            "routes": [{"receivers": ["water"]}],
        },
        Clock(),
    )
    out.add(
        transition(
            "water.leak",
            "M001",
            subject_kind="meter",
            message="連続流量が24時間続いています",
        )
    )
    svc.tick()
    assert len(inbox.messages) == 1
    m = inbox.messages[0]
    assert "解除" not in str(m["Subject"]) and "発報" in str(m["Subject"])
    body = m.get_content()
    assert "連続流量が24時間続いています" in body and "/ack?t=" in body
    assert inbox.envelopes[0].rcpt_tos == ["water@town.example"]


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_email_with_auth_password_from_env(
    tmp_path: Path, smtp_auth: tuple[Inbox, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    inbox, port = smtp_auth
    monkeypatch.setenv("TEST_SMTP_PASSWORD", "pw-123")
    rec = {
        "host": "127.0.0.1",
        "port": port,
        "starttls": False,
        "username": "yuki",
        "password_env": "TEST_SMTP_PASSWORD",
        "to": ["oncall@town.example"],
    }

    def make(password_env: str) -> AlertService:
        cfg = Config.model_validate(
            {
                "alerts": {
                    "state_dir": str(tmp_path / password_env),
                    "outbox": str(tmp_path / "rules.sqlite"),
                    "write_events": False,
                    "group_wait_s": 0,
                    "ack": {"port": 0, "secret": "x"},
                    "retry": {"attempts": 1},
                    "receivers": {"oncall": {"email": {**rec, "password_env": password_env}}},
                    "routes": [{"receivers": ["oncall"]}],
                }
            }
        )
        return AlertService(cfg, load_alerts_config(cfg), now=Clock())

    Outbox(tmp_path / "rules.sqlite").add(transition("snow.dispatch", "town", subject_kind="town"))
    good = make("TEST_SMTP_PASSWORD")
    good.tick()
    assert len(inbox.messages) == 1
    monkeypatch.setenv("TEST_SMTP_WRONG", "nope")
    bad = make("TEST_SMTP_WRONG")
    bad.tick()
    assert len(inbox.messages) == 1  # refused login: not delivered, and visible as failed
    notes = bad.store.query("SELECT receiver, status FROM notifications ORDER BY id")
    # failed, and (a critical notice) the console receiver is told so: system.delivery_failed
    assert notes == [
        {"receiver": "oncall", "status": "failed"},
        {"receiver": "console", "status": "sent"},
    ]
    assert bad.stats["failures_email"] == 1


def test_webhook_500_retries_then_falls_back(tmp_path: Path) -> None:
    clock = Clock()
    with http_double([(500, {})] * 5) as broken, http_double() as backup:
        svc, out = service(
            tmp_path,
            {
                "retry": {"attempts": 3, "backoff_s": 10},
                "receivers": {
                    "ops": {
                        "order": ["webhook", "line"],
                        "webhook": {"url": broken.url},
                        "line": {"base_url": backup.url, "token": "tok", "to": "Uabc"},
                    }
                },
                "routes": [{"receivers": ["ops"]}],
            },
            clock,
        )
        out.add(transition("snow.depth", "ST01"))
        svc.tick()
        assert (len(broken.requests), len(backup.requests)) == (1, 0)
        clock.advance(seconds=9)
        svc.tick()
        assert len(broken.requests) == 1  # backoff 10 s
        clock.advance(seconds=1)
        svc.tick()
        assert len(broken.requests) == 2
        clock.advance(seconds=20)  # doubled
        svc.tick()
    assert (len(broken.requests), len(backup.requests)) == (3, 1)
    assert backup.requests[0].path == "/v2/bot/message/push"
    rows = svc.store.query("SELECT channel, ok FROM attempts ORDER BY id")
    assert rows == [{"channel": "webhook", "ok": 0}] * 3 + [{"channel": "line", "ok": 1}]
    assert svc.stats["failures_webhook"] == 3


def test_connection_refused_falls_back_and_failures_are_visible(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clock = Clock()
    dead = f"http://127.0.0.1:{_free_port()}/hook"
    with http_double() as second:
        svc, out = service(
            tmp_path,
            {
                "retry": {"attempts": 2, "backoff_s": 1},
                "receivers": {
                    "ops": {
                        "order": ["webhook", "console"],
                        "webhook": {"url": dead},
                        "console": {},
                    },
                    "chat": {"webhook": {"url": second.url, "format": "text"}},
                },
                "routes": [{"receivers": ["ops", "chat"]}],
            },
            clock,
        )
        out.add(transition("snow.depth", "ST01"))
        svc.tick()
        clock.advance(seconds=1)
        svc.tick()
    assert second.requests[0].body.keys() == {"text"}  # Google Chat takes only known fields
    notes = svc.store.query("SELECT receiver, status, channel FROM notifications ORDER BY id")
    assert notes == [
        {"receiver": "ops", "status": "sent", "channel": "console"},
        {"receiver": "chat", "status": "sent", "channel": "webhook"},
    ]
    _summary(svc.cfg, svc.store)
    assert "channel failures: webhook: 2" in capsys.readouterr().out


def test_line_429_honours_retry_after_and_reuses_the_retry_key(tmp_path: Path) -> None:
    clock = Clock()
    with http_double([(429, {"Retry-After": "120"}), (503, {}), (200, {})]) as line:
        svc, out = service(
            tmp_path,
            {
                "retry": {"attempts": 5, "backoff_s": 2},
                "receivers": {
                    "sato": {"line": {"base_url": line.url, "token": "chan-tok", "to": "U0001"}}
                },
                "routes": [{"receivers": ["sato"]}],
            },
            clock,
        )
        out.add(transition("snow.dispatch", "town", subject_kind="town"))
        svc.tick()
        clock.advance(seconds=119)
        svc.tick()
        assert len(line.requests) == 1  # Retry-After: 120 s
        clock.advance(seconds=1)
        svc.tick()
        assert len(line.requests) == 2
        clock.advance(seconds=4)  # 503: backoff 2 · 2
        svc.tick()
    assert len(line.requests) == 3
    keys = {r.headers["X-Line-Retry-Key"] for r in line.requests}
    assert len(keys) == 1 and len(keys.pop()) == 36
    r = line.requests[0]
    assert r.headers["Authorization"] == "Bearer chan-tok"
    assert r.body["to"] == "U0001" and r.body["messages"][0]["type"] == "text"
    assert svc.store.query("SELECT status FROM notifications") == [{"status": "sent"}]


def test_line_409_means_already_accepted(tmp_path: Path) -> None:
    with http_double([(409, {})]) as line:
        svc, out = service(
            tmp_path,
            {
                "receivers": {"s": {"line": {"base_url": line.url, "token": "t", "to": "U1"}}},
                "routes": [{"receivers": ["s"]}],
            },
            Clock(),
        )
        out.add(transition("snow.dispatch", "town", subject_kind="town"))
        svc.tick()
    assert svc.store.query("SELECT status FROM notifications") == [{"status": "sent"}]


def test_mqtt_retained_state_and_ack_topic(tmp_path: Path, mosquitto: Mosquitto, tag: str) -> None:
    clock = Clock()
    topic = f"{tag}/alerts/state"
    svc, out = service(
        tmp_path,
        {
            "receivers": {"board": {"mqtt": {"topic": topic}}},
            "routes": [{"receivers": ["board"]}],
            "ack": {"port": 0, "secret": "x", "mqtt_topic": f"{tag}/alerts/ack"},
        },
        clock,
        mqtt={"port": mosquitto.port, "client_id": f"alerts-{tag}"},
    )
    out.add(transition("snow.depth", "ST07"))
    svc.tick()
    got: dict[str, bytes] = {}
    ready = threading.Event()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"reader-{tag}")

    def on_message(_c: mqtt.Client, _u: object, m: mqtt.MQTTMessage) -> None:
        got[m.topic] = bytes(m.payload)

    def on_connect(cl: mqtt.Client, *_a: object) -> None:
        cl.subscribe(f"{topic}/#", qos=1)
        ready.set()

    c.on_message = on_message
    c.on_connect = on_connect
    c.connect("127.0.0.1", mosquitto.port)
    c.loop_start()
    try:
        assert ready.wait(10)
        state = wait_for(lambda: got.get(f"{topic}/station/ST07"), 10, what="retained state")
        doc = json.loads(state)
        assert [a["key"] for a in doc["alerts"]] == ["snow.depth:ST07"]
        svc.start_listeners()
        try:
            assert svc.mqtt_ack is not None and svc.mqtt_ack.connected.wait(10)
            time.sleep(0.3)  # SUBACK
            c.publish(f"{tag}/alerts/ack", json.dumps({"id": 1, "by": "sato"}), qos=1)
            wait_for(
                lambda: (
                    svc.store.one("SELECT acked_by FROM alerts WHERE id = 1")
                    == {"acked_by": "sato"}
                ),
                10,
                what="ack over MQTT",
            )
        finally:
            svc.stop_listeners()
        out.add(transition("snow.depth", "ST07", status="resolved", at=clock.t))
        clock.advance(minutes=10)
        svc.tick()
        wait_for(
            lambda: json.loads(got[f"{topic}/station/ST07"])["alerts"] == [],
            10,
            what="resolved state",
        )
    finally:
        c.loop_stop()
        c.disconnect()


def test_events_written_to_influxdb(tmp_path: Path, influx: InfluxDB1, tag: str) -> None:
    clock = Clock()
    svc, out = service(
        tmp_path,
        {"write_events": True, "routes": [{"receivers": ["console"]}]},
        clock,
        influx={"url": influx.url, "database": tag},
    )
    out.add(transition("snow.depth", "ST01"))
    svc.tick()
    svc.store.acknowledge([1], "sato", "cli", clock.t.timestamp() + 60)
    out.add(transition("snow.depth", "ST01", status="resolved", at=clock.t))
    clock.advance(minutes=5)
    svc.tick()
    rows = influx.series(f'SELECT "by", "key" FROM "{ALERT_EVENT}" GROUP BY "event"', tag)
    events = sorted((r["event"], r["by"]) for r in rows)
    assert events == [("acknowledged", "sato"), ("firing", None), ("resolved", None)]
    assert svc.store.query("SELECT COUNT(*) AS n FROM events") == [{"n": 0}]


@pytest.fixture
def smtp_tls(tmp_path: Path) -> Iterator[tuple[Inbox, int, Path]]:
    """A real SMTP server that requires STARTTLS, with a certificate for 127.0.0.1 from
    the project's own script (deploy/mosquitto/make-certs.sh)."""
    certs = tmp_path / "certs"
    subprocess.run(
        ["sh", str(REPO / "deploy" / "mosquitto" / "make-certs.sh"), "127.0.0.1", str(certs)],
        check=True,
        capture_output=True,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs / "server.crt", certs / "server.key")
    inbox = Inbox()
    ctl = Controller(
        inbox,
        hostname="127.0.0.1",
        port=_free_port(),
        tls_context=context,
        require_starttls=True,
    )
    ctl.start()
    yield inbox, ctl.port, certs / "ca.crt"
    ctl.stop()


def _tls_receiver(port: int, ca_file: Path | None) -> dict[str, Any]:
    email_cfg: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "starttls": True,
        "to": ["water@town.example"],
    }
    if ca_file is not None:
        email_cfg["ca_file"] = str(ca_file)
    return {"receivers": {"water": {"email": email_cfg}}, "routes": [{"receivers": ["water"]}]}


def test_email_starttls_verifies_the_server_certificate(
    tmp_path: Path, smtp_tls: tuple[Inbox, int, Path]
) -> None:
    inbox, port, ca = smtp_tls
    svc, out = service(tmp_path / "good", _tls_receiver(port, ca), Clock())
    out.add(transition("water.leak", "M001", subject_kind="meter"))
    svc.tick()
    assert len(inbox.messages) == 1, "the trusted server got the notice over STARTTLS"

    # The same server without its CA: the certificate is not trusted, nothing is sent
    # (no fallback to plain text), and the failure says what to configure.
    clock = Clock()
    svc, out = service(tmp_path / "bad", _tls_receiver(port, None), clock)
    out.add(transition("water.leak", "M002", subject_kind="meter"))
    svc.tick()
    assert len(inbox.messages) == 1
    shown = [
        r["detail"] for r in svc.store.query("SELECT detail FROM attempts WHERE channel = 'email'")
    ]
    assert shown and all("not trusted" in d and "ca_file" in d for d in shown), shown
