"""Private service instances: start/stop/kill/restart on the same port keep the data."""

from __future__ import annotations

import json
import os
import queue
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.domain.write_precision import WritePrecision
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from devtools import localstack as services
from devtools.localstack import (
    InfluxDB1,
    InfluxError,
    Mosquitto,
    VictoriaMetrics,
    free_port,
    pid_alive,
    port_open,
)
from tests.conftest import require_service_binaries


@pytest.fixture(autouse=True, scope="module")
def _service_binaries() -> None:
    # Fail, never skip, like every other test that needs the services (tests/conftest.py).
    require_service_binaries()


@pytest.fixture
def influx(tmp_path: Path) -> Iterator[InfluxDB1]:
    svc = InfluxDB1(tmp_path / "influxdb")
    svc.start()
    yield svc
    svc.stop()


@pytest.fixture
def vm(tmp_path: Path) -> Iterator[VictoriaMetrics]:
    svc = VictoriaMetrics(tmp_path / "vm")
    svc.start()
    yield svc
    svc.stop()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    svc = Mosquitto(tmp_path / "mosquitto")
    svc.start()
    yield svc
    svc.stop()


def test_free_port_is_bindable() -> None:
    port = free_port()
    assert 1024 < port < 65536
    assert not port_open("127.0.0.1", port)


# --------------------------------------------------------------------------- InfluxDB 1.x

T0 = 1_700_000_000_000  # 2023-11-14T22:13:20Z, in ms


def _raw_write(url: str, db: str, body: str) -> int:
    req = urllib.request.Request(
        f"{url}/write?db={db}&precision=ms", data=body.encode(), method="POST"
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        return int(resp.status)


def test_influx_stop_start_and_kill_keep_data(influx: InfluxDB1) -> None:
    influx.create_database("x")
    assert _raw_write(influx.url, "x", f"snow,device=s1 depth_cm=12.5 {T0}") == 204
    influx.write([f"snow,device=s1 depth_cm=13.0 {T0 + 60_000}"], db="x")
    port, pid = influx.port, influx.pid

    influx.stop()
    assert influx.pid is None and not pid_alive(pid or 0)
    assert not port_open(influx.host, port)
    influx.start()
    assert influx.port == port and influx.pid != pid
    rows = influx.series("SELECT depth_cm FROM snow", db="x")
    assert rows == [{"time": T0, "depth_cm": 12.5}, {"time": T0 + 60_000, "depth_cm": 13.0}]

    influx.kill()  # crash: the WAL must replay
    assert not port_open(influx.host, port)
    influx.start()
    assert influx.port == port
    assert len(influx.series("SELECT depth_cm FROM snow", db="x")) == 2
    dbs = influx.query("SHOW DATABASES")["results"][0]["series"][0]["values"]
    assert ["x"] in dbs and ["_internal"] not in dbs  # monitor store disabled


def test_influx_query_errors_raise(influx: InfluxDB1) -> None:
    with pytest.raises(InfluxError, match="error parsing query"):
        influx.query("SELEC nothing")
    with pytest.raises(InfluxError, match="database not found"):
        influx.query("SELECT * FROM m", db="nope")
    with pytest.raises(InfluxError, match="404"):
        influx.write("m v=1", db="nope")


# --------------------------------------------------------------------------- VictoriaMetrics


def test_vm_accepts_v2_write_and_keeps_old_data_across_restart(vm: VictoriaMetrics) -> None:
    with InfluxDBClient(url=vm.url, token="x", org="yukimizu") as client:
        client.write_api(write_options=SYNCHRONOUS).write(
            bucket="telemetry",
            record=[
                f"snow_depth,device=s1,district=north depth_cm=12.5 {T0}",
                f"snow_depth,device=s1,district=north depth_cm=14 {T0 + 600_000}",
            ],
            write_precision=WritePrecision.MS,
        )
    # T0 is years old: kept only thanks to -retentionPeriod=100y
    out = vm.export("snow_depth_depth_cm", min_samples=2)
    assert len(out) == 1
    assert out[0]["metric"] == {
        "__name__": "snow_depth_depth_cm",  # measurement_field; the bucket is not a label
        "device": "s1",
        "district": "north",
    }
    assert out[0]["values"] == [12.5, 14]
    assert out[0]["timestamps"] == [T0, T0 + 600_000]

    vm.stop()
    vm.start()
    assert vm.export("snow_depth_depth_cm", min_samples=2)[0]["timestamps"] == [
        T0,
        T0 + 600_000,
    ]


# --------------------------------------------------------------------------- Mosquitto


class _Client:
    """A paho MQTT v5 client with a persistent session, driven from the test thread."""

    def __init__(self, broker: Mosquitto, client_id: str) -> None:
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
        )
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.session_present: bool | None = None
        self.messages: queue.Queue[bytes] = queue.Queue()
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600
        self.client.connect(broker.host, broker.port, clean_start=False, properties=props)
        self.client.loop_start()
        assert self.connected.wait(5), "no CONNACK"

    def _on_connect(self, _c: Any, _u: Any, flags: Any, rc: Any, _p: Any) -> None:
        assert not rc.is_failure
        self.session_present = bool(flags.session_present)
        self.connected.set()

    def _on_subscribe(self, *_args: Any) -> None:
        self.subscribed.set()

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        self.messages.put(msg.payload)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_mosquitto_persistent_session_survives_restart(broker: Mosquitto) -> None:
    n = 1500  # more than mosquitto's default max_queued_messages (1000)
    sub = _Client(broker, "yukimizu-test-sub")
    sub.client.subscribe("yukimizu/test/#", qos=1)
    assert sub.subscribed.wait(5)
    sub.close()

    pub = _Client(broker, "yukimizu-test-pub")
    infos = [pub.client.publish("yukimizu/test/a", str(i).encode(), qos=1) for i in range(n)]
    for info in infos:
        info.wait_for_publish(10)
        assert info.is_published()
    pub.close()

    port, pid = broker.port, broker.pid
    broker.stop()  # clean shutdown saves the persistence file
    assert (broker.data_dir / "mosquitto.db").stat().st_size > 0
    broker.start()
    assert broker.port == port and broker.pid != pid

    sub = _Client(broker, "yukimizu-test-sub")
    try:
        assert sub.session_present is True
        got = [sub.messages.get(timeout=10) for _ in range(n)]
        assert got == [str(i).encode() for i in range(n)]
    finally:
        sub.close()


def test_mosquitto_kill_and_restart_same_port(broker: Mosquitto) -> None:
    port = broker.port
    broker.kill()
    assert not port_open(broker.host, port)
    broker.start()
    assert broker.port == port and services.mqtt_probe(broker.host, port)


def test_start_failure_reports_log_tail(tmp_path: Path) -> None:
    bad = Mosquitto(tmp_path / "bad", extra_conf="no_such_option 1")
    with pytest.raises(RuntimeError, match='Unknown configuration variable "no_such_option"'):
        bad.start()
    assert bad.pid is None


def test_start_refuses_busy_port(broker: Mosquitto, tmp_path: Path) -> None:
    other = InfluxDB1(tmp_path / "other", port=broker.port)
    with pytest.raises(RuntimeError, match="already in use"):
        other.start()


# --------------------------------------------------------------------------- CLI functions


def test_up_status_down(tmp_path: Path) -> None:
    root = tmp_path / "svc"
    try:
        first = services.up(root)
        assert set(first) == {"mosquitto", "influxdb", "victoria-metrics"}
        recorded = json.loads((root / "services.json").read_text())["services"]
        assert {k: v["pid"] for k, v in recorded.items()} == {k: v["pid"] for k, v in first.items()}
        for rec in first.values():
            assert os.getsid(rec["pid"]) == rec["pid"]  # own session: survives the CLI

        again = services.up(root)  # idempotent
        assert again == first
        st = services.status(root)
        assert [(s.name, s.port, s.running) for s in st] == [
            (k, v["port"], True) for k, v in first.items()
        ]

        assert sorted(services.down(root)) == sorted(first)
        assert not any(s.running for s in services.status(root))
        assert not any(pid_alive(v["pid"]) for v in first.values())

        ports = {k: v["port"] for k, v in services.up(root, vm_port=None).items()}
        assert ports == {k: first[k]["port"] for k in ("mosquitto", "influxdb")}
    finally:
        services.down(root)
