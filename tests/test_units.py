"""Unit tests of the pure stages: decoders, processor, line protocol, spool, dead letters."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from core.config import load_config, load_registry
from core.message import Message
from core.nmea import sentence as nmea_sentence
from ingest.deadletter import DeadLetterStore, Letter
from ingest.lineproto import EncodeError, encode
from ingest.pipeline import Limits, Processor
from ingest.reasons import Reason
from ingest.spool import Origin, Spool
from tests.conftest import SAMPLE_CONFIG, without_lag

NOW = 1_790_000_000.0  # 2026-09-21T14:13:20Z: ingest's clock in these tests


@pytest.fixture(scope="module")
def proc() -> Processor:
    cfg = load_config(SAMPLE_CONFIG, environ={})
    return Processor(
        load_registry(cfg), Limits(lat_min=38.355, lat_max=38.405, lon_min=140.165, lon_max=140.235)
    )


def run(
    p: Processor, topic: str, payload: object, now: float = NOW
) -> tuple[list[str], str | None, str, list[str]]:
    raw = (
        payload
        if isinstance(payload, bytes)
        else (payload.encode() if isinstance(payload, str) else json.dumps(payload).encode())
    )
    r = p.process(Message(topic, raw, now))
    return r.lines, r.reason, r.detail, list(r.drops)


def test_senml_relative_time_base_value_and_units(proc: Processor) -> None:
    lines, reason, detail, _ = run(
        proc,
        "yukimizu/water/M002",
        [
            {"bn": "M002:", "bs": 1.0, "n": "volume", "u": "m3", "s": 1.5, "t": -60},
            {"n": "flow", "u": "m3/s", "v": 0.0001, "t": -60},
            {"n": "humidity", "u": "%RH", "v": 50, "t": -60},
        ],
    )
    assert reason is None, detail
    assert lines == [
        f"water_meter,device=M002,district=中町 register_l=2500.0,"
        f"flow_lph=360.0,lag_s=60.0 {int((NOW - 60) * 1000)}"
    ]


def test_senml_device_mismatch_and_bad_unit(proc: Processor) -> None:
    _, reason, detail, _ = run(
        proc,
        "yukimizu/water/M002",
        [{"bn": "urn:dev:yukimizu:M003:", "n": "volume", "u": "l", "v": 1}],
    )
    assert reason == "validation" and "names device 'M003'" in detail
    _, reason, detail, _ = run(proc, "yukimizu/snow/ST01", [{"n": "depth", "u": "ft", "v": 1}])
    assert reason == "validation" and "unit 'ft' not accepted" in detail


def test_nmea_south_west_is_out_of_town_and_speed_converted(proc: Processor) -> None:
    s = nmea_sentence("GPRMC,010203.50,A,3822.8000,S,14012.0000,W,1.0,0,020126,,,A")
    _, reason, _, _ = run(proc, "yukimizu/plow/P01", s)
    assert reason == "out_of_area"
    s = nmea_sentence("GNRMC,010203.50,A,3822.8000,N,14012.0000,E,1.0,,020126,,,A")
    gga = nmea_sentence("GPGGA,010203.50,3822.8000,N,14012.0000,E,1,08,0.9,545.4,M,46.9,M,,")
    lines, reason, _, drops = run(proc, "yukimizu/plow/P01", f"{gga}\r\n{s}\r\n")
    assert reason is None and drops == ["nmea_other_sentence"]
    assert [without_lag(line) for line in lines] == [
        "plow_position,contractor=町直営,device=P01 lat=38.38,lon=140.2,"
        "speed_kmh=1.852 1767315723500"
    ]


def test_lorawan_retransmission_dropped_rejoin_accepted() -> None:
    cfg = load_config(SAMPLE_CONFIG, environ={})
    p = Processor(load_registry(cfg), Limits())

    def up(fcnt: int, reg: float) -> tuple[list[str], str | None, str, list[str]]:
        return run(
            p,
            "application/1/device/70b3d5e4a32ac06f/event/up",
            {
                "deviceInfo": {"devEui": "70-B3-D5-E4-A3-2A-C0-6F"},
                "fCnt": fcnt,
                "time": "2026-09-21T14:00:00Z",
                "object": {"volume_m3": reg},
            },
        )

    assert len(up(10, 1.0)[0]) == 1
    assert up(10, 1.0)[3] == ["lorawan_retransmission"]
    assert len(up(11, 1.1)[0]) == 1
    assert len(up(0, 1.2)[0]) == 1  # rejoined: counter restarts


def test_register_units_rollover_and_alarm_list(proc: Processor) -> None:
    # M002 counts in m3 with 6 digits: raw 'register' is in its own unit.
    lines, reason, _, _ = run(
        proc,
        "yukimizu/water/M002",
        {"time": NOW - 10, "register": 12.345, "alarms": ["burst", "dry"]},
    )
    assert reason is None
    assert "register_l=12345.0" in lines[0]
    assert "alarm_burst=true" in lines[0] and "alarm_dry=true" in lines[0]
    _, reason, detail, _ = run(
        proc, "yukimizu/water/M002", {"time": NOW - 10, "register_m3": 2_000_000}
    )
    assert reason == "validation" and "6-digit register" in detail
    _, reason, detail, _ = run(
        proc, "yukimizu/water/M002", {"time": NOW - 10, "register_l": 1, "alarms": ["fire"]}
    )
    assert reason == "validation" and "unknown alarm flags ['fire']" in detail


def test_snow_depth_derivation_clamps_noise_rejects_nonsense(proc: Processor) -> None:
    # ST02: mount height 300 cm. 3,020 mm at 0 °C is −2 cm: bare ground with noise.
    lines, reason, _, _ = run(proc, "yukimizu/snow/ST02", {"time": NOW - 5, "distance_mm": 3020})
    assert reason is None and "depth_cm=0.0" in lines[0]
    _, reason, detail, _ = run(proc, "yukimizu/snow/ST02", {"time": NOW - 5, "distance_mm": 3500})
    assert reason == "validation" and "mount height" in detail
    _, reason, detail, _ = run(proc, "yukimizu/snow/ST02", {"time": NOW - 5, "quality": 1})
    assert reason == "validation" and "depth_cm or distance_mm" in detail


def test_timestamps(proc: Processor) -> None:
    ok = run(proc, "yukimizu/snow/ST01", {"time": NOW + 299, "depth_cm": 1})
    assert ok[1] is None
    assert run(proc, "yukimizu/snow/ST01", {"time": NOW + 301, "depth_cm": 1})[1] == (
        "future_timestamp"
    )
    assert run(proc, "yukimizu/snow/ST01", {"time": 86400, "depth_cm": 1})[1] == "bad_timestamp"
    ms = run(proc, "yukimizu/snow/ST01", {"time": int(NOW * 1000) - 1, "depth_cm": 1})[0]
    assert ms[0].endswith(f" {int(NOW * 1000) - 1}")
    jst = run(proc, "yukimizu/snow/ST01", {"time": "2026-09-21T23:00:00+09:00", "depth_cm": 1})
    assert jst[0][0].endswith(" 1789999200000")  # 14:00Z


def test_processor_never_raises_on_garbage(proc: Processor) -> None:
    for payload in [
        b"{}",
        b"[]",
        b"[1,2]",
        b'{"readings": 5}',
        b'{"readings": [1]}',
        b"null",
        b"123",
        b'"str"',
        b'[{"n": 5}]',
        b'{"time": null, "depth_cm": null}',
        b"$",
        b"$GPRMC",
        b"\xef\xbb\xbf{}",
        b'{"alarms": "leak"}',
        b'{"time": "2026-09-21T14:00:00Z", "depth_cm": 1e400}',
    ]:
        for topic in [
            "yukimizu/snow/ST01",
            "yukimizu/plow/P01",
            "application/1/device/x/event/up",
            "v3/a@t/devices/d/up",
        ]:
            lines, reason, detail, _ = run(proc, topic, payload)
            assert reason is not None and reason != "internal_error", (topic, payload, detail)
            assert lines == []


def test_line_protocol_escaping_and_pinned_types() -> None:
    line = encode(
        "snow_depth",
        {"device": "A B,C=D", "district": "本町"},
        {"depth_cm": 12, "seq": 3, "quality": None},
        5,
    )
    assert line == r"snow_depth,device=A\ B\,C\=D,district=本町 depth_cm=12.0,seq=3i 5"
    assert encode("snow_depth", {"device": "x"}, {"depth_cm": float("nan"), "seq": 1}, 1) == (
        "snow_depth,device=x seq=1i 1"
    )
    with pytest.raises(EncodeError, match="field 'seq': expected an integer"):
        encode("snow_depth", {"device": "x"}, {"seq": 1.5}, 1)
    with pytest.raises(EncodeError, match="unknown field"):
        encode("snow_depth", {"device": "x"}, {"depth": 1.0}, 1)
    with pytest.raises(EncodeError, match="no fields"):
        encode("snow_depth", {"device": "x"}, {"depth_cm": None}, 1)


def test_spool_is_durable_ordered_and_bounded(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite"
    s = Spool(path, max_bytes=600)
    msgs = [Origin("t/a", b"{}"), Origin("t/b", b"\x00\xff"), Origin("t/unused", b"x")]
    s.append(["a 1", "b 2", "self 3"], [0, 1, -1], msgs)
    s.append(["c 3"], [0], [Origin("t/c", b"[]")])
    s.close()
    s = Spool(path, max_bytes=600)  # reopened: as after a restart
    assert (s.batches, s.points) == (2, 4)
    first = s.oldest()
    assert first is not None
    assert first.lines == ["a 1", "b 2", "self 3"] and first.sources == [0, 1, -1]
    assert first.origins == msgs[:2], "payloads come back byte for byte, unused ones dropped"
    s.remove(first.id)
    second = s.oldest()
    assert second is not None and second.lines == ["c 3"]
    for i in range(50):
        s.append([f"line {i} " + "x" * 50], [0], [Origin("t", b"p")])
        if not s.has_room():
            break
    assert not s.has_room()
    s.close()


def test_dead_letter_store_roundtrip(tmp_path: Path) -> None:
    st = DeadLetterStore(tmp_path / "dl.sqlite")
    assert (
        st.add_many(
            [
                Letter("t/1", Reason.INVALID_JSON, "x", b"\x00\xff"),
                Letter("t/2", Reason.TOO_LARGE, "y", b"z"),
            ]
        )
        == 2
    )
    assert st.counts() == {"invalid_json": 1, "too_large": 1}
    assert [d.payload for d in st.list()] == [b"\x00\xff", b"z"]
    assert st.delete(reason="too_large") == 1
    assert st.delete(before=time.time() + 1) == 1
    assert st.list() == []
    st.close()


def test_temperature_correction_only_for_ultrasonic(proc: Processor) -> None:
    # ST01 is a laser station (mount 400 cm): light does not care about air temperature.
    lines, reason, _, _ = run(
        proc, "yukimizu/snow/ST01", {"time": NOW - 5, "distance_mm": 2500, "air_temp_c": -10.0}
    )
    assert reason is None and "depth_cm=150.0" in lines[0]


def test_m3_conversion_has_no_float_noise(proc: Processor) -> None:
    lines, _, _, _ = run(proc, "yukimizu/water/M002", {"time": NOW - 5, "register_m3": 1234.567})
    assert "register_l=1234567.0,lag_s=5.0 " in lines[0]
