"""A flow-controlled QoS 1 MQTT publisher (dead-letter replay, simulators, benchmarks).

ARCHITECTURE.md (measured): paho silently drops messages when more than 65,535
are queued at once (the 16-bit packet-id space). This publisher keeps at most
``window`` messages unacknowledged and waits for the broker's PUBACKs before
queueing more, so nothing is dropped however fast the caller is.
"""

from __future__ import annotations

import collections
import ssl
import threading
import time
from collections.abc import Iterable
from types import TracebackType

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from ingest.config import MqttConfig


class PublishError(RuntimeError):
    pass


class Publisher:
    def __init__(
        self,
        cfg: MqttConfig,
        client_id: str = "",
        window: int = 2_000,
        qos: int = 1,
        connect_timeout_s: float = 15.0,
    ) -> None:
        self.qos = qos
        self.window = window
        self.published = 0
        self._pending: collections.deque[mqtt.MQTTMessageInfo] = collections.deque()
        self._connected = threading.Event()
        self._refused: str | None = None
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
        )
        if cfg.username:
            secret = cfg.password.get_secret_value() if cfg.password else None
            c.username_pw_set(cfg.username, secret)
        if cfg.tls_ca_file:
            c.tls_set(ca_certs=str(cfg.tls_ca_file), cert_reqs=ssl.CERT_REQUIRED)
        c.max_inflight_messages_set(window)
        c.max_queued_messages_set(0)
        c.on_connect = self._on_connect
        self._client = c
        try:
            c.connect(cfg.host, cfg.port, keepalive=60)
        except OSError as exc:
            raise PublishError(f"cannot connect to MQTT {cfg.host}:{cfg.port}: {exc}") from exc
        c.loop_start()
        if not self._connected.wait(connect_timeout_s) or self._refused:
            c.loop_stop()
            raise PublishError(
                f"MQTT {cfg.host}:{cfg.port} did not accept the connection: "
                f"{self._refused or 'timeout'}"
            )

    def _on_connect(
        self, _c: mqtt.Client, _u: object, _f: object, reason: object, _p: object
    ) -> None:
        if getattr(reason, "is_failure", False):
            self._refused = str(reason)
        self._connected.set()

    def publish(self, topic: str, payload: bytes | str) -> None:
        while len(self._pending) >= self.window:
            self._wait_oldest()
        info = self._client.publish(topic, payload, qos=self.qos)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            raise PublishError(f"publish to {topic} failed: {mqtt.error_string(info.rc)}")
        if self.qos == 0:
            self.published += 1
        else:
            self._pending.append(info)

    def _wait_oldest(self, timeout_s: float = 60.0) -> None:
        info = self._pending[0]
        deadline = time.monotonic() + timeout_s
        while not info.is_published():
            if time.monotonic() > deadline:
                raise PublishError(f"broker did not acknowledge within {timeout_s} s")
            info.wait_for_publish(timeout=0.5)
        self._pending.popleft()
        self.published += 1

    def flush(self) -> None:
        """Wait until the broker has acknowledged everything published so far."""
        while self._pending:
            self._wait_oldest()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._client.disconnect()
            self._client.loop_stop()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        if et is None:
            self.close()
        else:
            self._client.disconnect()
            self._client.loop_stop()


def publish_many(cfg: MqttConfig, items: Iterable[tuple[str, bytes]]) -> int:
    """Publish (topic, payload) pairs with QoS 1; returns how many the broker acknowledged."""
    with Publisher(cfg) as pub:
        for topic, payload in items:
            pub.publish(topic, payload)
        pub.flush()
        return pub.published
