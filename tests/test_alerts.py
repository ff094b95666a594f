"""Alerts: config, grouping, dedup, escalation with a controllable clock, silences,
inhibition, digest, ack links (docs/alerts.md). Webhook receivers are real local HTTP
servers; time is a fake clock driving :meth:`AlertService.tick`."""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

import pytest

from alerts.ack import AckServer, make_token, verify_token
from alerts.config import Rota, load_alerts_config
from alerts.service import AlertService
from cli import main
from core.config import Config, ConfigError, load_config
from tests.alerts_support import (
    Clock,
    HttpDouble,
    Outbox,
    alerts_config,
    http_double,
    service,
    transition,
)


def hooks(*doubles: HttpDouble) -> dict[str, Any]:
    names = ["primary", "secondary", "supervisor", "water"]
    return {n: {"webhook": {"url": d.url}} for n, d in zip(names, doubles, strict=False)}


# --- config -----------------------------------------------------------------------


def test_config_errors_name_the_field(tmp_path: Path) -> None:
    bad = {"receivers": {"water": {"email": {"to": ["a@b"], "port": 70000}}}}
    with pytest.raises(ConfigError, match=r"alerts\.receivers\.water\.email\.port: Input should"):
        alerts_config(tmp_path, bad)
    with pytest.raises(ConfigError, match=r"alerts\.routes\.0\.receivers\.0: unknown receiver"):
        alerts_config(tmp_path, {"routes": [{"receivers": ["nobody"]}]})
    env_missing = {"receivers": {"w": {"email": {"to": ["a@b"], "password_env": "NOPE_PW"}}}}
    with pytest.raises(ConfigError, match=r"password_env: environment variable NOPE_PW"):
        alerts_config(tmp_path, env_missing)
    with pytest.raises(ConfigError, match=r"alerts\.escalations\.x\.steps\.0\.targets\.0"):
        alerts_config(tmp_path, {"escalations": {"x": {"steps": [{"targets": ["rota:none"]}]}}})


def test_defaults_merge_into_receivers(tmp_path: Path) -> None:
    _cfg, ac = alerts_config(
        tmp_path,
        {
            "defaults": {"email": {"host": "smtp.town.example", "port": 2525}},
            "receivers": {"w": {"email": {"to": ["w@town"], "port": 25}}},
        },
    )
    email = ac.receivers["w"].email
    assert email is not None and (email.host, email.port) == ("smtp.town.example", 25)


def test_rota_weekly_override_and_handover() -> None:
    rota = Rota(
        handover=time(8, 30),
        weekly={"wed": ["sato", "suzuki"], "thu": ["ito"]},
        overrides={date(2026, 1, 15): ["kato"]},
    )
    # 2026-01-14 is a Wednesday; 03:00 JST Thursday is still Wednesday's duty
    assert rota.on_call(datetime(2026, 1, 14, 3, 0, tzinfo=UTC)) == ["sato", "suzuki"]
    assert rota.on_call(datetime(2026, 1, 14, 18, 0, tzinfo=UTC)) == ["sato", "suzuki"]
    # 09:00 JST Thursday: the dated override replaces Thursday's pattern
    assert rota.on_call(datetime(2026, 1, 15, 0, 0, tzinfo=UTC)) == ["kato"]
    assert rota.on_call(datetime(2026, 1, 16, 0, 0, tzinfo=UTC)) == []  # Friday: nobody set


# --- grouping, dedup, escalation ----------------------------------------------------


def test_three_stations_together_make_one_message(tmp_path: Path) -> None:
    clock = Clock()
    with http_double() as hook:
        svc, out = service(
            tmp_path,
            {"group_wait_s": 30, "receivers": hooks(hook), "routes": [{"receivers": ["primary"]}]},
            clock,
        )
        out.add(transition("snow.depth", "ST01"))
        svc.tick()
        clock.advance(seconds=10)
        out.add(transition("snow.depth", "ST02"), transition("snow.depth", "ST03"))
        svc.tick()
        assert hook.requests == []  # group_wait not over yet
        clock.advance(seconds=25)
        svc.tick()
        svc.tick()
    assert len(hook.requests) == 1
    body = hook.requests[0].body
    assert [a["subject"] for a in body["alerts"]] == ["ST01", "ST02", "ST03"]
    assert all(s in body["text"] for s in ("ST01", "ST02", "ST03"))
    assert body["kind"] == "firing" and body["ack_url"].startswith("http://127.0.0.1:8787/ack?t=")


def test_same_alert_fired_twice_notifies_once(tmp_path: Path) -> None:
    clock = Clock()
    with http_double() as hook:
        svc, out = service(
            tmp_path, {"receivers": hooks(hook), "routes": [{"receivers": ["primary"]}]}, clock
        )
        out.add(transition("water.burst", "M001", subject_kind="meter"))
        svc.tick()
        clock.advance(minutes=2)
        out.add(transition("water.burst", "M001", subject_kind="meter", at=clock.t))
        svc.tick()
        clock.advance(minutes=2)
        svc.tick()
    assert len(hook.requests) == 1
    rows = svc.store.query("SELECT duplicates FROM alerts")
    assert rows == [{"duplicates": 1}]


ESCALATION = {
    "repeat_interval_min": 600,
    "routes": [{"escalation": "plow"}],
    "rotas": {"plow": {"weekly": {d: ["primary", "secondary"] for d in ("wed", "thu")}}},
    "escalations": {
        "plow": {
            "steps": [
                {"targets": ["rota:plow#1"], "after_min": 10},
                {"targets": ["rota:plow#2"], "after_min": 10},
                {"targets": ["supervisor"]},
            ]
        }
    },
}


def test_escalation_primary_then_secondary_then_ack_stops(tmp_path: Path) -> None:
    clock = Clock()
    with http_double() as p, http_double() as s, http_double() as sup:
        svc, out = service(tmp_path, {**ESCALATION, "receivers": hooks(p, s, sup)}, clock)
        out.add(transition("snow.dispatch", "town", subject_kind="town"))
        svc.tick()
        assert (len(p.requests), len(s.requests)) == (1, 0)  # primary at t0
        clock.advance(minutes=9, seconds=59)
        svc.tick()
        assert len(s.requests) == 0  # not before t0 + 10 min
        clock.advance(seconds=1)
        svc.tick()
        assert len(s.requests) == 1 and s.requests[0].body["kind"] == "escalation"
        assert len(p.requests) == 1  # the primary is not notified again by the escalation
        aid = s.requests[0].body["alerts"][0]["id"]
        svc.store.acknowledge([aid], "suzuki", "cli", clock.t.timestamp())
        for _ in range(6):  # an hour: past the supervisor's turn
            clock.advance(minutes=10)
            svc.tick()
    # no more pages; the two paged are told once who took it
    assert (len(p.requests), len(s.requests), len(sup.requests)) == (2, 2, 0)
    assert [r.body["kind"] for r in p.requests + s.requests] == [
        "firing",
        "ack",
        "escalation",
        "ack",
    ]
    a = svc.store.one("SELECT status, acked_by, ack_via FROM alerts WHERE id = ?", (aid,))
    assert a == {"status": "acknowledged", "acked_by": "suzuki", "ack_via": "cli"}


def test_unacknowledged_reaches_supervisor_and_repeats(tmp_path: Path) -> None:
    clock = Clock()
    cfg = {**ESCALATION, "repeat_interval_min": 30}
    with http_double() as p, http_double() as s, http_double() as sup:
        svc, out = service(tmp_path, {**cfg, "receivers": hooks(p, s, sup)}, clock)
        out.add(transition("snow.dispatch", "town", subject_kind="town"))
        for _ in range(8):  # t0 … t0 + 70 min, every 10 min
            svc.tick()
            clock.advance(minutes=10)
        svc.tick()
    # primary t0; secondary t0+10; supervisor t0+20, then reminders every 30 min: +50, +80
    assert (len(p.requests), len(s.requests), len(sup.requests)) == (1, 1, 3)
    assert [r.body["kind"] for r in sup.requests] == ["escalation", "repeat", "repeat"]


def test_resolved_notice_goes_to_those_notified(tmp_path: Path) -> None:
    clock = Clock()
    with http_double() as hook:
        svc, out = service(
            tmp_path,
            {
                "group_interval_s": 60,
                "receivers": hooks(hook),
                "routes": [{"receivers": ["primary"]}],
            },
            clock,
        )
        out.add(transition("water.leak", "M002", subject_kind="meter"))
        svc.tick()
        clock.advance(seconds=30)
        out.add(
            transition(
                "water.leak",
                "M002",
                status="resolved",
                subject_kind="meter",
                at=clock.t,
            )
        )
        svc.tick()
        assert len(hook.requests) == 1  # group_interval since the first notice
        clock.advance(seconds=30)
        svc.tick()
    assert [r.body["status"] for r in hook.requests] == ["firing", "resolved"]
    assert hook.requests[1].body["resolved"][0]["subject"] == "M002"
    assert svc.store.query("SELECT closed FROM groups") == [{"closed": 1}]


# --- silences and inhibition -------------------------------------------------------------


def test_silence_suppresses_only_what_it_matches(tmp_path: Path) -> None:
    clock = Clock()
    with http_double() as hook:
        svc, out = service(
            tmp_path,
            {"receivers": hooks(hook), "routes": [{"receivers": ["primary"]}]},
            clock,
        )
        with svc.store.tx() as db:
            db.execute(
                "INSERT INTO silences (rule, subject, district, starts_at, ends_at, created_by) "
                "VALUES ('snow.*', 'ST02', NULL, ?, ?, 'test')",
                (clock.t.timestamp() - 1, clock.t.timestamp() + 3600),
            )
        out.add(
            transition("snow.depth", "ST01"),
            transition("snow.depth", "ST02"),
            transition("water.leak", "ST02", subject_kind="meter"),
        )
        svc.tick()
        names = sorted(a["key"] for r in hook.requests for a in r.body["alerts"])
        assert names == ["snow.depth:ST01", "water.leak:ST02"]
        clock.advance(minutes=61)  # the silence ends while ST02 still fires: now it is told
        svc.tick()
    snow = [r.body for r in hook.requests if r.body["alerts"][0]["rule"] == "snow.depth"]
    assert [b["kind"] for b in snow] == ["firing", "firing"]
    assert [a["subject"] for a in snow[-1]["alerts"]] == ["ST01", "ST02"]


def test_inhibition_town_alert_and_kind_silent(tmp_path: Path) -> None:
    clock = Clock()
    with http_double() as hook:
        svc, out = service(
            tmp_path,
            {
                "receivers": hooks(hook),
                "routes": [{"receivers": ["primary"], "group_by": ["category"]}],
            },
            clock,
        )
        out.add(
            transition("snow.town_alert", "town", subject_kind="town"),
            transition("snow.depth", "ST01"),
            transition("snow.depth", "ST02"),
            transition("system.kind_silent", "snow", subject_kind="kind"),
            transition("snow.station_offline", "ST03"),  # folded by both
            transition("water.meter_stale", "M004", subject_kind="meter"),
            transition("plow.silent", "P01", subject_kind="plow"),
        )
        svc.tick()
    told = sorted(a["key"] for r in hook.requests for a in r.body["alerts"])
    assert told == [
        "plow.silent:P01",  # plow is not silent as a kind: still told
        "snow.town_alert:town",
        "system.kind_silent:snow",
        "water.meter_stale:M004",  # only snow is silent
    ]


def test_inhibition_is_configurable(tmp_path: Path) -> None:
    clock = Clock()
    with http_double() as hook:
        svc, out = service(
            tmp_path,
            {"inhibit": [], "receivers": hooks(hook), "routes": [{"receivers": ["primary"]}]},
            clock,
        )
        out.add(transition("snow.town_alert", "town", subject_kind="town"))
        out.add(transition("snow.depth", "ST01"))
        svc.tick()
    assert len([a for r in hook.requests for a in r.body["alerts"]]) == 2


# --- digest -------------------------------------------------------------------------------


def test_info_water_waits_for_the_morning_digest_critical_goes_now(tmp_path: Path) -> None:
    clock = Clock()  # 03:00 JST
    with http_double() as hook:
        svc, out = service(
            tmp_path,
            {
                "repeat_interval_min": 24 * 60,
                "receivers": {"water": {"webhook": {"url": hook.url}}},
                "routes": [
                    {
                        "categories": ["water"],
                        "severities": ["info"],
                        "digest": True,
                        "receivers": ["water"],
                        "name": "water digest",
                    },
                    {"categories": ["water"], "receivers": ["water"]},
                ],
            },
            clock,
        )
        svc.tick()
        out.add(
            transition("water.meter_stale", "M010", subject_kind="meter", severity="info"),
            transition("water.burst", "M011", subject_kind="meter"),
        )
        svc.tick()
        assert [r.body["alerts"][0]["subject"] for r in hook.requests] == ["M011"]
        clock.advance(hours=4, minutes=59)  # 07:59 JST
        svc.tick()
        assert len(hook.requests) == 1
        clock.advance(minutes=1)  # 08:00 JST
        svc.tick()
        clock.advance(hours=1)
        svc.tick()
    assert len(hook.requests) == 2
    digest = hook.requests[1].body
    assert digest["kind"] == "digest" and [a["subject"] for a in digest["alerts"]] == ["M010"]
    assert digest["ack_url"] is None


# --- acknowledgement ------------------------------------------------------------------------


def test_token_signing() -> None:
    key = b"k"
    tok = make_token(key, 12, 1000)
    assert verify_token(key, tok, 999) == 12
    assert verify_token(key, tok, 1001) is None  # expired
    assert verify_token(b"other", tok, 999) is None
    nid, exp, sig = tok.split(".")
    assert verify_token(key, f"13.{exp}.{sig}", 999) is None  # another notification
    assert verify_token(key, f"{nid}.2000.{sig}", 999) is None  # a longer life
    assert verify_token(key, "garbage", 0) is None


def _post(url: str, data: dict[str, str]) -> tuple[int, str]:
    req = urllib.request.Request(url, data=urllib.parse.urlencode(data).encode(), method="POST")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_ack_link_served_tampered_and_expired_refused(tmp_path: Path) -> None:
    clock = Clock()
    with http_double() as hook:
        svc, out = service(
            tmp_path,
            {
                "ack": {"port": 0, "secret": "s3cret", "link_ttl_h": 1},
                "receivers": hooks(hook),
                "routes": [{"receivers": ["primary"], "group_by": ["subject"]}],
            },
            clock,
        )
        out.add(
            transition("snow.depth", "ST01"),
            transition("water.leak", "M9", subject_kind="meter"),
        )
        svc.tick()
        svc.ack_server = None

    srv = AckServer(svc.store, svc.key, "127.0.0.1", 0, svc.t).start()
    try:
        bodies = {r.body["alerts"][0]["subject"]: r.body for r in hook.requests}
        link = urllib.parse.urlsplit(bodies["ST01"]["ack_url"])
        token = urllib.parse.parse_qs(link.query)["t"][0]
        base = f"http://127.0.0.1:{srv.port}/ack"
        # GET only shows; a mail scanner following the link acknowledges nothing
        status, page = _get(f"{base}?t={token}")
        assert status == 200 and "snow.depth:ST01" in page and "<form" in page
        nid, exp, sig = token.split(".")
        other = bodies["M9"]["notification_id"]
        for bad in (f"{other}.{exp}.{sig}", f"{nid}.{int(exp) + 1}.{sig}", f"{nid}.{exp}.x{sig}"):
            status, page = _post(base, {"t": bad, "by": "mallory"})
            assert status == 403
            assert "ST01" not in page and "M9" not in page and "leak" not in page
        assert svc.store.query("SELECT COUNT(*) AS n FROM alerts WHERE status != 'firing'") == [
            {"n": 0}
        ]
        clock.advance(minutes=61)  # expired
        status, page = _post(base, {"t": token, "by": "sato"})
        assert status == 403 and "ST01" not in page
        clock.advance(minutes=-2)
        # A free-text "by" is ignored: the acknowledger is the link's recipient.
        status, page = _post(base, {"t": token, "by": "mallory"})
        assert status == 200 and "(primary)" in page and "mallory" not in page
    finally:
        srv.stop()
    rows = svc.store.query("SELECT key, status, acked_by, ack_via FROM alerts ORDER BY key")
    assert rows == [
        {
            "key": "snow.depth:ST01",
            "status": "acknowledged",
            "acked_by": "primary",
            "ack_via": "link",
        },
        {"key": "water.leak:M9", "status": "firing", "acked_by": None, "ack_via": None},
    ]


def test_cli_ack_list_show_and_silence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = tmp_path / "y.toml"
    conf.write_text(
        f'[alerts]\nstate_dir = "{tmp_path / "alerts"}"\noutbox = "{tmp_path / "rules.sqlite"}"\n'
        'write_events = false\ngroup_wait_s = 0\n[alerts.ack]\nport = 0\nsecret = "x"\n',
        encoding="utf-8",
    )
    monkeypatch.setenv("YUKIMIZU_CONFIG", str(conf))

    cfg = load_config(conf)
    svc = AlertService(cfg, load_alerts_config(cfg))
    Outbox(tmp_path / "rules.sqlite").add(transition("snow.depth", "ST05"))
    svc.tick()
    assert main(["alerts", "list"]) == 0
    assert "snow.depth:ST05" in capsys.readouterr().out
    assert main(["alerts", "ack", "1", "--by", "田中"]) == 0
    assert main(["alerts", "ack", "1", "--by", "田中"]) == 1  # already acknowledged
    capsys.readouterr()
    assert main(["alerts", "show", "1"]) == 0
    shown = capsys.readouterr().out
    assert "by 田中 via cli" in shown and "notification #1 firing" in shown and "ok " in shown
    assert (
        main(["alerts", "silence", "add", "--rule", "water.*", "--for", "2h", "--by", "sato"]) == 0
    )
    assert main(["alerts", "silence", "list"]) == 0
    assert "rule=water.*" in capsys.readouterr().out
    assert main(["alerts", "silence", "expire", "1"]) == 0
    assert main(["alerts", "show"]) == 0
    assert "alerts:        acknowledged=1" in capsys.readouterr().out


def test_service_without_outbox_yet_is_idle(tmp_path: Path) -> None:
    cfg = Config.model_validate(
        {
            "alerts": {
                "state_dir": str(tmp_path / "a"),
                "outbox": str(tmp_path / "none.sqlite"),
                "ack": {"port": 0},
                "write_events": False,
            }
        }
    )

    svc = AlertService(cfg, load_alerts_config(cfg, environ={}), now=Clock())
    svc.tick()
    assert (tmp_path / "a" / "ack.key").stat().st_mode & 0o777 == 0o600
