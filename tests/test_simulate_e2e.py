"""Every simulator output format, published through the real broker and ingested into
the real InfluxDB, yields exactly the points the processor derives from the stream."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from core.config import load_registry
from core.message import Message
from devtools.localstack import InfluxDB1, Mosquitto
from ingest.pipeline import Processor
from ingest.service import limits_from
from simulators.formats import WireFormat
from simulators.run import prefixes_from, publish
from simulators.scenario import load_scenario
from simulators.stream import Simulation
from tests.conftest import REPO, make_config, running_ingest, wait_for

ALWAYS = {"snow_depth": "depth_cm", "water_meter": "register_l", "plow_position": "lat"}


def _value(text: str) -> Any:
    if text in ("true", "false"):
        return text == "true"
    if text.endswith("i"):
        return int(text[:-1])
    return float(text)


def _parse(line: str) -> tuple[str, str, int, dict[str, Any]]:
    key, fields, ts = line.rsplit(" ", 2)
    measurement, *tags = key.split(",")
    device = dict(t.split("=", 1) for t in tags)["device"]
    values = {k: _value(v) for k, v in (f.split("=", 1) for f in fields.split(","))}
    return measurement, device, int(ts), values


def _count(influx: InfluxDB1, db: str) -> int:
    return sum(influx.count(m, f, db) for m, f in ALWAYS.items())


@pytest.mark.parametrize("fmt", ["native", "senml", "chirpstack", "ttn", "nmea"])
def test_simulated_format_lands_exactly(
    fmt: WireFormat, tmp_path: Path, tag: str, mosquitto: Mosquitto, influx: InfluxDB1
) -> None:
    cfg = make_config(tmp_path, tag, mosquitto, influx.url)
    scenario = load_scenario(REPO / "scenarios" / "storm-morning-fleet.toml")
    window = scenario.model_copy(
        update={
            "start": datetime.fromisoformat("2026-01-27T02:00:00+09:00"),
            "end": datetime.fromisoformat("2026-01-27T03:00:00+09:00"),
        }
    )
    registry = load_registry(cfg)
    processor = Processor(registry, limits_from(cfg))
    expected: dict[tuple[str, str, int], dict[str, Any]] = {}
    messages = 0
    for msg in Simulation(window, registry, fmt, prefixes_from(cfg)).messages():
        messages += 1
        result = processor.process(Message(msg.topic, msg.payload, msg.time + 1))
        assert result.reason is None, (msg.topic, result.detail)
        for line in result.lines:
            m, device, ts, values = _parse(line)
            values.pop("lag_s")  # sent now, simulated then: depends on the clock
            expected[(m, device, ts)] = values
    assert {m for m, _, _ in expected} == set(ALWAYS), "the window must hold all kinds"

    with running_ingest(cfg) as ing:
        summary = publish(Simulation(window, registry, fmt, prefixes_from(cfg)), cfg)
        assert summary.published == messages
        wait_for(
            lambda: _count(influx, tag) >= len(expected),
            timeout_s=60,
            what=f"{len(expected)} points",
        )
        assert ing.ingest.stats.deadlettered == 0
    got: dict[tuple[str, str, int], dict[str, Any]] = {}
    for m in ALWAYS:
        for row in influx.series(f'SELECT * FROM "{m}"', tag):
            values = {
                k: v
                for k, v in row.items()
                if k not in ("time", "device", "district", "contractor", "lag_s") and v is not None
            }
            got[(m, row["device"], row["time"])] = values
    assert got.keys() == expected.keys()
    for key, values in expected.items():
        assert got[key] == pytest.approx(values), key
