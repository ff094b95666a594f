"""No loss under crashes and outages, with real processes and services."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from core.publish import Publisher
from devtools.localstack import InfluxDB1, Mosquitto
from tests.conftest import (
    config_env,
    count,
    ingest_subprocess,
    make_config,
    running_ingest,
    wait_for,
)

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
T0_MS = int(T0.timestamp() * 1000)


def reading(i: int) -> bytes:
    # Distinct device timestamps make every reading its own point (1 ms apart).
    ts = T0_MS + i
    return json.dumps({"time": ts / 1000, "depth_cm": float(i % 500), "seq": i}).encode()


def seqs(influx: InfluxDB1, db: str) -> list[int]:
    return sorted(r["seq"] for r in influx.series('SELECT "seq" FROM "snow_depth"', db))


def assert_exactly_once(influx: InfluxDB1, db: str, n: int) -> None:
    got = seqs(influx, db)
    missing = sorted(set(range(n)) - set(got))
    assert not missing, f"{len(missing)} missing, first {missing[:10]}"
    assert got == list(range(n)), "duplicate or unexpected sequence numbers"


def test_kill_9_mid_stream_then_restart_loses_nothing(
    tmp_path: Path, tag: str, mosquitto: Mosquitto, influx: InfluxDB1
) -> None:
    n = 20_000
    env = config_env(
        tmp_path, tag, mosquitto, influx.url, overrides={"ingest": {"batch_size": "1000"}}
    )
    cfg = make_config(tmp_path, tag, mosquitto, influx.url)
    log = tmp_path / "ingest.log"
    proc = ingest_subprocess(env, log)
    try:
        with Publisher(cfg.mqtt) as pub:
            for i in range(n):
                pub.publish(f"{tag}/snow/ST01", reading(i))
                if i == n // 3:
                    # ingest is busy with a third of the stream: crash it
                    wait_for(
                        lambda: count(influx, tag, "snow_depth", "seq") > 1000,
                        what="some rows before the crash",
                    )
                    proc.kill()
            pub.flush()
        before = count(influx, tag, "snow_depth", "seq")
        assert before < n, "crash happened too late to prove anything"
        proc = ingest_subprocess(env, log)
        wait_for(
            lambda: count(influx, tag, "snow_depth", "seq") >= n,
            timeout_s=120,
            what=f"{n} rows after restart",
        )
    finally:
        proc.stop(30)
    assert_exactly_once(influx, tag, n)
    assert "SESSION LOST" not in log.read_text()


def test_influxdb_down_30s_mid_stream_nothing_lost(
    tmp_path: Path, tag: str, mosquitto: Mosquitto, influx: InfluxDB1
) -> None:
    n = 6_000
    cfg = make_config(
        tmp_path, tag, mosquitto, influx.url, overrides={"ingest": {"batch_size": "500"}}
    )
    with running_ingest(cfg) as ing, Publisher(cfg.mqtt) as pub:

        def publish(lo: int, hi: int, pause_s: float = 0.0) -> None:
            for i in range(lo, hi):
                pub.publish(f"{tag}/snow/ST01", reading(i))
                if pause_s and i % 100 == 0:
                    time.sleep(pause_s)
            pub.flush()

        publish(0, 2000)
        wait_for(lambda: count(influx, tag, "snow_depth", "seq") >= 2000, what="first part")
        influx.stop()
        try:
            # the stream goes on for 30 s while InfluxDB is away
            publish(2000, 5000, pause_s=1.0)
            wait_for(lambda: ing.ingest.stats.received >= 5000, what="received while down")
            wait_for(lambda: ing.ingest.spool.points >= 3000, what="spooled")
        finally:
            influx.start()
        publish(5000, n)
        wait_for(
            lambda: count(influx, tag, "snow_depth", "seq") >= n,
            timeout_s=90,
            what="all rows after InfluxDB is back",
        )
        wait_for(lambda: ing.ingest.spool.points == 0, what="spool drained")
        assert ing.ingest.stats.spooled >= 3000
    assert_exactly_once(influx, tag, n)


def test_ingest_down_while_devices_publish_then_queued_readings_arrive(
    tmp_path: Path, tag: str, mosquitto: Mosquitto, influx: InfluxDB1
) -> None:
    cfg = make_config(tmp_path, tag, mosquitto, influx.url)
    with running_ingest(cfg), Publisher(cfg.mqtt) as pub:
        for i in range(100):
            pub.publish(f"{tag}/snow/ST01", reading(i))
        pub.flush()
        wait_for(lambda: count(influx, tag, "snow_depth", "seq") >= 100, what="first 100")
    # ingest is down (clean stop): the broker queues for its persistent session;
    # more than Mosquitto's default max_queued_messages of 1,000.
    n = 5_000
    with Publisher(cfg.mqtt) as pub:
        for i in range(100, n):
            pub.publish(f"{tag}/snow/ST01", reading(i))
    time.sleep(0.5)
    assert count(influx, tag, "snow_depth", "seq") == 100
    with running_ingest(cfg) as ing:
        wait_for(
            lambda: count(influx, tag, "snow_depth", "seq") >= n,
            timeout_s=60,
            what="queued readings",
        )
        assert ing.ingest.source.session_lost == 0
    assert_exactly_once(influx, tag, n)


def test_two_ingest_processes_in_a_shared_group_write_each_reading_once(
    tmp_path: Path, tag: str, mosquitto: Mosquitto, influx: InfluxDB1
) -> None:
    n = 10_000
    cfgs = [
        make_config(
            tmp_path / f"w{k}",
            tag,
            mosquitto,
            influx.url,
            overrides={"mqtt": {"shared_group": '"ingest"', "client_id": f'"ingest-{tag}-{k}"'}},
        )
        for k in range(2)
    ]
    with running_ingest(cfgs[0]) as a, running_ingest(cfgs[1]) as b:

        def pub_range(lo: int, hi: int) -> None:
            with Publisher(cfgs[0].mqtt) as pub:
                for i in range(lo, hi):
                    pub.publish(f"{tag}/snow/ST01", reading(i))

        threads = [
            threading.Thread(target=pub_range, args=(k * n // 2, (k + 1) * n // 2))
            for k in range(2)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wait_for(
            lambda: a.ingest.stats.received + b.ingest.stats.received >= n, what="all received"
        )
        wait_for(lambda: count(influx, tag, "snow_depth", "seq") >= n, what="all rows")
        ra, rb = a.ingest.stats.received, b.ingest.stats.received
    assert ra + rb == n, "a reading went to both group members or was lost"
    assert ra > n // 10 and rb > n // 10, f"load not shared: {ra} / {rb}"
    assert_exactly_once(influx, tag, n)
