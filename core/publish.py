"""A flow-controlled QoS 1 MQTT publisher (dead-letter replay, simulators, benchmarks).

``core/publish.py`` and ``core/mqtt.py`` are the only modules of yukimizu that import
paho (docs/architecture.md#layers); the client itself, with credentials and TLS, comes
from :func:`core.mqtt.make_client`.

docs/architecture.md#publishing (measured): paho silently drops messages when more
than 65,535 are queued at once (the 16-bit packet-id space). This publisher keeps at
most ``window`` messages unacknowledged and waits for the broker's PUBACKs before
queueing more, so nothing is dropped however fast the caller is.
"""

from __future__ import annotations

import collections
import contextlib
import time
from collections.abc import Iterable
from types import TracebackType

import paho.mqtt.client as mqtt

from core.config import MqttConfig
from core.mqtt import make_client


class PublishError(RuntimeError):
    pass


class Publisher:
    """QoS 1 publisher with at most ``window`` messages awaiting PUBACK.

    Runs paho without its network thread: ``publish`` writes straight to the socket
    and reads PUBACKs every few messages. Measured here, that is about three times
    the rate of ``loop_start()``, where every publish wakes the network thread.
    Not thread-safe: one Publisher per thread.
    """

    def __init__(
        self,
        cfg: MqttConfig,
        client_id: str = "",
        *,
        window: int = 1_000,
        qos: int = 1,
        connect_timeout_s: float = 15.0,
        ack_timeout_s: float = 60.0,
    ) -> None:
        self.qos = qos
        self.window = window
        self.published = 0
        self.ack_timeout_s = ack_timeout_s
        self._pending: collections.deque[mqtt.MQTTMessageInfo] = collections.deque()
        self._since_loop = 0
        self._connected = False
        self._refused: str | None = None
        c = make_client(cfg, client_id)
        # paho's own in-flight limit scans every queued message on each PUBACK (measured:
        # 2.5k msg/s with 2,000, 7k without); our deque already bounds what is in flight.
        c.max_inflight_messages_set(0)
        c.max_queued_messages_set(0)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        self._client = c
        self._where = f"{cfg.host}:{cfg.port}"
        try:
            c.connect(cfg.host, cfg.port, keepalive=60)
        except OSError as exc:
            raise PublishError(f"cannot connect to MQTT {self._where}: {exc}") from exc
        deadline = time.monotonic() + connect_timeout_s
        while not self._connected and self._refused is None:
            if time.monotonic() > deadline:
                raise PublishError(f"MQTT {self._where} did not answer CONNECT")
            c.loop(0.05)
        if self._refused:
            raise PublishError(f"MQTT {self._where} refused the connection: {self._refused}")

    def _on_connect(
        self, _c: mqtt.Client, _u: object, _f: object, reason: object, _p: object
    ) -> None:
        if getattr(reason, "is_failure", False):
            self._refused = str(reason)
        else:
            self._connected = True

    def _on_disconnect(self, *_args: object) -> None:
        self._connected = False

    def _loop(self, timeout_s: float) -> None:
        rc = self._client.loop(timeout_s)
        if rc != mqtt.MQTT_ERR_SUCCESS or not self._connected:
            # Connection lost: reconnect; paho resends the unacknowledged messages.
            time.sleep(min(timeout_s, 0.5))
            with contextlib.suppress(OSError):  # broker still away: next _loop retries
                self._client.reconnect()
        self._collect()

    def _collect(self) -> None:
        pending = self._pending
        while pending and pending[0].is_published():
            pending.popleft()
            self.published += 1

    def publish(self, topic: str, payload: bytes | str, *, retain: bool = False) -> None:
        if len(self._pending) >= self.window:
            deadline = time.monotonic() + self.ack_timeout_s
            while len(self._pending) >= self.window:
                if time.monotonic() > deadline:
                    raise PublishError(f"broker did not acknowledge within {self.ack_timeout_s} s")
                self._loop(0.01)
        info = self._client.publish(topic, payload, qos=self.qos, retain=retain)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            raise PublishError(f"publish to {topic} failed: {mqtt.error_string(info.rc)}")
        if self.qos == 0:
            self.published += 1
        else:
            self._pending.append(info)
        self._since_loop += 1
        if self._since_loop >= 100:  # read PUBACKs (and keepalive) now and then
            self._since_loop = 0
            self._loop(0)

    def flush(self) -> None:
        """Wait until the broker has acknowledged everything published so far."""
        deadline = time.monotonic() + self.ack_timeout_s
        while self._pending:
            if time.monotonic() > deadline:
                raise PublishError(
                    f"broker did not acknowledge {len(self._pending)} messages "
                    f"within {self.ack_timeout_s} s"
                )
            self._loop(0.05)

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._client.disconnect()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        if et is None:
            self.close()
        else:
            self._client.disconnect()


def publish_many(cfg: MqttConfig, items: Iterable[tuple[str, bytes]]) -> int:
    """Publish (topic, payload) pairs with QoS 1; returns how many the broker acknowledged."""
    with Publisher(cfg) as pub:
        for topic, payload in items:
            pub.publish(topic, payload)
        pub.flush()
        return pub.published
