"""The fast PUBLISH decoder gives exactly what paho's own decoder gives."""

from __future__ import annotations

import json
import random
import struct
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt import _packet
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from core.config import MqttConfig
from core.message import Message
from core.mqtt import QOS0_MAX_BACKLOG, MqttSource, install_fast_publish_decode
from core.publish import Publisher
from devtools.localstack import InfluxDB1, Mosquitto
from tests.conftest import count, make_config, running_ingest, wait_for


def _packet_bytes(topic: bytes, qos: int, mid: int, props: bytes, payload: bytes) -> bytes:
    out = struct.pack("!H", len(topic)) + topic
    if qos:
        out += struct.pack("!H", mid)
    return out + props + payload


def test_fast_decoder_matches_paho_on_random_packets() -> None:
    assert install_fast_publish_decode()
    fast = _packet.decode_publish
    original = fast._original  # type: ignore[attr-defined]
    rng = random.Random(7)
    with_props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    with_props.UserProperty = ("k", "v")
    with_props.ContentType = "application/json"
    encoded_props = with_props.pack()  # type: ignore[no-untyped-call]
    for i in range(2000):
        qos = rng.choice([0, 1, 2])
        topic = "".join(rng.choice("abc/é雪") for _ in range(rng.randint(1, 30))).encode()
        payload = rng.randbytes(rng.randint(0, 300))
        props = encoded_props if i % 3 == 0 else b"\x00"
        pkt = _packet_bytes(topic, qos, rng.randint(1, 65535), props, payload)
        header = 0x30 | (qos << 1) | rng.choice([0, 8]) | rng.choice([0, 1])
        for proto in (MQTTProtocolVersion.MQTTv5, MQTTProtocolVersion.MQTTv311):
            p = (
                pkt
                if proto == MQTTProtocolVersion.MQTTv5
                else _packet_bytes(topic, qos, 1, b"", payload)
            )
            a, b = fast(header, p, proto), original(header, p, proto)
            assert (a.dup, a.qos, a.retain, a.topic, a.mid, a.payload) == (
                b.dup,
                b.qos,
                b.retain,
                b.topic,
                b.mid,
                b.payload,
            )
            if proto == MQTTProtocolVersion.MQTTv5:
                assert a.properties is not None and b.properties is not None
                assert a.properties.json() == b.properties.json()  # type: ignore[no-untyped-call]


def test_messages_with_and_without_properties_are_ingested(
    tmp_path: Path, tag: str, mosquitto: Mosquitto, influx: InfluxDB1
) -> None:
    cfg = make_config(tmp_path, tag, mosquitto, influx.url)
    t0 = datetime.now(UTC) - timedelta(hours=1)
    with running_ingest(cfg):
        c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        c.connect("127.0.0.1", mosquitto.port)
        c.loop_start()
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.UserProperty = ("gateway", "gw-1")
        props.MessageExpiryInterval = 3600
        infos = []
        for i in range(20):
            payload = json.dumps(
                {"time": (t0 + timedelta(seconds=i)).isoformat(), "depth_cm": 3.0, "seq": i}
            )
            infos.append(
                c.publish(f"{tag}/snow/ST01", payload, qos=1, properties=props if i % 2 else None)
            )
        for info in infos:
            info.wait_for_publish(10)
        c.disconnect()
        c.loop_stop()
        wait_for(lambda: count(influx, tag, "snow_depth", "seq") >= 20, what="20 rows")
    rows = influx.series('SELECT "seq" FROM "snow_depth"', tag)
    assert sorted(r["seq"] for r in rows) == list(range(20))


def test_plain_paho_path_still_works(
    tmp_path: Path, tag: str, mosquitto: Mosquitto, influx: InfluxDB1
) -> None:
    """mqtt.paho_fast_path = false: the way back if a paho upgrade breaks the fast path."""
    cfg = make_config(
        tmp_path, tag, mosquitto, influx.url, overrides={"mqtt": {"paho_fast_path": "false"}}
    )
    t0 = datetime.now(UTC) - timedelta(hours=1)
    with running_ingest(cfg) as ing:
        assert type(ing.ingest.source._client) is mqtt.Client  # type: ignore[attr-defined]
        with Publisher(cfg.mqtt) as pub:
            for i in range(300):
                pub.publish(
                    f"{tag}/snow/ST01",
                    json.dumps(
                        {"time": (t0 + timedelta(seconds=i)).isoformat(), "depth_cm": 1.0, "seq": i}
                    ).encode(),
                )
        wait_for(lambda: count(influx, tag, "snow_depth", "seq") >= 300, what="300 rows")


def test_qos0_input_is_held_while_the_backlog_is_full(tmp_path: Path) -> None:
    got: list[Message] = []
    backlog = [QOS0_MAX_BACKLOG + 1]
    src = MqttSource(MqttConfig(), tmp_path, got.append, backlog=lambda: backlog[0])
    m = mqtt.MQTTMessage(mid=0, topic=b"yukimizu/snow/ST01")
    m.payload = b"{}"
    m.qos = 0
    t = threading.Thread(target=src._on_message, args=(None, None, m))
    t.start()
    t.join(0.3)
    assert t.is_alive() and got == []  # held: the worker is behind
    backlog[0] = 10
    t.join(5)
    assert not t.is_alive() and len(got) == 1
