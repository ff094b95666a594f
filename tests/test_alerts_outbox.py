"""A bad record in the rules outbox must not stop on-call alerting (issue 15).

A record that is not a valid transition — truncated, a field of the wrong type, an
unknown field, bytes that are not UTF-8, a record of a newer rules engine — is set
aside with its reason and the outbox position, logged once, shown by ``alerts show``,
and the good records after it are delivered exactly once, across restarts too
(docs/alerts.md#bad-outbox-records).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from alerts.store import Store
from cli import main
from rules.transitions import read_outbox
from tests.alerts_support import Clock, HttpDouble, Outbox, http_double, service, transition
from tests.conftest import REPO, wait_for

GOOD = transition("snow.depth", "ST01").model_dump_json()

# (what is wrong, the record as stored, words its reason must contain)
BAD: list[tuple[str, object, str]] = [
    ("truncated", GOOD[:57], "Invalid JSON"),
    ("wrong type", GOOD.replace('"critical"', "3"), "severity: Input should be"),
    ("unknown field", GOOD[:-1] + ',"zone":"A"}', "zone: Extra inputs are not permitted"),
    ("garbage bytes", b"\xff\xfe\x00\x9c garbage", "not UTF-8 text"),
    ("newer version", GOOD.replace('"firing"', '"escalated"'), "status: Input should be"),
    ("not an object", 42, "record: Input should be an object"),
]


def _add_bad(path: Path, record: object) -> int:
    """Insert a record as a buggy or newer writer could (TEXT affinity, any bytes)."""
    con = sqlite3.connect(path)
    with con:
        cur = con.execute(
            "INSERT INTO outbox (key, status, event_time, record) "
            "VALUES ('x:y', 'firing', ?, CAST(? AS TEXT))",
            (f"bad-{os.urandom(4).hex()}", record),
        )
    con.close()
    return int(cur.lastrowid or 0)


@pytest.mark.parametrize(("record", "reason"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_the_reader_returns_a_bad_record_with_its_reason_and_reads_on(
    tmp_path: Path, record: object, reason: str
) -> None:
    out = Outbox(tmp_path / "rules.sqlite")
    out.add(transition("snow.depth", "ST01"))
    bad_id = _add_bad(out.path, record)
    out.add(transition("snow.depth", "ST02"))
    batch = read_outbox(out.path)
    assert [(i, t.subject) for i, t in batch.transitions] == [(1, "ST01"), (3, "ST02")]
    assert [b.id for b in batch.bad] == [bad_id] == [2]
    assert reason in batch.bad[0].reason, batch.bad[0].reason
    assert batch.last_id == 3
    assert read_outbox(out.path, 1, limit=1).last_id == 2  # a batch of one bad record


def test_garbage_bytes_are_kept_readable(tmp_path: Path) -> None:
    out = Outbox(tmp_path / "rules.sqlite")
    _add_bad(out.path, b"\xff\xfe{")
    (bad,) = read_outbox(out.path).bad
    assert (bad.raw, bad.size) == ("\\xff\\xfe{", 3)
    assert "invalid start byte" in bad.reason


def test_a_batch_of_bad_records_only_moves_the_cursor_once(tmp_path: Path) -> None:
    svc, out = service(
        tmp_path, {"receivers": {"c": {"console": {}}}, "routes": [{"receivers": ["c"]}]}, Clock()
    )
    for _what, record, _reason in BAD[:3]:
        _add_bad(out.path, record)
    assert svc.ingest() == 3
    assert svc.store.meta("cursor") == "3"
    assert svc.ingest() == 0
    assert svc.store.rejected_outbox()[0] == 3
    assert svc.stats["outbox_rejected"] == 3


def test_a_recreated_rules_state_is_read_from_its_start_not_skipped(tmp_path: Path) -> None:
    """Deleting rules.sqlite restarts its ids at 1; a cursor kept at 3 would skip the
    new state's first transitions in silence."""
    svc, out = service(
        tmp_path, {"receivers": {"c": {"console": {}}}, "routes": [{"receivers": ["c"]}]}, Clock()
    )
    out.add(*(transition("snow.depth", s) for s in ("ST01", "ST02", "ST03")))
    assert svc.ingest() == 3
    out.path.unlink()
    fresh = Outbox(out.path)
    fresh.add(transition("snow.depth", "ST04"))
    assert read_outbox(out.path, 3).recreated
    assert svc.ingest() == 1
    assert svc.store.meta("cursor") == "1"
    assert "ST04" in {a["subject"] for a in svc.store.open_alerts()}


def _config(tmp_path: Path, hook: HttpDouble) -> Path:
    conf = tmp_path / "yukimizu.toml"
    conf.write_text(
        f"""
[alerts]
state_dir = "{tmp_path / "alerts"}"
outbox = "{tmp_path / "rules.sqlite"}"
poll_s = 0.2
group_wait_s = 0
group_interval_s = 0
repeat_interval_min = 600
write_events = false
routes = [{{ receivers = ["oncall"], group_by = ["subject"] }}]
[alerts.ack]
port = 0
secret = "outbox-test"
[alerts.receivers.oncall.webhook]
url = "{hook.url}"
""",
        encoding="utf-8",
    )
    return conf


def _start(conf: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "YUKIMIZU_CONFIG": str(conf)}
    with log.open("ab") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "cli", "alerts", "run"],
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )


def _stop(proc: subprocess.Popen[bytes], log: Path) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0, log.read_text()[-2000:]


def _cursor(state: Path) -> int:
    if not state.exists():
        return 0
    con = sqlite3.connect(state)
    try:
        row = con.execute("SELECT v FROM meta WHERE k = 'cursor'").fetchone()
    except sqlite3.OperationalError:
        return 0  # the service is still creating its tables
    finally:
        con.close()
    return int(row[0]) if row else 0


def _subjects(hook: HttpDouble) -> list[str]:
    return [a["subject"] for r in hook.requests for a in r.body["alerts"]]


def test_alerts_run_sets_bad_records_aside_and_delivers_the_good_ones_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "alerts.log"
    state = tmp_path / "alerts" / "alerts.sqlite"
    out = Outbox(tmp_path / "rules.sqlite")
    with http_double() as hook:
        conf = _config(tmp_path, hook)
        out.add(transition("snow.depth", "ST01"))
        bad_ids = [_add_bad(out.path, BAD[0][1]), _add_bad(out.path, BAD[3][1])]
        out.add(transition("snow.depth", "ST02"))
        bad_ids.append(_add_bad(out.path, BAD[2][1]))  # the newest record is a bad one
        proc = _start(conf, log)
        try:
            wait_for(lambda: len(hook.requests) >= 2, 30, 0.05, what="ST01 and ST02 delivered")
            wait_for(lambda: _cursor(state) == 5, 10, 0.05, what="cursor past the bad record")
            _stop(proc, log)
            # while it is down: another bad record (a newer engine's), then a good one
            bad_ids.append(_add_bad(out.path, BAD[4][1]))
            out.add(transition("snow.depth", "ST03"))
            proc = _start(conf, log)
            wait_for(lambda: len(hook.requests) >= 3, 30, 0.05, what="ST03 delivered")
            wait_for(lambda: _cursor(state) == 7, 10, 0.05, what="cursor at the end")
            _stop(proc, log)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    text = log.read_text(encoding="utf-8")
    assert _subjects(hook) == ["ST01", "ST02", "ST03"], text[-2000:]
    assert text.count("alerts service started") == 2
    for oid in bad_ids:
        logged = [x for x in text.splitlines() if f"outbox record #{oid} of " in x]
        assert len(logged) == 1 and " ERROR " in logged[0], text[-2000:]
    store = Store(state)
    assert store.query("SELECT subject, duplicates FROM alerts ORDER BY id") == [
        {"subject": s, "duplicates": 0} for s in ("ST01", "ST02", "ST03")
    ]
    n, rows = store.rejected_outbox()
    assert n == 4
    assert [r["outbox_id"] for r in reversed(rows)] == bad_ids == [2, 3, 5, 6]
    assert json.loads(rows[0]["raw"])["status"] == "escalated"
    assert rows[2]["raw"].startswith("\\xff\\xfe")
    store.close()

    monkeypatch.setenv("YUKIMIZU_CONFIG", str(tmp_path / "yukimizu.toml"))
    assert main(["alerts", "show"]) == 0
    shown = capsys.readouterr().out
    assert "(cursor 7)" in shown
    assert "outbox records that are not valid transitions (set aside): 4" in shown
    assert "#6 read " in shown and "status: Input should be" in shown
