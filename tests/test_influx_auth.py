"""InfluxDB 1.x with authentication: the v1 writer's credentials work, and wrong ones
keep the readings in the spool with a hint instead of losing them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core.publish import Publisher
from devtools.localstack import InfluxDB1, Mosquitto
from tests.conftest import make_config, running_ingest, wait_for


@pytest.fixture
def locked_influx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxDB1]:
    db = InfluxDB1(tmp_path_factory.mktemp("influx-auth"), auth_enabled=True)
    db.start()
    db.query("CREATE USER admin WITH PASSWORD 'adm1n' WITH ALL PRIVILEGES")
    db.credentials = ("admin", "adm1n")
    db.query("CREATE USER ingest WITH PASSWORD 'wr1te'")
    db.create_database("town")
    db.query('GRANT WRITE ON "town" TO "ingest"')
    yield db
    db.stop()


def test_v1_credentials_and_a_wrong_password(
    tmp_path: Path,
    tag: str,
    mosquitto: Mosquitto,
    locked_influx: InfluxDB1,
    caplog: pytest.LogCaptureFixture,
) -> None:
    base = {"database": '"town"', "username": '"ingest"', "create_database": "false"}
    t0 = datetime.now(UTC) - timedelta(hours=1)

    def payload(i: int) -> bytes:
        ts = (t0 + timedelta(seconds=i)).isoformat()
        return json.dumps({"time": ts, "depth_cm": 2.0, "seq": i}).encode()

    wrong = make_config(
        tmp_path / "wrong",
        tag,
        mosquitto,
        locked_influx.url,
        overrides={"influx": {**base, "password": '"nope"'}},
    )
    with caplog.at_level("WARNING"), running_ingest(wrong) as ing, Publisher(wrong.mqtt) as pub:
        for i in range(10):
            pub.publish(f"{tag}/snow/ST01", payload(i))
        wait_for(lambda: ing.ingest.spool.points >= 10, what="spooled, not lost")
    assert "InfluxDB answered 401" in caplog.text and "check influx.username" in caplog.text
    assert "nope" not in caplog.text

    # The operator fixes the password; the spooled readings go in with the new ones.
    right = make_config(
        tmp_path / "wrong",
        tag,
        mosquitto,
        locked_influx.url,
        overrides={"influx": {**base, "password": '"wr1te"'}},
    )
    with running_ingest(right), Publisher(right.mqtt) as pub:
        for i in range(10, 20):
            pub.publish(f"{tag}/snow/ST01", payload(i))
        wait_for(lambda: locked_influx.count("snow_depth", "seq", "town") >= 20, what="20 rows")
    rows = locked_influx.series('SELECT "seq" FROM "snow_depth"', "town")
    assert sorted(r["seq"] for r in rows) == list(range(20))
