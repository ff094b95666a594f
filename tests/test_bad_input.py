"""Bad input is dead-lettered with its reason, good readings around it are written,
the counters add up, and the dead-letter workflow (list/show/replay/purge) works."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from core.publish import Publisher
from devtools.localstack import InfluxDB1, Mosquitto
from ingest.deadletter import DeadLetterStore
from tests.conftest import REPO, config_env, count, make_config, running_ingest, wait_for

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)


def good(i: int) -> bytes:
    ts = (T0 + timedelta(seconds=i)).isoformat()
    return json.dumps({"time": ts, "depth_cm": 20.0, "seq": i}).encode()


def test_bad_input_is_dead_lettered_and_nothing_else_lost(
    tmp_path: Path, tag: str, mosquitto: Mosquitto, influx: InfluxDB1
) -> None:
    cfg = make_config(
        tmp_path, tag, mosquitto, influx.url, overrides={"ingest": {"max_payload_bytes": "4096"}}
    )
    now = datetime.now(UTC)
    snow = f"{tag}/snow/ST01"
    bad: list[tuple[str, bytes, str]] = [
        (snow, b'{"time": "2026-01-01T00:00:00Z", "depth_cm": 1', "invalid_json"),
        (snow, json.dumps({"time": T0.isoformat(), "depth_cm": "deep"}).encode(), "validation"),
        (snow, json.dumps({"time": T0.isoformat(), "depth_cm": 900}).encode(), "validation"),
        (snow, json.dumps({"time": "2026-01-01T09:00:00", "depth_cm": 3}).encode(), "validation"),
        (f"{tag}/snow/ST99", good(0), "unknown_device"),
        (f"{tag}/water/ST01", good(0), "wrong_kind"),
        (
            snow,
            json.dumps({"time": (now + timedelta(hours=1)).isoformat(), "depth_cm": 5}).encode(),
            "future_timestamp",
        ),
        (
            snow,
            json.dumps({"time": T0.isoformat(), "depth_cm": 5, "pad": "x" * 5000}).encode(),
            "too_large",
        ),
        (snow, bytes(range(256)), "undecodable"),
        (snow, b"", "empty"),
        (f"{tag}/snow/ST01/extra", good(0), "bad_topic"),
        (f"{tag}/rain/R1", good(0), "bad_topic"),
        (f"{tag}/plow/P02", b"$GPRMC,120000.00,A,3822.8,N,14012.0,E,1.0,0,010126,,,A*00", "nmea"),
        (
            f"{tag}/plow/P02",
            json.dumps({"time": T0.isoformat(), "lat": 35.68, "lon": 139.76}).encode(),
            "out_of_area",
        ),
        (
            f"{tag}-lora/application/1/device/70b3d5e4a32ac06f/event/up",
            json.dumps(
                {"deviceInfo": {"devEui": "70b3d5e4a32ac06f"}, "fCnt": 1, "data": "AQI="}
            ).encode(),
            "no_decoded_payload",
        ),
    ]
    # A batch with one bad reading: the two good ones are written, the message kept.
    batch = json.dumps(
        {
            "readings": [
                {"time": (T0 - timedelta(hours=3)).isoformat(), "register_l": 100.0},
                {"time": (T0 - timedelta(hours=2)).isoformat(), "register_l": -5.0},
                {"time": (T0 - timedelta(hours=1)).isoformat(), "register_l": 110.0},
            ]
        }
    ).encode()
    n_good = 200
    with running_ingest(cfg) as ing, Publisher(cfg.mqtt) as pub:
        g = 0
        for topic, payload, _ in bad:
            for _ in range(10):  # good readings around every bad one
                pub.publish(snow, good(g))
                g += 1
            pub.publish(topic, payload)
        pub.publish(f"{tag}/water/M003", batch)
        while g < n_good:
            pub.publish(snow, good(g))
            g += 1
        pub.flush()
        total = len(bad) + 1 + n_good
        wait_for(lambda: ing.ingest.stats.received >= total, what="all received")
        wait_for(lambda: count(influx, tag, "snow_depth", "seq") >= n_good, what="good rows")
        wait_for(lambda: ing.ingest.stats.deadlettered >= len(bad) + 1, what="dead letters")
        wait_for(
            lambda: influx.series(
                'SELECT LAST("count") FROM "yukimizu_deadletter" GROUP BY reason', tag
            ),
            what="dead-letter metrics",
        )
    stats = ing.ingest.stats
    assert stats.received == total
    assert stats.deadlettered == len(bad) + 1
    assert stats.readings == n_good + 2
    assert stats.written >= n_good + 2

    seqs = [r["seq"] for r in influx.series('SELECT "seq" FROM "snow_depth"', tag)]
    assert sorted(seqs) == list(range(n_good))
    water = influx.series('SELECT "register_l" FROM "water_meter"', tag)
    assert [r["register_l"] for r in water] == [100.0, 110.0]

    store = DeadLetterStore(tmp_path / "state" / "deadletter.sqlite")
    letters = store.list()
    assert [(d.topic, d.payload, d.reason) for d in letters[:-1]] == bad
    last = letters[-1]
    assert last.reason == "validation" and last.payload == batch
    assert "reading 1: register_l" in last.detail and "2 of 3 readings written" in last.detail
    expected_counts: dict[str, int] = {}
    for _, _, reason in [*bad, ("", b"", "validation")]:
        expected_counts[reason] = expected_counts.get(reason, 0) + 1
    assert store.counts() == expected_counts
    store.close()

    metric_rows = influx.series(
        'SELECT LAST("count") FROM "yukimizu_deadletter" GROUP BY reason', tag
    )
    assert {r["reason"]: r["last"] for r in metric_rows} == expected_counts


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        env={**os.environ, **env, "YUKIMIZU_CONFIG": str(REPO / "config" / "yukimizu.toml")},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=False,
    )


def test_deadletter_workflow_fix_registry_then_replay(
    tmp_path: Path, tag: str, mosquitto: Mosquitto, influx: InfluxDB1
) -> None:
    """A station installed before the registry was updated: its readings are kept as
    dead letters, and after the registry is fixed `deadletter replay` brings them in."""
    env = config_env(tmp_path, tag, mosquitto, influx.url)
    cfg = make_config(tmp_path, tag, mosquitto, influx.url)
    payloads = [good(i) for i in range(5)]
    with running_ingest(cfg) as ing, Publisher(cfg.mqtt) as pub:
        for p in payloads:
            pub.publish(f"{tag}/snow/ST11", p)
        pub.publish(f"{tag}/snow/ST01", b"not json")
        pub.flush()
        wait_for(lambda: ing.ingest.stats.deadlettered >= 6, what="dead letters")

    out = _cli(env, "deadletter", "list")
    assert out.returncode == 0, out.stderr
    assert "undecodable=1" in out.stdout and "unknown_device=5" in out.stdout
    assert out.stdout.count(f"{tag}/snow/ST11") == 5
    first_id = out.stdout.splitlines()[1].split()[0]
    shown = _cli(env, "deadletter", "show", first_id)
    assert "device 'ST11' is not in the registry" in shown.stdout
    assert payloads[0].decode() in shown.stdout
    assert _cli(env, "deadletter", "replay").returncode == 2  # must say which

    # The department adds the new station to the registry.
    stations = tmp_path / "stations.csv"
    shutil.copy(REPO / "config" / "stations.csv", stations)
    with stations.open("a", encoding="utf-8") as fh:
        fh.write("ST11,新設観測点,本町,38.381,140.201,300,laser,\n")
    fixed = make_config(
        tmp_path, tag, mosquitto, influx.url, overrides={"registry": {"stations": f'"{stations}"'}}
    )
    with running_ingest(fixed) as ing:
        replay = _cli(env, "deadletter", "replay", "--reason", "unknown_device")
        assert replay.returncode == 0, replay.stderr
        assert "replayed 5 of 5" in replay.stdout
        wait_for(lambda: count(influx, tag, "snow_depth", "seq") >= 5, what="replayed rows")
    rows = influx.series('SELECT "seq", "device" FROM "snow_depth"', tag)
    assert sorted(r["seq"] for r in rows) == list(range(5))
    assert {r["device"] for r in rows} == {"ST11"}

    remaining = _cli(env, "deadletter", "list")
    assert "unknown_device" not in remaining.stdout and "undecodable=1" in remaining.stdout
    purge = _cli(env, "deadletter", "purge", "--all")
    assert "purged 1 dead letters" in purge.stdout
    assert "no dead letters" in _cli(env, "deadletter", "list").stdout
