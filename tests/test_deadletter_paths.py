"""A point InfluxDB refuses becomes one kind of dead letter, wherever it is refused.

Real Mosquitto and InfluxDB 1.x. The refusal is provoked as in
tests/test_influx_rejects.py: ``water_meter.register_l`` was once written as a
string, so InfluxDB refuses a float there (400, field type conflict). Each test takes
one road to that refusal (docs/delivery.md#dead-letters) and then checks what
``yukimizu deadletter replay`` does with the result (docs/delivery.md#replay).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from core.publish import Publisher
from devtools.localstack import InfluxDB1, Mosquitto
from ingest.deadletter import Content, DeadLetter, DeadLetterStore
from ingest.spool import Origin, Spool
from tests.conftest import (
    REPO,
    SAMPLE_CONFIG,
    config_env,
    count,
    make_config,
    running_ingest,
    wait_for,
)

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
T0_MS = int(T0.timestamp() * 1000)


def conflicting_database(influx: InfluxDB1, db: str) -> None:
    """A database where InfluxDB refuses float ``register_l`` points (it holds a string)."""
    influx.create_database(db)
    influx.write(f'water_meter,device=OLD register_l="12 m3" {T0_MS}', db)


def meter_payload(i: int = 0) -> bytes:
    return json.dumps({"time": T0_MS / 1000 + i, "register_l": 100.0 + i}).encode()


def snow_line(i: int) -> str:
    return f"snow_depth,device=ST01,district=本町 depth_cm={i % 300}.0,seq={i}i {T0_MS + i}"


def letters(tmp_path: Path) -> list[DeadLetter]:
    store = DeadLetterStore(tmp_path / "state" / "deadletter.sqlite")
    try:
        return store.list()
    finally:
        store.close()


def spooled_lines(tmp_path: Path) -> list[str]:
    """What the spool file holds now, read beside the running ingest (WAL)."""
    db = sqlite3.connect(tmp_path / "state" / "spool.sqlite")
    try:
        rows = db.execute("SELECT data FROM batches ORDER BY id").fetchall()
    finally:
        db.close()
    return [ln for (data,) in rows for ln in orjson.loads(zlib.decompress(data))["lines"]]


def yukimizu(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        env={**os.environ, **env, "YUKIMIZU_CONFIG": str(SAMPLE_CONFIG)},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_refused_while_the_spool_drains_keeps_the_device_payload_and_replays_it(
    tmp_path: Path, tag: str, mosquitto: Mosquitto, influx: InfluxDB1
) -> None:
    conflicting_database(influx, tag)
    env = config_env(tmp_path, tag, mosquitto, influx.url)
    cfg = make_config(tmp_path, tag, mosquitto, influx.url)
    topic = f"{tag}/water/M001"
    with running_ingest(cfg) as ing:
        influx.stop()
        try:
            with Publisher(cfg.mqtt) as pub:
                pub.publish(topic, meter_payload())
                snow = {"time": T0_MS / 1000, "depth_cm": 3.0, "seq": 1}
                pub.publish(f"{tag}/snow/ST01", json.dumps(snow).encode())
            wait_for(
                lambda: (
                    {ln.split(",")[0] for ln in spooled_lines(tmp_path)}
                    >= {"water_meter", "snow_depth"}
                ),
                what="both points spooled",
            )
            assert letters(tmp_path) == []
        finally:
            influx.start()
        wait_for(lambda: ing.ingest.spool.points == 0, what="spool drained")
        wait_for(lambda: ing.ingest.stats.deadlettered >= 1, what="the refused point")
        assert count(influx, tag, "snow_depth", "seq") == 1, "its neighbour is written"
        (letter,) = letters(tmp_path)
        assert letter.reason == "influx_rejected" and "field type conflict" in letter.detail
        assert (letter.topic, letter.payload, letter.content) == (
            topic,
            meter_payload(),
            Content.PAYLOAD,
        )

        # Replay publishes what the device sent; ingest takes it as a device message
        # again (decodes it, writes it, InfluxDB still refuses it: a new dead letter).
        received = ing.ingest.stats.received
        done = yukimizu(env, "deadletter", "replay", "--all")
        assert done.returncode == 0, done.stderr
        assert "replayed 1 of 1 dead letters to MQTT" in done.stdout
        wait_for(lambda: ing.ingest.stats.received == received + 1, what="replayed message")
        wait_for(lambda: ing.ingest.stats.deadlettered >= 2, what="refused again")
    (again,) = letters(tmp_path)
    assert again.id != letter.id
    assert (again.topic, again.payload, again.content) == (topic, meter_payload(), Content.PAYLOAD)


def test_refused_on_a_direct_write_while_the_spool_is_full_is_dead_lettered(
    tmp_path: Path, tag: str, mosquitto: Mosquitto, influx: InfluxDB1
) -> None:
    conflicting_database(influx, tag)
    # Left from an outage: far more spooled batches than one replay round (20 + 50)
    # drains, in a spool already over its bound. A new batch then cannot be spooled
    # and is written directly.
    n_batches, per_batch = 200, 5
    spool = Spool(tmp_path / "state" / "spool.sqlite", max_bytes=1 << 30)
    origin = [Origin(f"{tag}/snow/ST01", b"{}")]
    for b in range(n_batches):
        lines = [snow_line(b * per_batch + k) for k in range(per_batch)]
        spool.append(lines, [0] * per_batch, origin)
    # Each batch ~100 bytes: after the first rounds of replay the rest still exceeds 1 KiB.
    assert spool.bytes > 10 * 1024
    spool.close()
    cfg = make_config(
        tmp_path, tag, mosquitto, influx.url, overrides={"ingest": {"spool_max_bytes": "1024"}}
    )
    topic = f"{tag}/water/M001"
    with running_ingest(cfg) as ing, Publisher(cfg.mqtt) as pub:
        pub.publish(topic, meter_payload())
        pub.flush()
        wait_for(lambda: ing.ingest.stats.deadlettered >= 1, what="the refused point")
        # It went to InfluxDB directly: nothing was added to the (full) spool.
        assert ing.ingest.stats.spooled == 0
        wait_for(lambda: ing.ingest.spool.points == 0, what="old spool drained")
    assert count(influx, tag, "snow_depth", "seq") == n_batches * per_batch
    (letter,) = letters(tmp_path)
    assert letter.reason == "influx_rejected"
    assert (letter.topic, letter.payload, letter.content) == (
        topic,
        meter_payload(),
        Content.PAYLOAD,
    )


def test_point_from_an_old_spool_is_kept_as_line_protocol_and_replayed_to_influxdb(
    tmp_path: Path, tag: str, mosquitto: Mosquitto, influx: InfluxDB1
) -> None:
    conflicting_database(influx, tag)
    # A spool written by the version before payloads were kept: lines and topics only.
    bad = f"water_meter,device=M001,district=本町 register_l=100.0 {T0_MS + 1}"
    state = tmp_path / "state"
    state.mkdir()
    db = sqlite3.connect(state / "spool.sqlite")
    db.execute(
        "CREATE TABLE batches (id INTEGER PRIMARY KEY AUTOINCREMENT,"
        " points INTEGER NOT NULL, bytes INTEGER NOT NULL, data BLOB NOT NULL)"
    )
    doc = {"lines": [snow_line(0), bad], "topics": [f"{tag}/snow/ST01", f"{tag}/water/M001"]}
    data = zlib.compress(orjson.dumps(doc), 1)
    db.execute("INSERT INTO batches (points, bytes, data) VALUES (2, ?, ?)", (len(data), data))
    db.commit()
    db.close()

    env = config_env(tmp_path, tag, mosquitto, influx.url)
    cfg = make_config(tmp_path, tag, mosquitto, influx.url)
    with running_ingest(cfg) as ing:
        wait_for(lambda: ing.ingest.stats.deadlettered >= 1, what="the refused point")
        assert count(influx, tag, "snow_depth", "seq") == 1
        (letter,) = letters(tmp_path)
        assert letter.content == Content.LINE_PROTOCOL
        assert (letter.topic, letter.payload) == (f"{tag}/water/M001", bad.encode())

        listed = yukimizu(env, "deadletter", "list")
        assert "[line protocol]" in listed.stdout
        dry = yukimizu(env, "deadletter", "replay", "--all", "--dry-run")
        assert f"would write {letter.id} (line protocol) to InfluxDB" in dry.stdout

        # Still refused: kept, and never published to MQTT as a device payload.
        received = ing.ingest.stats.received
        kept = yukimizu(env, "deadletter", "replay", "--all")
        assert kept.returncode == 1
        assert "wrote 0 of 1 line-protocol dead letters" in kept.stdout
        assert "field type conflict" in kept.stderr
        assert [d.id for d in letters(tmp_path)] == [letter.id]

        # The cause fixed (here: a database without the old string field), it goes in.
        fixed_db = f"{tag}b"
        done = yukimizu(
            env | {"YUKIMIZU_INFLUX__DATABASE": f'"{fixed_db}"'},
            "deadletter",
            "replay",
            str(letter.id),
        )
        assert done.returncode == 0, done.stderr
        assert "wrote 1 of 1 line-protocol dead letters" in done.stdout
        assert letters(tmp_path) == []
        assert (
            influx.series('SELECT "register_l" FROM "water_meter"', fixed_db)[0]["register_l"]
            == 100.0
        )
        assert ing.ingest.stats.received == received, "line protocol went to MQTT"
