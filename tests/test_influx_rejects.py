"""InfluxDB refusing some points (400) costs only those points, not their neighbours."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from core.publish import Publisher
from devtools.localstack import InfluxDB1, Mosquitto
from ingest.deadletter import Content, DeadLetterStore
from tests.conftest import count, make_config, running_ingest, wait_for


def test_field_type_conflict_dead_letters_only_the_conflicting_points(
    tmp_path: Path, tag: str, mosquitto: Mosquitto, influx: InfluxDB1
) -> None:
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    # An old flow once wrote register_l as a string: InfluxDB now refuses floats there.
    influx.create_database(tag)
    influx.write(f'water_meter,device=OLD register_l="12 m3" {int(t0.timestamp() * 1000)}', tag)
    cfg = make_config(tmp_path, tag, mosquitto, influx.url)
    meter_payload = json.dumps({"time": t0.isoformat(), "register_l": 100.0}).encode()
    with running_ingest(cfg) as ing, Publisher(cfg.mqtt) as pub:
        for i in range(300):
            ts = (t0 + timedelta(seconds=i)).isoformat()
            pub.publish(
                f"{tag}/snow/ST01", json.dumps({"time": ts, "depth_cm": 1.0, "seq": i}).encode()
            )
            if i == 150:
                pub.publish(f"{tag}/water/M001", meter_payload)
        pub.flush()
        wait_for(lambda: ing.ingest.stats.received >= 301, what="all received")
        wait_for(lambda: ing.ingest.stats.deadlettered >= 1, what="the rejected point")
        wait_for(lambda: count(influx, tag, "snow_depth", "seq") >= 300, what="neighbours")
    assert count(influx, tag, "snow_depth", "seq") == 300
    store = DeadLetterStore(tmp_path / "state" / "deadletter.sqlite")
    letters = store.list()
    store.close()
    assert len(letters) == 1
    assert letters[0].reason == "influx_rejected"
    assert letters[0].topic == f"{tag}/water/M001" and letters[0].payload == meter_payload
    assert letters[0].content == Content.PAYLOAD  # replay publishes it to its topic
    assert "field type conflict" in letters[0].detail
