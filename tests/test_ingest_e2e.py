"""Every payload format, published with a real MQTT client through a real Mosquitto,
read back from a real InfluxDB with InfluxQL: exact values, tags and timestamps."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from core.nmea import sentence as nmea
from core.publish import Publisher
from devtools.localstack import InfluxDB1, Mosquitto, VictoriaMetrics
from tests.conftest import count, make_config, running_ingest, wait_for


def _ms(ts: str) -> int:
    return int(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1000)


NOW = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def iso(minutes: int) -> str:
    return (NOW + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def test_every_format_lands_in_influxdb_exactly(
    tmp_path: Path, tag: str, mosquitto: Mosquitto, influx: InfluxDB1
) -> None:
    cfg = make_config(tmp_path, tag, mosquitto, influx.url)
    rmc_time = NOW + timedelta(minutes=7)
    rmc = nmea(
        f"GPRMC,{rmc_time:%H%M%S}.00,A,3822.8000,N,14012.0000,E,10.0,90.0,{rmc_time:%d%m%y},,,A"
    )
    messages: list[tuple[str, bytes]] = [
        # native JSON, raw ultrasonic distance: ingest derives the depth
        (
            f"{tag}/snow/ST02",
            json.dumps(
                {
                    "time": iso(0),
                    "distance_mm": 2500.0,
                    "air_temp_c": -5.0,
                    "seq": 1,
                    "battery_v": 3.61,
                }
            ).encode(),
        ),
        # native JSON, depth given; epoch seconds
        (
            f"{tag}/snow/ST03",
            json.dumps(
                {
                    "time": int((NOW + timedelta(minutes=1)).timestamp()),
                    "depth_cm": 41.5,
                    "quality": 0,
                }
            ).encode(),
        ),
        # native batch: a meter's hourly register values in one message
        (
            f"{tag}/water/M001",
            json.dumps(
                {
                    "battery_v": 3.3,
                    "readings": [
                        {"time": iso(-120), "register_l": 123400},
                        {"time": iso(-60), "register_l": 123456},
                        {"time": iso(0), "register_l": 123460, "alarms": ["leak"]},
                    ],
                }
            ).encode(),
        ),
        # SenML, register as a sum in m3
        (
            f"{tag}/water/M002",
            json.dumps(
                [
                    {
                        "bn": "urn:dev:yukimizu:M002:",
                        "bt": (NOW + timedelta(minutes=2)).timestamp(),
                        "n": "volume",
                        "u": "m3",
                        "s": 12.5,
                    },
                    {"n": "battery", "u": "V", "v": 3.4},
                ]
            ).encode(),
        ),
        # SenML snow, depth in metres, temperature in Cel
        (
            f"{tag}/snow/ST04",
            json.dumps(
                [
                    {
                        "bn": "ST04/",
                        "bt": (NOW + timedelta(minutes=3)).timestamp(),
                        "n": "depth",
                        "u": "m",
                        "v": 0.25,
                    },
                    {"n": "temperature", "u": "Cel", "v": -3.5},
                ]
            ).encode(),
        ),
        # native plow JSON
        (
            f"{tag}/plow/P03",
            json.dumps(
                {"time": iso(4), "lat": 38.38, "lon": 140.2, "speed_kmh": 18.5, "blade_down": True}
            ).encode(),
        ),
        # NMEA RMC text (knots, ddmm.mmmm)
        (f"{tag}/plow/P02", rmc.encode()),
        # ChirpStack v4 uplink for a LoRaWAN meter (M001 has DevEUI 70B3D5E4A32AC06F)
        (
            f"{tag}-lora/application/7/device/70b3d5e4a32ac06f/event/up",
            json.dumps(
                {
                    "deduplicationId": "0b5a",
                    "time": iso(5),
                    "deviceInfo": {"devEui": "70b3d5e4a32ac06f", "deviceName": "m001"},
                    "fCnt": 42,
                    "fPort": 1,
                    "object": {"register_l": 123470.0, "battery_v": 3.29},
                    "rxInfo": [{"gatewayId": "g1", "rssi": -97}, {"gatewayId": "g2", "rssi": -88}],
                }
            ).encode(),
        ),
        # The Things Stack v3 uplink for a LoRaWAN plow (P01 has DevEUI 0004A39DF1EC229B)
        (
            f"{tag}-lora/v3/town@ttn/devices/plow-1/up",
            json.dumps(
                {
                    "end_device_ids": {"device_id": "plow-1", "dev_eui": "0004A39DF1EC229B"},
                    "received_at": iso(6),
                    "uplink_message": {
                        "f_cnt": 9,
                        "decoded_payload": {
                            "latitude": 38.39,
                            "longitude": 140.21,
                            "speed_kmh": 0.0,
                            "blade_down": False,
                        },
                        "rx_metadata": [{"rssi": -70}],
                    },
                }
            ).encode(),
        ),
    ]
    with running_ingest(cfg) as ing, Publisher(cfg.mqtt) as pub:
        for topic, payload in messages:
            pub.publish(topic, payload)
        pub.flush()
        wait_for(lambda: ing.ingest.stats.received >= len(messages), what="all received")
        wait_for(lambda: count(influx, tag, "plow_position", "lat") >= 3, what="plow rows")
        wait_for(lambda: count(influx, tag, "water_meter", "register_l") >= 5, what="water rows")
    assert ing.ingest.stats.deadlettered == 0, ing.ingest.deadletters

    def q(measurement: str) -> dict[tuple[str, int], dict[str, Any]]:
        rows = influx.series(f'SELECT * FROM "{measurement}"', tag)
        return {(r["device"], r["time"]): r for r in rows}

    snow = q("snow_depth")
    assert set(snow) == {("ST02", _ms(iso(0))), ("ST03", _ms(iso(1))), ("ST04", _ms(iso(3)))}
    st02 = snow[("ST02", _ms(iso(0)))]
    # 300 cm mount − 2500 mm × √(268.15/273.15) = 52.3 cm
    assert st02["depth_cm"] == 52.3
    assert st02["distance_mm"] == 2500.0 and st02["air_temp_c"] == -5.0
    assert st02["seq"] == 1 and st02["battery_v"] == 3.61 and st02["district"] == "中町"
    assert snow[("ST03", _ms(iso(1)))]["depth_cm"] == 41.5
    assert snow[("ST03", _ms(iso(1)))]["quality"] == 0
    assert snow[("ST04", _ms(iso(3)))]["depth_cm"] == 25.0
    assert snow[("ST04", _ms(iso(3)))]["air_temp_c"] == -3.5

    water = q("water_meter")
    assert {k: v["register_l"] for k, v in water.items()} == {
        ("M001", _ms(iso(-120))): 123400.0,
        ("M001", _ms(iso(-60))): 123456.0,
        ("M001", _ms(iso(0))): 123460.0,
        ("M002", _ms(iso(2))): 12500.0,
        ("M001", _ms(iso(5))): 123470.0,
    }
    assert water[("M001", _ms(iso(0)))]["alarm_leak"] is True
    assert water[("M001", _ms(iso(-60)))]["battery_v"] == 3.3
    assert water[("M002", _ms(iso(2)))]["battery_v"] == 3.4
    lora = water[("M001", _ms(iso(5)))]
    assert lora["rssi_dbm"] == -88.0 and lora["battery_v"] == 3.29

    plows = q("plow_position")
    p3 = plows[("P03", _ms(iso(4)))]
    assert (p3["lat"], p3["lon"], p3["speed_kmh"], p3["blade_down"]) == (38.38, 140.2, 18.5, True)
    assert p3["contractor"] == "朝日建設"
    p2 = plows[("P02", _ms(rmc_time.isoformat()))]
    assert abs(p2["lat"] - (38 + 22.8 / 60)) < 1e-9 and abs(p2["lon"] - (140 + 12 / 60)) < 1e-9
    assert abs(p2["speed_kmh"] - 18.52) < 1e-9 and p2["heading_deg"] == 90.0
    p1 = plows[("P01", _ms(iso(6)))]
    assert (p1["lat"], p1["lon"], p1["blade_down"], p1["rssi_dbm"]) == (38.39, 140.21, False, -70.0)

    # self-metrics arrive too
    metrics = influx.series('SELECT LAST("received") FROM "yukimizu_ingest"', tag)
    assert metrics and metrics[0]["last"] >= len(messages)


def test_v2_write_path_against_victoriametrics(
    tmp_path: Path, tag: str, mosquitto: Mosquitto, victoria: VictoriaMetrics
) -> None:
    cfg = make_config(tmp_path, tag, mosquitto, victoria.url, api="v2")
    t0 = int(NOW.timestamp() * 1000)
    with running_ingest(cfg) as ing, Publisher(cfg.mqtt) as pub:
        for i in range(50):
            ts = (NOW + timedelta(seconds=i)).isoformat()
            pub.publish(
                f"{tag}/snow/ST05",
                json.dumps({"time": ts, "depth_cm": 10.0 + i, "seq": i}).encode(),
            )
        pub.flush()
        wait_for(lambda: ing.ingest.stats.written >= 50, what="50 points written")
    series = victoria.export('snow_depth_depth_cm{device="ST05"}', min_samples=50)
    assert len(series) == 1
    s = series[0]
    assert s["metric"]["district"]
    assert s["timestamps"] == [t0 + i * 1000 for i in range(50)]
    assert s["values"] == [10.0 + i for i in range(50)]
