"""Uplinks in the full shape real LoRaWAN servers send (ChirpStack v4 and v3 JSON,
The Things Stack v3, a TTS console-simulated uplink), with the extras, omitted zero
values and vendor field names that come with them."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from core.config import ConfigError, load_config, load_registry
from core.message import Message
from ingest.pipeline import Processor
from ingest.service import limits_from
from tests.conftest import SAMPLE_CONFIG, without_lag

FIXTURES = Path(__file__).parent / "fixtures" / "lorawan"
RECEIVED = datetime.fromisoformat("2026-01-15T18:10:00+00:00").timestamp()


@pytest.fixture(scope="module")
def proc() -> Processor:
    # The town's snow-station codec says temperature_c; the config maps it.
    cfg = load_config(
        SAMPLE_CONFIG,
        environ={"YUKIMIZU_INGEST__LORAWAN_ALIASES": '{temperature_c = "air_temp_c"}'},
    )
    return Processor(load_registry(cfg), limits_from(cfg))


@pytest.mark.parametrize(
    ("fixture", "topic", "expected"),
    [
        (
            "chirpstack-v4-up.json",
            "application/17c8/device/70b3d5e4a32ac06f/event/up",
            "water_meter,device=M001,district=本町 battery_v=3.61,rssi_dbm=-97.0,alarm_leak=false,"
            "alarm_reverse=false,register_l=1203456.0 1768500251127",
        ),
        (
            "chirpstack-v3-up.json",
            "application/123/device/70b3d5e4a32ac06f/event/up",
            "water_meter,device=M001,district=本町 battery_v=3.6,rssi_dbm=-101.0,"
            "register_l=1203500.0 1768500311048",
        ),
        (
            "tts-v3-up.json",
            "v3/town-snow@ttn/devices/snow-yakuba/up",
            "snow_depth,device=ST01,district=本町 battery_v=3.55,rssi_dbm=-88.0,depth_cm=88.0,"
            "distance_mm=3120.0,air_temp_c=-6.5 1768500362398",
        ),
        (
            "tts-v3-up-simulated.json",
            "v3/town-plows@ttn/devices/plow-1/up",
            "plow_position,contractor=町直営,device=P01 lat=38.3811,lon=140.2033,speed_kmh=21.5,"
            "blade_down=true 1768500420000",
        ),
    ],
)
def test_real_server_uplinks(proc: Processor, fixture: str, topic: str, expected: str) -> None:
    payload = (FIXTURES / fixture).read_bytes()
    result = proc.process(Message(topic, payload, RECEIVED))
    assert result.reason is None, result.detail
    assert [without_lag(line) for line in result.lines] == [expected]
    assert ",lag_s=" in result.lines[0]  # the arrival delay rides along


def test_unknown_alias_target_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="lorawan_aliases maps to unknown fields"):
        load_config(
            SAMPLE_CONFIG, environ={"YUKIMIZU_INGEST__LORAWAN_ALIASES": '{temperature_c = "temp"}'}
        )
