"""Fixtures: real Mosquitto, InfluxDB 1.x and VictoriaMetrics on free loopback ports.

The services are started once per test session in a temporary directory; each test
gets its own topic prefix, database, MQTT client id and state directory, so tests do
not see each other's data.
"""

from __future__ import annotations

import itertools
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from core.config import Config, load_config
from core.mqtt import MqttSource
from devtools.localstack import InfluxDB1, Mosquitto, Service, VictoriaMetrics, ensure_installed
from devtools.processes import IngestNotReady, IngestProcess
from ingest.service import Ingest

REPO = Path(__file__).resolve().parent.parent
SAMPLE_CONFIG = REPO / "config" / "yukimizu.toml"
_counter = itertools.count(1)


def wait_for(
    predicate: Callable[[], Any], timeout_s: float = 30.0, interval_s: float = 0.1, what: str = ""
) -> Any:
    """Poll until predicate() is truthy; fail the test with ``what`` on timeout."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval_s)
    pytest.fail(f"timed out after {timeout_s} s waiting for {what or predicate} (last: {last!r})")


def require_service_binaries() -> None:
    """Fail (never skip) without Mosquitto/InfluxDB/VictoriaMetrics: a CI run that skipped
    the service tests would pass without having tested anything real."""
    missing = ensure_installed()
    if missing:
        pytest.fail(
            f"missing service binaries (Debian packages {' '.join(missing)}): "
            "run `bash scripts/setup.sh`",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def services_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_service_binaries()
    return tmp_path_factory.mktemp("services")


S = TypeVar("S", bound=Service)


def serve(svc: S) -> Iterator[S]:
    svc.start()
    yield svc
    svc.stop()


@pytest.fixture(scope="session")
def mosquitto(services_dir: Path) -> Iterator[Mosquitto]:
    yield from serve(Mosquitto(services_dir / "mosquitto"))


@pytest.fixture(scope="session")
def influx(services_dir: Path) -> Iterator[InfluxDB1]:
    yield from serve(InfluxDB1(services_dir / "influxdb"))


@pytest.fixture(scope="session")
def victoria(services_dir: Path) -> Iterator[VictoriaMetrics]:
    yield from serve(VictoriaMetrics(services_dir / "victoria-metrics"))


@pytest.fixture
def tag() -> str:
    """A unique name for this test's topics, database and client id."""
    return f"t{os.getpid()}x{next(_counter)}"


def config_env(
    tmp_path: Path,
    tag: str,
    mosquitto: Mosquitto,
    influx_url: str,
    *,
    api: str = "v1",
    overrides: dict[str, dict[str, str]] | None = None,
) -> dict[str, str]:
    """Environment overrides pointing the sample config at the test services.

    ``overrides`` values are TOML literals, e.g. ``{"ingest": {"batch_size": "100"}}``.
    """
    env = {
        "YUKIMIZU_MQTT__PORT": str(mosquitto.port),
        "YUKIMIZU_MQTT__TOPIC_PREFIX": f'"{tag}"',
        "YUKIMIZU_MQTT__CLIENT_ID": f'"ingest-{tag}"',
        "YUKIMIZU_MQTT__LORAWAN_TOPICS": (
            f'["{tag}-lora/application/+/device/+/event/up", "{tag}-lora/v3/+/devices/+/up"]'
        ),
        "YUKIMIZU_INFLUX__URL": f'"{influx_url}"',
        "YUKIMIZU_INFLUX__DATABASE": f'"{tag}"',
        "YUKIMIZU_INGEST__STATE_DIR": f'"{tmp_path / "state"}"',
        "YUKIMIZU_INGEST__METRICS_INTERVAL_S": "1.0",
        "YUKIMIZU_INGEST__RETRY_INTERVAL_S": "0.5",
    }
    if api == "v2":
        env.update(
            {
                "YUKIMIZU_INFLUX__API": '"v2"',
                "YUKIMIZU_INFLUX__ORG": '"town"',
                "YUKIMIZU_INFLUX__BUCKET": f'"{tag}"',
                "YUKIMIZU_INFLUX__TOKEN": '"test-token"',
            }
        )
    for section, values in (overrides or {}).items():
        for key, value in values.items():
            env[f"YUKIMIZU_{section.upper()}__{key.upper()}"] = value
    return env


def make_config(
    tmp_path: Path,
    tag: str,
    mosquitto: Mosquitto,
    influx_url: str,
    *,
    api: str = "v1",
    overrides: dict[str, dict[str, str]] | None = None,
) -> Config:
    """The sample config pointed at the test services, with per-test names."""
    env = config_env(tmp_path, tag, mosquitto, influx_url, api=api, overrides=overrides)
    return load_config(SAMPLE_CONFIG, environ=env)


class IngestThread:
    """An in-process ingest for tests; ``stop()`` runs the real shutdown path."""

    def __init__(self, cfg: Config) -> None:
        self.ingest = Ingest(cfg)
        self.stop_event = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="ingest", daemon=True)

    def _run(self) -> None:
        try:
            self.ingest.run(self.stop_event)
        except BaseException as exc:  # reported by stop(), never swallowed
            self.error = exc
            raise

    def start(self, timeout_s: float = 15.0) -> IngestThread:
        """Start, and return once ingest is ready: subscribed (SUBACK), not just connected."""
        self.thread.start()
        if isinstance(self.ingest.source, MqttSource):  # a fake source has no broker
            self.wait_ready(timeout_s)
        return self

    def wait_ready(self, timeout_s: float = 15.0) -> None:
        source = self.ingest.source
        assert isinstance(source, MqttSource)
        wait_for(
            lambda: source.ready.is_set() or source.subscribe_error or not self.thread.is_alive(),
            timeout_s=timeout_s,
            what="ingest subscribed (SUBACK)",
        )
        if not source.ready.is_set():
            pytest.fail(f"ingest did not become ready: {self.error or source.subscribe_error!r}")

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(60)
        assert not self.thread.is_alive(), "ingest did not stop within 60 s"
        if self.error is not None:
            raise AssertionError(f"ingest thread failed: {self.error!r}") from self.error


@contextmanager
def running_ingest(cfg: Config) -> Iterator[IngestThread]:
    it = IngestThread(cfg).start()
    try:
        yield it
    finally:
        it.stop()


def ingest_subprocess(config_env: dict[str, str], log_path: Path) -> IngestProcess:
    """``yukimizu ingest`` as a separate process, returned once it is ready (subscribed)."""
    env = {**config_env, "YUKIMIZU_CONFIG": str(SAMPLE_CONFIG)}
    try:
        return IngestProcess(env, log_path).start()
    except IngestNotReady as exc:
        pytest.fail(str(exc))


def count(influx: InfluxDB1, db: str, measurement: str, field: str) -> int:
    return influx.count(measurement, field, db)


_LAG = re.compile(r",lag_s=[0-9.e+-]+(?= )")


def without_lag(line: str) -> str:
    """A line without its ``lag_s`` field (the arrival delay depends on the clock)."""
    return _LAG.sub("", line)
