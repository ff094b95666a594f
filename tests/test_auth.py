"""A broker that requires a password: right credentials ingest, wrong ones are loud."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from core.publish import Publisher, PublishError
from devtools.localstack import InfluxDB1, Mosquitto
from tests.conftest import IngestThread, count, make_config, running_ingest, serve, wait_for


@pytest.fixture
def locked_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    passwd = tmp_path / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-c", "-b", str(passwd), "ingest", "s3cret"],
        check=True,
        capture_output=True,
    )
    conf = f"allow_anonymous false\npassword_file {passwd}\n"
    yield from serve(Mosquitto(tmp_path / "locked", extra_conf=conf))


def test_password_protected_broker(
    tmp_path: Path,
    tag: str,
    locked_broker: Mosquitto,
    influx: InfluxDB1,
    caplog: pytest.LogCaptureFixture,
) -> None:
    creds = {"username": '"ingest"', "password": '"s3cret"'}
    cfg = make_config(tmp_path, tag, locked_broker, influx.url, overrides={"mqtt": creds})
    with pytest.raises(PublishError, match="refused"):
        Publisher(make_config(tmp_path, tag, locked_broker, influx.url).mqtt)
    with running_ingest(cfg), Publisher(cfg.mqtt) as pub:
        pub.publish(
            f"{tag}/snow/ST01",
            json.dumps({"time": datetime.now(UTC).isoformat(), "depth_cm": 4.0, "seq": 1}).encode(),
        )
        wait_for(lambda: count(influx, tag, "snow_depth", "seq") >= 1, what="row")

    wrong = make_config(
        tmp_path / "w",
        tag,
        locked_broker,
        influx.url,
        overrides={
            "mqtt": {"username": '"ingest"', "password": '"nope"', "client_id": f'"wrong-{tag}"'}
        },
    )
    with caplog.at_level("ERROR"):
        it = IngestThread(wrong)
        it.thread.start()
        try:
            wait_for(lambda: "refused the connection" in caplog.text, what="loud refusal")
        finally:
            it.stop()
    assert "nope" not in caplog.text  # the password is never logged
