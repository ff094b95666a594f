"""The MQTT fast path: its decoder gives exactly what paho's gives, and it is fenced.

The fast path reaches into paho's internals (core/mqtt.py), so it runs only on the paho
releases in ``TESTED_PAHO_VERSIONS``. This module is what admits a release: install it,
run these tests and benchmarks/ingest.py, then add it there and widen the pin.
"""

from __future__ import annotations

import json
import random
import struct
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho import mqtt as paho_mqtt
from paho.mqtt import _packet
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.exception import MalformedPacket
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from core.config import ConfigError, MqttConfig
from core.message import Message
from core.mqtt import (
    QOS0_MAX_BACKLOG,
    TESTED_PAHO_VERSIONS,
    BufferedClient,
    MqttSource,
    fast_path_available,
    fast_publish_decode,
    fast_publish_decode_installed,
    fast_publish_decoder,
    install_fast_publish_decode,
    make_client,
    paho_version,
    uninstall_fast_publish_decode,
)
from core.publish import Publisher
from devtools.localstack import InfluxDB1, Mosquitto
from tests.conftest import count, make_config, running_ingest, wait_for


def _is_pahos(decoder: object) -> bool:
    # paho's own decode_publish is itself a functools.wraps wrapper, so names and
    # __wrapped__ do not tell it from ours: where its code lives does.
    code = getattr(decoder, "__code__", None)
    return code is not None and code.co_filename == _packet.__file__


PAHO_DECODE_PUBLISH = _packet.decode_publish
assert _is_pahos(PAHO_DECODE_PUBLISH), "paho's decoder was already patched at import"


def paho_decoder_in_place() -> bool:
    """paho decodes PUBLISH packets with its own function, not ours."""
    return _packet.decode_publish is PAHO_DECODE_PUBLISH and not fast_publish_decode_installed()


def _packet_bytes(topic: bytes, qos: int, mid: int, props: bytes, payload: bytes) -> bytes:
    out = struct.pack("!H", len(topic)) + topic
    if qos:
        out += struct.pack("!H", mid)
    return out + props + payload


def test_installed_paho_is_a_tested_version() -> None:
    assert paho_version() in TESTED_PAHO_VERSIONS, (
        f"paho-mqtt {paho_version()} is installed, but the fast path was only checked on "
        f"{sorted(TESTED_PAHO_VERSIONS)}: ingest falls back to plain paho. If the other "
        "tests in this module pass, add it to core/mqtt.py TESTED_PAHO_VERSIONS."
    )
    assert fast_path_available()


def test_fast_decoder_matches_paho_on_random_packets() -> None:
    original = _packet.decode_publish
    assert _is_pahos(original)
    fast = fast_publish_decoder(original)
    assert fast.__wrapped__ is original  # type: ignore[attr-defined]  # what it falls back to
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
                assert a.properties.json() == b.properties.json()
        # Truncated packets: the same result, or the same exception (MalformedPacket).
        cut = pkt[: rng.randint(0, len(pkt))]
        outcomes: list[object] = []
        for decode in (fast, original):
            try:
                r = decode(header, cut, MQTTProtocolVersion.MQTTv5)
                outcomes.append((r.dup, r.qos, r.retain, r.topic, r.mid, r.payload))
            except MalformedPacket as exc:
                outcomes.append(type(exc))
        assert outcomes[0] == outcomes[1], cut


def test_messages_with_and_without_properties_are_ingested(
    tmp_path: Path, tag: str, mosquitto: Mosquitto, influx: InfluxDB1
) -> None:
    cfg = make_config(tmp_path, tag, mosquitto, influx.url)
    t0 = datetime.now(UTC) - timedelta(hours=1)
    assert paho_decoder_in_place()
    with running_ingest(cfg) as ing:
        assert isinstance(ing.ingest.source, MqttSource) and ing.ingest.source.fast_path
        assert fast_publish_decode_installed()
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
    assert paho_decoder_in_place(), "the decode patch outlived the ingest that installed it"
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
    assert paho_decoder_in_place()
    with running_ingest(cfg) as ing:
        assert isinstance(ing.ingest.source, MqttSource) and not ing.ingest.source.fast_path
        assert paho_decoder_in_place()
        with Publisher(cfg.mqtt) as pub:
            for i in range(300):
                pub.publish(
                    f"{tag}/snow/ST01",
                    json.dumps(
                        {"time": (t0 + timedelta(seconds=i)).isoformat(), "depth_cm": 1.0, "seq": i}
                    ).encode(),
                )
        wait_for(lambda: count(influx, tag, "snow_depth", "seq") >= 300, what="300 rows")
        assert paho_decoder_in_place(), "plain paho ran with the fast decoder patched in"


def test_qos0_input_is_held_while_the_backlog_is_full(tmp_path: Path) -> None:
    got: list[Message] = []
    backlog = [QOS0_MAX_BACKLOG + 1]
    src = MqttSource(MqttConfig(), tmp_path, got.append, backlog=lambda: backlog[0])
    m = mqtt.MQTTMessage(mid=0, topic=b"yukimizu/snow/ST01")
    m.payload = b"{}"
    m.qos = 0
    # paho's network thread calls this callback; here a test thread stands in for it.
    t = threading.Thread(target=src._on_message, args=(None, None, m))  # noqa: SLF001
    t.start()
    t.join(0.3)
    assert t.is_alive() and got == []  # held: the worker is behind
    backlog[0] = 10
    t.join(5)
    assert not t.is_alive() and len(got) == 1


def test_decode_patch_is_counted_and_undone() -> None:
    assert paho_decoder_in_place()
    assert install_fast_publish_decode()
    assert install_fast_publish_decode()  # a second source in the same process
    assert _packet.decode_publish.__wrapped__ is PAHO_DECODE_PUBLISH  # type: ignore[attr-defined]
    uninstall_fast_publish_decode()
    assert fast_publish_decode_installed(), "removed while a user still held it"
    uninstall_fast_publish_decode()
    assert paho_decoder_in_place()
    with pytest.raises(RuntimeError, match="not installed"):
        uninstall_fast_publish_decode()
    with fast_publish_decode() as active:
        assert active and fast_publish_decode_installed()
    assert paho_decoder_in_place()


def test_untested_paho_version_falls_back_to_plain_paho_with_one_log_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(paho_mqtt, "__version__", "2.9.0")
    fast_path_available.cache_clear()
    try:
        with caplog.at_level("WARNING", logger="core.mqtt"):
            sources = [MqttSource(MqttConfig(), tmp_path, lambda _m: None) for _ in range(3)]
            assert not any(s.fast_path for s in sources)
            assert not install_fast_publish_decode()
            assert type(make_client(MqttConfig(), "x", fast=True)) is mqtt.Client
        assert paho_decoder_in_place()
        lines = [r.getMessage() for r in caplog.records if r.name == "core.mqtt"]
        assert len(lines) == 1, lines
        assert "paho-mqtt 2.9.0 is not a version the MQTT fast path was tested on" in lines[0]
    finally:
        monkeypatch.undo()
        fast_path_available.cache_clear()
    assert type(make_client(MqttConfig(), "x", fast=True)) is BufferedClient


def test_make_client_names_the_setting_when_the_ca_file_is_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"mqtt\.tls_ca_file: .*nope\.pem does not exist"):
        make_client(MqttConfig(tls_ca_file=tmp_path / "nope.pem"), "x")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=r"mqtt\.tls_ca_file: cannot load CA certificates"):
        make_client(MqttConfig(tls_ca_file=garbage), "x")
    # The publisher builds its client the same way.
    with pytest.raises(ConfigError, match=r"mqtt\.tls_ca_file"):
        Publisher(MqttConfig(tls_ca_file=tmp_path / "nope.pem"))
