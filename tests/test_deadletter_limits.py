"""The dead-letter store cannot be grown without bound (issue 15: five 20 MB payloads
from one device grew it by 135 MB): an oversized payload keeps its head, size and
sha256; the store is capped by bytes, the oldest evicted first, the evictions counted
in ingest's self-metrics and alerted by the rules engine's system family.

The store's own promises on the real SQLite file; the whole path through a real
Mosquitto, ingest, InfluxDB and the rules engine.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core.config import ConfigError, InfluxConfig, load_config, load_registry
from core.influxql import InfluxQuery
from core.publish import Publisher
from devtools.localstack import InfluxDB1, Mosquitto
from ingest.deadletter import HEAD_BYTES, Content, DeadLetterStore, Letter
from ingest.reasons import Reason
from rules.config import RulesConfig
from rules.engine import Engine
from rules.sources import LiveSource
from rules.state import MemoryState
from rules.system import SystemFamily
from tests.conftest import (
    REPO,
    SAMPLE_CONFIG,
    config_env,
    count,
    make_config,
    running_ingest,
    wait_for,
)

MiB = 1024 * 1024
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)


def good(i: int) -> bytes:
    ts = (T0 + timedelta(seconds=i)).isoformat()
    return json.dumps({"time": ts, "depth_cm": 20.0, "seq": i}).encode()


def invalid(n: int, size: int) -> bytes:
    """Invalid JSON of ``size`` bytes that says which one it is."""
    head = b'{"n": %d, "pad": "' % n
    return head + b"x" * (size - len(head))


# ----------------------------------------------------------------------------- the store


def test_an_oversized_payload_keeps_its_head_size_and_hash(tmp_path: Path) -> None:
    store = DeadLetterStore(tmp_path / "dl.sqlite", keep_payload_bytes=64 * 1024)
    big = os.urandom(20 * MiB)
    small = b"{" * (64 * 1024)  # at the threshold: kept whole
    store.add_many(
        [
            Letter("yukimizu/snow/ST01", Reason.TOO_LARGE, "payload is big", big),
            Letter("yukimizu/snow/ST01", Reason.INVALID_JSON, "bad", small),
        ]
    )
    head, whole = store.list()
    assert head.content == Content.PAYLOAD_HEAD
    assert head.payload == big[:HEAD_BYTES]
    assert (head.size, head.sha256) == (len(big), hashlib.sha256(big).hexdigest())
    assert f"payload {len(big)} bytes, sha256 {head.sha256}" in head.detail
    assert whole.content == Content.PAYLOAD and whole.payload == small
    assert whole.size == len(small)
    store.close()
    assert (tmp_path / "dl.sqlite").stat().st_size < 1 * MiB


def test_the_store_is_capped_oldest_first(tmp_path: Path) -> None:
    store = DeadLetterStore(tmp_path / "dl.sqlite", max_bytes=1 * MiB)
    evicted = 0
    for batch in range(10):
        store.add_many(
            Letter("t", Reason.INVALID_JSON, "", invalid(batch * 10 + i, 30_000)) for i in range(10)
        )
        evicted += store.trim().rows
        assert store.bytes <= 1 * MiB
    kept = store.list()
    assert len(kept) + evicted == 100 and evicted > 0
    numbers = [json.loads(d.payload[: d.payload.index(b', "pad"')] + b"}")["n"] for d in kept]
    assert numbers == list(range(100 - len(kept), 100))  # the newest survive, in order
    store.close()


def test_the_total_stays_right_beside_another_writer(tmp_path: Path) -> None:
    """The CLI purges while ingest runs: the cap counts what is really there."""
    path = tmp_path / "dl.sqlite"
    service = DeadLetterStore(path, max_bytes=1 * MiB)
    service.add_many(Letter("t", Reason.EMPTY, "", b"x" * 10_000) for _ in range(50))
    cli = DeadLetterStore(path)
    assert cli.delete(reason="empty", ids=[d.id for d in cli.list()[:30]]) == 30
    cli.close()
    with sqlite3.connect(path) as db:
        (actual,) = db.execute("SELECT SUM(bytes) FROM deadletters").fetchone()
    assert service.bytes == actual and len(service.list()) == 20
    service.close()


def test_a_store_written_by_an_older_version_is_measured(tmp_path: Path) -> None:
    path = tmp_path / "dl.sqlite"
    with sqlite3.connect(path) as db:  # the layout before size, sha256 and bytes
        db.execute(
            "CREATE TABLE deadletters (id INTEGER PRIMARY KEY AUTOINCREMENT,"
            " time REAL NOT NULL, topic TEXT NOT NULL, reason TEXT NOT NULL,"
            " detail TEXT NOT NULL, payload BLOB NOT NULL,"
            " content TEXT NOT NULL DEFAULT 'payload')"
        )
        db.executemany(
            "INSERT INTO deadletters (time, topic, reason, detail, payload)"
            " VALUES (?, 't', 'empty', '', ?)",
            [(time.time(), b"y" * 400_000) for _ in range(5)],
        )
    store = DeadLetterStore(path, max_bytes=1 * MiB)
    assert store.bytes >= 5 * 400_000
    assert store.trim().rows == 3  # the two newest fit under 1 MiB
    assert len(store.list()) == 2 and store.bytes <= 1 * MiB
    assert store.list()[0].size == -1  # unknown for rows an older version wrote
    store.close()


# ----------------------------------------------------------------------------- end to end


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO,
        env={**os.environ, "YUKIMIZU_CONFIG": str(SAMPLE_CONFIG), **env},
    )


def test_five_20mb_payloads_cost_kilobytes_not_megabytes(
    tmp_path: Path, tag: str, mosquitto: Mosquitto, influx: InfluxDB1
) -> None:
    """Issue 15's probe through a broker without a size limit (an older
    configuration): every oversized payload is a `too_large` dead letter of a few
    KiB, the good readings around them are stored, and `deadletter show` tells the
    size and hash."""
    env = config_env(tmp_path, tag, mosquitto, influx.url)
    cfg = load_config(SAMPLE_CONFIG, environ=env)
    snow = f"{tag}/snow/ST01"
    bigs = [os.urandom(20 * MiB) for _ in range(5)]
    store_path = tmp_path / "state" / "deadletter.sqlite"
    with running_ingest(cfg) as ing, Publisher(cfg.mqtt) as pub:
        for i, big in enumerate(bigs):
            pub.publish(snow, good(2 * i))
            pub.publish(snow, big)
            pub.publish(snow, good(2 * i + 1))
        pub.flush()
        wait_for(lambda: ing.ingest.stats.deadlettered >= 5, timeout_s=60, what="5 dead letters")
        wait_for(lambda: count(influx, tag, "snow_depth", "seq") >= 10, what="good rows")
    store = DeadLetterStore(store_path)
    letters = store.list()
    store.close()
    assert [d.reason for d in letters] == ["too_large"] * 5
    for d, big in zip(letters, bigs, strict=True):
        assert d.content == Content.PAYLOAD_HEAD and d.payload == big[:HEAD_BYTES]
        assert (d.size, d.sha256) == (20 * MiB, hashlib.sha256(big).hexdigest())
    size = sum(p.stat().st_size for p in store_path.parent.glob("deadletter.sqlite*"))
    assert size < 2 * MiB, f"the dead-letter files hold {size} bytes"
    shown = _cli(env, "deadletter", "show", str(letters[0].id))
    assert shown.returncode == 0, shown.stderr
    assert f"received: {20 * MiB} bytes, sha256 {letters[0].sha256}" in shown.stdout
    assert "payload_head" in shown.stdout
    replay = _cli(env, "deadletter", "replay", "--all", "--dry-run")
    assert replay.returncode == 0, replay.stderr
    assert "skipped 5 dead letters that keep only the head" in replay.stdout
    assert "would publish" not in replay.stdout


def test_a_full_store_evicts_the_oldest_counts_and_alerts(
    tmp_path: Path, tag: str, mosquitto: Mosquitto, influx: InfluxDB1
) -> None:
    cfg = make_config(
        tmp_path,
        tag,
        mosquitto,
        influx.url,
        overrides={"ingest": {"deadletter_max_bytes": str(1 * MiB)}},
    )
    snow = f"{tag}/snow/ST01"
    n_bad = 80
    influx.create_database(tag)
    with running_ingest(cfg) as ing, Publisher(cfg.mqtt) as pub:
        # a baseline sample of the counter before anything was evicted
        wait_for(
            lambda: influx.series('SELECT LAST("deadletter_evicted") FROM "yukimizu_ingest"', tag),
            what="ingest's first self-metrics",
        )
        for n in range(n_bad):
            pub.publish(snow, good(n))
            pub.publish(snow, invalid(n, 30_000))
        pub.flush()
        wait_for(lambda: ing.ingest.stats.received >= 2 * n_bad, what="all received")
        wait_for(lambda: count(influx, tag, "snow_depth", "seq") >= n_bad, what="good rows")
        # (the store is trimmed before a batch's dead letters are counted)
        wait_for(lambda: ing.ingest.stats.deadlettered >= n_bad, what="all dead-lettered")
        evicted = ing.ingest.stats.deadletter_evicted

        def metric() -> int:
            rows = influx.series('SELECT LAST("deadletter_evicted") FROM "yukimizu_ingest"', tag)
            return int(rows[0]["last"]) if rows else -1

        wait_for(lambda: metric() == evicted, what="the eviction counter in InfluxDB")
    store = DeadLetterStore(tmp_path / "state" / "deadletter.sqlite")
    kept = store.list()
    assert store.bytes <= 1 * MiB
    store.close()
    assert evicted > 0 and len(kept) + evicted == n_bad
    assert [d.payload[:20] for d in kept] == [
        invalid(n, 30_000)[:20] for n in range(evicted, n_bad)
    ]

    # the rules engine's system family turns the counter into an alert
    client = InfluxQuery(InfluxConfig(url=influx.url, database=tag, create_database=False))
    engine = Engine(load_registry(cfg), RulesConfig(warmup_days=0), MemoryState(), [SystemFamily])
    now_ms = int(time.time() * 1000) + 1000
    found = [
        t
        for t in engine.cycle(now_ms, LiveSource(client)).transitions
        if t.rule == "system.deadletter_evicted"
    ]
    assert len(found) == 1 and found[0].firing, found
    assert f"古いものから {evicted} 件を削除しました" in found[0].message
    assert f"{evicted} of the oldest dead letters were evicted" in found[0].message_en
    # an hour later without evictions it resolves
    later = engine.cycle(now_ms + 3_700_000, LiveSource(client)).transitions
    resolved = [t for t in later if t.rule == "system.deadletter_evicted"]
    assert len(resolved) == 1 and not resolved[0].firing


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("deadletter_max_bytes", "1000"),
        ("deadletter_max_bytes", '"lots"'),
        ("deadletter_keep_payload_bytes", "100"),
    ],
)
def test_the_limits_are_validated(key: str, value: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(SAMPLE_CONFIG, environ={f"YUKIMIZU_INGEST__{key.upper()}": value})
    assert f"ingest.{key}" in str(err.value)
