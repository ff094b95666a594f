"""Direct unit tests of the payload decoders (ingest/decode.py): decoded values, not
just "no exception". The LoRaWAN cases use the real server uplinks in fixtures/lorawan.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from core import nmea
from core.config import load_config, load_registry
from core.message import Message
from ingest.decode import (
    LORAWAN_ALIASES,
    Rejected,
    Route,
    decode_chirpstack,
    decode_native,
    decode_nmea,
    decode_senml,
    decode_ttn,
    route_topic,
)
from ingest.pipeline import Limits, Processor
from ingest.reasons import Drop, Reason
from tests.conftest import SAMPLE_CONFIG

FIXTURES = Path(__file__).parent / "fixtures" / "lorawan"
NOW = 1_790_000_000.0  # 2026-09-21T14:13:20Z


def _rejected(reason: Reason, match: str, fn: Any, *args: Any) -> Rejected:
    with pytest.raises(Rejected, match=match) as info:
        fn(*args)
    assert info.value.reason is reason
    return info.value


# --- topics -------------------------------------------------------------------------


def test_route_topic() -> None:
    assert route_topic("yukimizu/snow/ST01", "yukimizu") == Route("native", "snow", "ST01")
    assert route_topic("town/a/water/M001", "town/a") == Route("native", "water", "M001")
    # LoRaWAN servers' topics, also under a bridge prefix
    assert route_topic("lora/application/17c8/device/70b3d5e4a32ac06f/event/up", "yukimizu") == (
        Route("chirpstack", None, "70b3d5e4a32ac06f")
    )
    assert route_topic("v3/town-plows@ttn/devices/plow-1/up", "yukimizu") == (
        Route("ttn", None, "plow-1")
    )
    _rejected(Reason.BAD_TOPIC, "expected yukimizu/", route_topic, "yukimizu/rain/R1", "yukimizu")
    _rejected(Reason.BAD_TOPIC, "expected yukimizu/", route_topic, "yukimizu/snow/", "yukimizu")
    _rejected(Reason.BAD_TOPIC, "no known scheme", route_topic, "other/snow/ST01", "yukimizu")


# --- native JSON and batch ----------------------------------------------------------


def test_native_single_reading_normalised() -> None:
    [item] = decode_native(
        b'{"device": "M001", "ts": "2026-12-01T18:00:00Z", "register_m3": 1234.567,'
        b' "flow_lph": 12, "alarms": ["leak", "low_battery"]}'
    )
    assert item.device == "M001"
    assert item.values == {
        "device": "M001",
        "time": "2026-12-01T18:00:00Z",  # ts is an alias of time
        "register_l": 1234567.0,  # not 1234567.0000000002
        "flow_lph": 12,
        "alarms": {"leak": True, "low_battery": True},
    }
    assert item.dev_eui is None and item.fcnt is None


def test_native_rejections() -> None:
    _rejected(Reason.INVALID_JSON, "unexpected end of data", decode_native, b'{"depth_cm": 1')
    _rejected(Reason.INVALID_JSON, "expected a JSON object, got int", decode_native, b"42")
    _rejected(Reason.UNDECODABLE, "binary", decode_native, b"\xff\xfe{")
    _rejected(
        Reason.VALIDATION, r"unknown alarm flags \['fire'\]", decode_native, b'{"alarms":["fire"]}'
    )


def test_native_batch_shares_top_level_fields() -> None:
    items = decode_native(
        b'{"battery_v": 3.3, "seq": 1, "readings": ['
        b'{"time": 1764547200, "register_l": 52310.0},'
        b'{"time": 1764550800, "register_l": 52342.0, "seq": 2}]}'
    )
    assert [i.values for i in items] == [
        {"battery_v": 3.3, "seq": 1, "time": 1764547200, "register_l": 52310.0},
        {"battery_v": 3.3, "seq": 2, "time": 1764550800, "register_l": 52342.0},
    ]
    _rejected(Reason.VALIDATION, "non-empty list", decode_native, b'{"readings": []}')
    _rejected(Reason.VALIDATION, "non-empty list", decode_native, b'{"readings": {}}')
    _rejected(
        Reason.VALIDATION,
        r"readings\[1\] is not an object",
        decode_native,
        b'{"readings": [{"register_l": 1}, 5]}',
    )


def test_native_json_array_is_senml() -> None:
    [item] = decode_native(b'[{"bt": 1764547200, "n": "depth", "u": "cm", "v": 42}]')
    assert item.values == {"time": 1764547200.0, "depth_cm": 42.0}


# --- SenML --------------------------------------------------------------------------


def _senml(doc: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"device": i.device, **i.values} for i in decode_senml(json.dumps(doc).encode(), NOW)]


def test_senml_base_fields_and_sum() -> None:
    got = _senml(
        [
            {
                "bn": "urn:dev:yukimizu:M002:",
                "bt": 1764547200,
                "bu": "m3",
                "bv": 0.5,
                "bs": 1.0,
                "n": "volume",
                "s": 1.5,
            },
            {"n": "flow", "u": "l/s", "v": 1.0},  # bv applies to v: (1.0 + 0.5) l/s
            {"n": "battery", "u": "V", "v": 3.0, "t": 60},  # another time: another reading
        ]
    )
    assert got == [
        # s + bs = 2.5 m3 = 2500 L
        {"device": "M002", "time": 1764547200.0, "register_l": 2500.0, "flow_lph": 5400.0},
        {"device": "M002", "time": 1764547260.0, "battery_v": 3.5},
    ]


def test_senml_relative_time_and_names() -> None:
    got = _senml(
        [
            {"n": "ST02/depth", "u": "m", "v": 1.25, "t": -60},
            {"n": "ST02/temp", "u": "K", "v": 268.15, "t": -60},
            {"n": "ST02/humidity", "u": "%RH", "v": 80, "t": -60},  # unknown: ignored
            {"n": "quality", "v": 79.6},
        ]
    )
    assert got == [
        {"device": "ST02", "time": NOW - 60, "depth_cm": 125.0, "air_temp_c": -5.0},
        {"device": None, "time": NOW, "quality": 80},  # int quantities are rounded
    ]


def test_senml_units() -> None:
    [values] = _senml(
        [
            {"bt": 1764547200, "n": "distance", "u": "m", "v": 2.48},
            {"n": "speed", "u": "m/s", "v": 10},
            {"n": "heading", "u": "rad", "v": 3.141592653589793},
            {"n": "rssi", "u": "dBW", "v": -130},
            {"n": "lat", "u": "lat", "v": 38.38},
            {"n": "lon", "v": 140.2},
            {"n": "blade", "vb": True},
            {"n": "leak", "vb": False},
        ]
    )
    assert values == {
        "device": None,
        "time": 1764547200.0,
        "distance_mm": 2480.0,
        "speed_kmh": 36.0,
        "heading_deg": 180.0,
        "rssi_dbm": -100.0,
        "lat": 38.38,
        "lon": 140.2,
        "blade_down": True,
        "alarms": {"leak": False},
    }


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ([], "empty SenML pack"),
        ([5], "record 0 is not an object"),
        ([{"v": 1}], "record 0 has no name"),
        ([{"n": "depth", "u": "ft", "v": 1}], "unit 'ft' not accepted"),
        ([{"n": "depth", "u": "cm", "v": "12"}], "expected numeric v or s"),
        ([{"n": "depth", "u": "cm", "vs": "12"}], "expected numeric v or s"),
        ([{"n": "depth", "u": "cm", "v": True}], "expected numeric v or s"),
        ([{"n": "blade", "v": 1}], "expected vb"),
        ([{"n": "depth", "u": "cm", "v": 1, "t": "now"}], "record 0: t is not a number"),
    ],
)
def test_senml_rejections(doc: list[Any], match: str) -> None:
    _rejected(Reason.VALIDATION, match, decode_senml, json.dumps(doc).encode(), NOW)


def test_senml_must_be_an_array() -> None:
    _rejected(Reason.VALIDATION, "JSON array", decode_senml, b'{"n": "depth"}', NOW)


# --- NMEA 0183 ----------------------------------------------------------------------


def test_nmea_checksum_known_sentence() -> None:
    # The textbook RMC example, whose checksum is 6A.
    body = "GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W"
    assert nmea.checksum(body) == 0x6A
    assert nmea.sentence(body) == f"${body}*6A"


def test_nmea_rmc_decoded() -> None:
    s = nmea.sentence("GNRMC,010203.50,A,3822.8000,N,14012.0000,E,10.0,90.5,020126,,,A")
    [item], drops = decode_nmea(s.encode() + b"\r\n")
    assert drops == []
    assert item.values == {
        "time": datetime(2026, 1, 2, 1, 2, 3, 500_000, tzinfo=UTC),
        "lat": pytest.approx(38.38),  # 38° 22.8'
        "lon": pytest.approx(140.2),  # 140° 12.0'
        "speed_kmh": pytest.approx(18.52),  # 10 knots
        "heading_deg": 90.5,
    }


def test_nmea_south_west_and_empty_speed() -> None:
    s = nmea.sentence("GPRMC,000000,A,3822.8000,S,14012.0000,W,,,311226,,,A")
    [item], _ = decode_nmea(s.encode())
    assert item.values["lat"] == pytest.approx(-38.38)
    assert item.values["lon"] == pytest.approx(-140.2)
    assert "speed_kmh" not in item.values and "heading_deg" not in item.values


def test_nmea_checksum_optional_but_verified() -> None:
    body = "GPRMC,000000,A,3822.8000,N,14012.0000,E,1.0,,311226,,,A"
    checksum = f"{nmea.checksum(body):02x}"  # lower-case hex is accepted
    assert len(decode_nmea(f"${body}*{checksum}".encode())[0]) == 1
    assert len(decode_nmea(f"${body}".encode())[0]) == 1  # no checksum: not checked
    corrupted = nmea.sentence(body).replace("3822", "3823")
    _rejected(Reason.NMEA, "line 1: checksum mismatch", decode_nmea, corrupted.encode())


def test_nmea_drops_and_rejections() -> None:
    void = nmea.sentence("GPRMC,000000,V,,,,,,,311226,,,N")
    gga = nmea.sentence("GPGGA,010203.50,3822.8000,N,14012.0000,E,1,08,0.9,545.4,M,46.9,M,,")
    items, drops = decode_nmea(f"{void}\r\n{gga}\r\n".encode())
    assert items == [] and drops == [Drop.INVALID_FIX, Drop.NMEA_OTHER_SENTENCE]
    _rejected(Reason.NMEA, "no NMEA sentences", decode_nmea, b"\r\n")
    _rejected(Reason.NMEA, "line 2: not an NMEA sentence", decode_nmea, b"\r\nhello")
    _rejected(Reason.NMEA, "need 10", decode_nmea, nmea.sentence("GPRMC,000000,A").encode())
    _rejected(Reason.UNDECODABLE, "not ASCII", decode_nmea, "$GPRMC,雪".encode())
    bad_date = nmea.sentence("GPRMC,000000,A,3822.8000,N,14012.0000,E,1.0,,321326,,,A")
    _rejected(Reason.NMEA, "line 1: ", decode_nmea, bad_date.encode())


# --- ChirpStack ---------------------------------------------------------------------


def test_chirpstack_v4_fixture() -> None:
    item = decode_chirpstack((FIXTURES / "chirpstack-v4-up.json").read_bytes())
    assert item.dev_eui == "70b3d5e4a32ac06f"
    assert item.fcnt == 0  # absent: protobuf JSON omits zero values
    assert item.values == {
        "register_l": 1203456.0,  # alias volume_m3
        "battery_v": 3.61,  # alias battery
        "alarms": {"leak": False, "reverse": False},
        "time": "2026-01-15T18:04:11.127394021+00:00",
        "rssi_dbm": -97.0,  # the better of the two gateways (-109, -97)
    }  # "fw" is not a field: ignored


def test_chirpstack_v3_fixture_base64_dev_eui_and_gateway_time() -> None:
    item = decode_chirpstack((FIXTURES / "chirpstack-v3-up.json").read_bytes())
    assert item.dev_eui == "70b3d5e4a32ac06f"  # "cLPV5KMqwG8=" decoded
    assert item.fcnt == 77
    assert item.values == {
        "register_l": 1203500.0,
        "battery_v": 3.6,
        "time": "2026-01-15T18:05:11.048445Z",  # no top-level time: the gateway's
        "rssi_dbm": -101.0,
    }


def test_chirpstack_eui_from_topic_aliases_and_integral_floats() -> None:
    doc = {"object": {"level": 12.5, "seq": 12.0, "quality": 80.5, "distance": 2480}}
    item = decode_chirpstack(
        json.dumps(doc).encode(), "a84041a04116be20", {**LORAWAN_ALIASES, "level": "depth_cm"}
    )
    assert item.dev_eui == "a84041a04116be20" and item.fcnt == 0
    # ChirpStack v4 writes codec integers as floats: 12.0 becomes the int 12 on purpose;
    # 80.5 is no integer and stays as sent (validation rejects it).
    assert item.values == {"depth_cm": 12.5, "seq": 12, "quality": 80.5, "distance_mm": 2480}
    assert type(item.values["seq"]) is int


def test_chirpstack_rejections() -> None:
    _rejected(
        Reason.NO_DECODED_PAYLOAD,
        "configure a payload codec",
        decode_chirpstack,
        b'{"deviceInfo": {"devEui": "70b3d5e4a32ac06f"}, "data": "AQID"}',
    )
    _rejected(
        Reason.VALIDATION,
        "without deviceInfo.devEui",
        decode_chirpstack,
        b'{"object": {"register_l": 1}}',
    )
    _rejected(Reason.INVALID_JSON, "JSON object", decode_chirpstack, b"[1]")


# --- The Things Stack v3 ------------------------------------------------------------


def test_tts_fixture_with_site_alias() -> None:
    payload = (FIXTURES / "tts-v3-up.json").read_bytes()
    item = decode_ttn(payload, "snow-yakuba")
    assert (item.device, item.dev_eui, item.fcnt) == ("snow-yakuba", "A84041A04116BE20", 5120)
    assert item.values == {
        "distance_mm": 3120,
        "battery_v": 3.55,
        "time": "2026-01-15T18:06:02.398Z",  # uplink_message.received_at
        "rssi_dbm": -88.0,
    }  # temperature_c and status are no fields without an alias
    site = {**LORAWAN_ALIASES, "temperature_c": "air_temp_c"}
    assert decode_ttn(payload, "snow-yakuba", site).values["air_temp_c"] == -6.5


def test_tts_simulated_uplink_f_cnt_absent_is_zero() -> None:
    item = decode_ttn((FIXTURES / "tts-v3-up-simulated.json").read_bytes(), "plow-1")
    assert item.fcnt == 0
    assert item.values == {
        "lat": 38.3811,
        "lon": 140.2033,
        "speed_kmh": 21.5,
        "blade_down": True,
        "time": "2026-01-15T18:07:00Z",  # top-level received_at
    }


def test_tts_best_rssi_and_rejections() -> None:
    doc = {
        "end_device_ids": {"device_id": "plow-1"},
        "uplink_message": {
            "f_cnt": 3,
            "decoded_payload": {"latitude": 38.38, "longitude": 140.2},
            "rx_metadata": [{"rssi": -110}, {"channel_rssi": -90}, {"rssi": True}, "x"],
        },
    }
    item = decode_ttn(json.dumps(doc).encode(), None)
    assert item.device == "plow-1" and item.dev_eui is None and item.fcnt == 3
    assert item.values == {"lat": 38.38, "lon": 140.2, "rssi_dbm": -90.0}
    _rejected(Reason.VALIDATION, "without end_device_ids", decode_ttn, b"{}", None)
    doc["uplink_message"] = {"frm_payload": "AA=="}
    _rejected(
        Reason.NO_DECODED_PAYLOAD, "The Things Stack", decode_ttn, json.dumps(doc).encode(), None
    )


# --- frame counters and DevEUI spellings (through the processor and the registry) ---


def test_retransmission_dropped_across_dev_eui_spellings() -> None:
    cfg = load_config(SAMPLE_CONFIG, environ={})
    proc = Processor(load_registry(cfg), Limits())
    topic = "application/1/device/70b3d5e4a32ac06f/event/up"

    def up(eui_field: dict[str, Any], fcnt: int | None) -> tuple[list[str], list[Drop]]:
        doc: dict[str, Any] = {
            **eui_field,
            "time": "2026-09-21T14:00:00Z",
            "object": {"register_l": 1000.0 + (fcnt or 0)},
        }
        if fcnt is not None:
            doc["fCnt"] = fcnt
        result = proc.process(Message(topic, json.dumps(doc).encode(), NOW))
        assert result.reason is None, result.detail
        return result.lines, result.drops

    # The registry spells M001's DevEUI 70B3D5E4A32AC06F; v4 sends lower-case hex,
    # ChirpStack v3 base64, some bridges dashes. All are one device, one counter.
    lines, drops = up({"deviceInfo": {"devEui": "70b3d5e4a32ac06f"}}, 7)
    assert lines and lines[0].startswith("water_meter,device=M001,") and drops == []
    assert up({"devEUI": "cLPV5KMqwG8="}, 7) == ([], [Drop.LORAWAN_RETRANSMISSION])
    assert up({"deviceInfo": {"devEui": "70-B3-D5-E4-A3-2A-C0-6F"}}, 7)[1] == [
        Drop.LORAWAN_RETRANSMISSION
    ]
    assert len(up({"deviceInfo": {"devEui": "70B3D5E4A32AC06F"}}, None)[0]) == 1  # absent: 0
    assert up({"deviceInfo": {"devEui": "70B3D5E4A32AC06F"}}, 0)[1] == [Drop.LORAWAN_RETRANSMISSION]
