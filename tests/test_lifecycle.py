"""Shutdown, broker restarts, lost sessions and a spool that outlives ingest."""

from __future__ import annotations

import json
import shutil
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core.publish import Publisher
from devtools.localstack import InfluxDB1, Mosquitto
from tests.conftest import (
    REPO,
    IngestThread,
    config_env,
    count,
    ingest_subprocess,
    make_config,
    running_ingest,
    serve,
    wait_for,
)

T0_MS = int((datetime.now(UTC) - timedelta(days=2)).timestamp() * 1000)


def reading(i: int) -> bytes:
    return json.dumps({"time": (T0_MS + i) / 1000, "depth_cm": 5.0, "seq": i}).encode()


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A broker this test may restart or crash without disturbing the others."""
    yield from serve(Mosquitto(tmp_path / "own-mosquitto"))


def test_sigterm_flushes_acks_and_exits_promptly(
    tmp_path: Path, tag: str, mosquitto: Mosquitto, influx: InfluxDB1
) -> None:
    # A long flush interval: without the shutdown flush these would sit in the batch.
    env = config_env(
        tmp_path,
        tag,
        mosquitto,
        influx.url,
        overrides={"ingest": {"flush_interval_s": "30.0", "linger_s": "10.0"}},
    )
    cfg = make_config(tmp_path, tag, mosquitto, influx.url)
    log = tmp_path / "ingest.log"
    proc = ingest_subprocess(env, log)
    with Publisher(cfg.mqtt) as pub:
        for i in range(500):
            pub.publish(f"{tag}/snow/ST01", reading(i))
    time.sleep(1.0)
    assert count(influx, tag, "snow_depth", "seq") == 0
    t = time.monotonic()
    assert proc.stop(20) == 0
    assert time.monotonic() - t < 15
    assert count(influx, tag, "snow_depth", "seq") == 500
    text = log.read_text()
    assert "received SIGTERM" in text and "ingest stopped: received=500" in text
    # Everything was acked: a new ingest with the same session gets nothing again. The
    # broker would resend unacked messages ahead of a newer one, so once the newer one
    # is written, everything that could come has come.
    with running_ingest(cfg) as ing, Publisher(cfg.mqtt) as pub:
        pub.publish(f"{tag}/snow/ST01", reading(500))
        pub.flush()
        wait_for(lambda: count(influx, tag, "snow_depth", "seq") == 501, what="newer reading")
        assert ing.ingest.stats.received == 1


def test_broker_restart_reconnects_and_resubscribes(
    tmp_path: Path, tag: str, own_broker: Mosquitto, influx: InfluxDB1
) -> None:
    cfg = make_config(tmp_path, tag, own_broker, influx.url)
    with running_ingest(cfg) as ing:
        with Publisher(cfg.mqtt) as pub:
            for i in range(100):
                pub.publish(f"{tag}/snow/ST01", reading(i))
        wait_for(lambda: count(influx, tag, "snow_depth", "seq") >= 100, what="first 100")
        own_broker.stop()
        own_broker.start()
        wait_for(lambda: ing.ingest.source.reconnects >= 1, timeout_s=40, what="reconnect")
        with Publisher(cfg.mqtt) as pub:
            for i in range(100, 300):
                pub.publish(f"{tag}/snow/ST01", reading(i))
        wait_for(lambda: count(influx, tag, "snow_depth", "seq") >= 300, what="after restart")
        assert ing.ingest.source.session_lost == 0


def test_lost_session_is_loud(
    tmp_path: Path,
    tag: str,
    own_broker: Mosquitto,
    influx: InfluxDB1,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cfg = make_config(tmp_path, tag, own_broker, influx.url)
    with running_ingest(cfg):
        pass
    own_broker.kill()  # a crash: Mosquitto had not saved the session yet
    own_broker.start()
    with caplog.at_level("ERROR"), running_ingest(cfg) as ing:
        assert ing.ingest.source.session_lost == 1
        wait_for(
            lambda: influx.series('SELECT LAST("session_lost") FROM "yukimizu_ingest"', tag),
            what="session_lost metric",
        )
    assert "MQTT SESSION LOST" in caplog.text
    rows = influx.series('SELECT LAST("session_lost") FROM "yukimizu_ingest"', tag)
    assert rows[0]["last"] == 1


def test_spool_outlives_ingest_and_is_replayed_after_restart(
    tmp_path: Path, tag: str, mosquitto: Mosquitto, tmp_path_factory: pytest.TempPathFactory
) -> None:
    db = InfluxDB1(tmp_path_factory.mktemp("own-influx"))
    db.start()
    try:
        cfg = make_config(tmp_path, tag, mosquitto, db.url)
        db.stop()
        with running_ingest(cfg) as ing:
            with Publisher(cfg.mqtt) as pub:
                for i in range(800):
                    pub.publish(f"{tag}/snow/ST01", reading(i))
            wait_for(lambda: ing.ingest.spool.points >= 800, what="spooled while down")
        # ingest is gone; its spool file holds the readings (and they were acked)
        db.start()
        with running_ingest(cfg) as ing:
            wait_for(lambda: count(db, tag, "snow_depth", "seq") >= 800, what="replayed")
            wait_for(lambda: ing.ingest.spool.points == 0, what="spool empty")
            assert ing.ingest.stats.received == 0
        rows = db.series('SELECT "seq" FROM "snow_depth"', tag)
        assert sorted(r["seq"] for r in rows) == list(range(800))
    finally:
        db.stop()


def test_ingest_started_before_the_broker_waits_for_it(
    tmp_path: Path,
    tag: str,
    own_broker: Mosquitto,
    influx: InfluxDB1,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cfg = make_config(tmp_path, tag, own_broker, influx.url)
    own_broker.stop()
    with caplog.at_level("WARNING"):
        it = IngestThread(cfg)
        it.thread.start()
        try:
            wait_for(lambda: "cannot reach the MQTT broker" in caplog.text, what="warning")
            own_broker.start()
            it.wait_ready(timeout_s=40)
            with Publisher(cfg.mqtt) as pub:
                for i in range(50):
                    pub.publish(f"{tag}/snow/ST01", reading(i))
            wait_for(lambda: count(influx, tag, "snow_depth", "seq") >= 50, what="rows")
        finally:
            it.stop()


def test_sighup_reloads_the_registry_and_keeps_the_old_one_if_broken(
    tmp_path: Path, tag: str, mosquitto: Mosquitto, influx: InfluxDB1
) -> None:
    stations = tmp_path / "stations.csv"
    shutil.copy(REPO / "config" / "stations.csv", stations)
    env = config_env(
        tmp_path, tag, mosquitto, influx.url, overrides={"registry": {"stations": f'"{stations}"'}}
    )
    cfg = make_config(tmp_path, tag, mosquitto, influx.url)
    log = tmp_path / "ingest.log"
    proc = ingest_subprocess(env, log)
    try:
        with Publisher(cfg.mqtt) as pub:
            pub.publish(f"{tag}/snow/ST11", reading(0))
        wait_for(lambda: "dead letter (unknown_device)" in log.read_text(), what="dead letter")

        original = stations.read_text(encoding="utf-8")
        stations.write_text(
            original + "ST11,新設,本町,38.381,140.201,300,laser,\n", encoding="utf-8"
        )
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "registry reloaded: 11 stations" in log.read_text(), what="reload")
        with Publisher(cfg.mqtt) as pub:
            pub.publish(f"{tag}/snow/ST11", reading(1))
        wait_for(lambda: count(influx, tag, "snow_depth", "seq") >= 1, what="ST11 written")

        stations.write_text(
            original + "ST12,壊れた,本町,north,140.2,300,laser,\n", encoding="utf-8"
        )
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "registry NOT reloaded" in log.read_text(), what="refused reload")
        assert "'north' is not a number" in log.read_text()
        with Publisher(cfg.mqtt) as pub:
            pub.publish(f"{tag}/snow/ST11", reading(2))  # the previous registry still serves
        wait_for(lambda: count(influx, tag, "snow_depth", "seq") >= 2, what="still working")
    finally:
        assert proc.stop(30) == 0
