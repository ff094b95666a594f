"""MQTT transport: paho-mqtt 2.x behind a small adapter.

Only this module imports paho. It delivers :class:`ingest.pipeline.Message` objects
to a callback and takes acks back through :meth:`MqttSource.ack`.

Delivery rules (see ARCHITECTURE.md):

* MQTT v5, fixed client id, ``clean_start=False`` and a session expiry, so the
  broker keeps queueing while ingest is down.
* ``manual_ack=True``: paho would otherwise acknowledge before our callback runs,
  and a crash would lose the message. The pipeline acks only once the reading is
  durable, in arrival order (MQTT-4.6.0-2).
* ReceiveMaximum larger than a batch, or the broker stops sending mid-batch.
* Acks carry the connection generation: after a reconnect the broker resends every
  unacked message with its original packet id, so an ack from the old connection
  is dropped (the resent copy will be acked instead); otherwise it could ack a
  different message that reuses the packet id.
"""

from __future__ import annotations

import logging
import ssl
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho import mqtt as paho_mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from core.config import MqttConfig
from core.message import Message

log = logging.getLogger(__name__)

QOS0_MAX_BACKLOG = 100_000  # messages waiting for the worker before QoS 0 input is held

_EMPTY_PUBLISH_PROPERTIES = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]


class BufferedClient(mqtt.Client):
    """paho's Client, reading its socket in 64 KiB chunks and draining it per wake-up.

    Measured (py-spy on benchmarks/ingest.py): for a client that only receives,
    paho 2.2 reads one packet per select() wake-up (``loop_read`` reads as many
    packets as it has outbound messages in flight, at least one) and each packet
    with three or more recv() calls (1 byte command, the length byte by byte, the
    body). Here every wake-up reads until the socket would block, from a local
    buffer. The buffer is always emptied before returning to select(), so no data
    can sit unseen; it is dropped on reconnect.
    """

    _rbuf: bytes = b""
    _rpos: int = 0

    def reconnect(self) -> MQTTErrorCode:
        self._rbuf, self._rpos = b"", 0
        return super().reconnect()

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._rpos >= len(self._rbuf):
            data = super()._sock_recv(65536)
            if not data:
                return data  # connection closed
            self._rbuf, self._rpos = data, 0
        start = self._rpos
        self._rpos = min(start + bufsize, len(self._rbuf))
        return self._rbuf[start : self._rpos]

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        n = 0
        while True:
            if self._sock is None:
                return MQTTErrorCode.MQTT_ERR_NO_CONN
            rc = self._packet_read()
            if rc > 0:
                return self._loop_rc_handle(rc)
            if rc == MQTTErrorCode.MQTT_ERR_AGAIN:
                return MQTTErrorCode.MQTT_ERR_SUCCESS
            n += 1
            # Give writes (acks, pings) a turn now and then, but never leave
            # buffered bytes behind: select() would not report them.
            if n >= 2_000 and self._rpos >= len(self._rbuf):
                return MQTTErrorCode.MQTT_ERR_SUCCESS


def _client_class() -> type[mqtt.Client]:
    """BufferedClient where paho's internals are the ones it was checked against."""
    needed = ("_sock_recv", "_packet_read", "_loop_rc_handle", "loop_read", "reconnect")
    if all(hasattr(mqtt.Client, n) for n in needed) and _paho_version().startswith("2."):
        return BufferedClient
    return mqtt.Client


def _paho_version() -> str:
    return str(getattr(paho_mqtt, "__version__", ""))


def install_fast_publish_decode() -> bool:
    """Skip paho's per-message Properties parsing for PUBLISH packets without properties.

    Measured (benchmarks/ingest.py, py-spy): paho 2.2 builds and parses a fresh
    ``Properties`` object for every MQTT v5 PUBLISH, about 40 % of ingest's CPU per
    message, although device messages almost never carry properties. Packets whose
    property length is zero get a shared, empty Properties object (paho only reads
    it, and ingest never looks at it); every other packet takes paho's own decoder.
    Only applied to the paho versions this was checked against; returns whether it
    is active. tests/test_mqtt_decode.py proves the output equal to paho's.
    """
    try:
        # Optional private module: absent on other paho builds, then no fast path.
        from paho.mqtt import _packet  # noqa: PLC0415
    except ImportError:
        return False
    if getattr(_packet.decode_publish, "_yukimizu_fast", False):
        return True
    version = str(getattr(paho_mqtt, "__version__", ""))
    if not version.startswith("2.") or not hasattr(_packet, "PublishPacket"):
        return False
    original = _packet.decode_publish
    v5 = MQTTProtocolVersion.MQTTv5
    unpack_h = struct.Struct("!H").unpack_from

    def decode_publish(header: int, packet: bytes | bytearray, protocol: Any) -> Any:
        if protocol == v5 and len(packet) >= 2:
            (slen,) = unpack_h(packet)
            qos = (header & 0x06) >> 1
            off = 2 + slen + (2 if qos else 0)
            if len(packet) > off and packet[off] == 0:  # property length 0
                return _packet.PublishPacket(
                    dup=(header & 0x08) != 0,
                    qos=qos,
                    retain=(header & 0x01) != 0,
                    topic=bytes(packet[2 : 2 + slen]),
                    mid=unpack_h(packet, 2 + slen)[0] if qos else 0,
                    properties=_EMPTY_PUBLISH_PROPERTIES,
                    payload=bytes(packet[off + 1 :]),
                )
        return original(header, packet, protocol)

    decode_publish._yukimizu_fast = True  # type: ignore[attr-defined]
    decode_publish._original = original  # type: ignore[attr-defined]
    _packet.decode_publish = decode_publish
    return True


class MqttSource:
    """Subscribes to the configured topics and hands messages to ``deliver``."""

    def __init__(
        self,
        cfg: MqttConfig,
        state_dir: Path,
        deliver: Callable[[Message], None],
        backlog: Callable[[], int] | None = None,
    ) -> None:
        self.cfg = cfg
        self._deliver = deliver
        self._backlog = backlog
        self._marker = state_dir / f"mqtt-session-{_safe(cfg.client_id)}"
        self._generation = 0
        self._paused = False
        self.connected = threading.Event()
        self.connects = 0
        self.reconnects = 0
        self.session_lost = 0
        self.last_error: str | None = None
        client_class = _client_class() if cfg.paho_fast_path else mqtt.Client
        client = client_class(
            CallbackAPIVersion.VERSION2,
            client_id=cfg.client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        if cfg.username:
            client.username_pw_set(
                cfg.username, cfg.password.get_secret_value() if cfg.password else None
            )
        if cfg.tls_ca_file:
            client.tls_set(ca_certs=str(cfg.tls_ca_file), cert_reqs=ssl.CERT_REQUIRED)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        client.on_message = self._on_message
        self._client = client
        if cfg.paho_fast_path and install_fast_publish_decode():
            log.debug("paho fast path active: %s", client_class.__name__)

    def topics(self) -> list[str]:
        base = [f"{self.cfg.topic_prefix}/#", *self.cfg.lorawan_topics]
        if self.cfg.shared_group:
            return [f"$share/{self.cfg.shared_group}/{t}" for t in base]
        return base

    def start(self) -> None:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.cfg.session_expiry_s
        props.ReceiveMaximum = self.cfg.receive_maximum
        self._client.connect_async(
            self.cfg.host,
            self.cfg.port,
            keepalive=self.cfg.keepalive_s,
            clean_start=False,
            properties=props,
        )
        self._client.loop_start()

    def pause(self) -> None:
        """Stop handing over messages; those arriving now stay unacked and are resent."""
        self._paused = True

    def ack(self, token: Any) -> None:
        generation, mid, qos = token
        if generation == self._generation and qos > 0:
            self._client.ack(mid, qos)

    def stop(self) -> None:
        """Disconnect normally: the broker keeps the session (and our subscriptions)."""
        try:
            self._client.disconnect()
        finally:
            self._client.loop_stop()

    # --- paho callbacks: run on paho's network thread; they must never raise ---

    def _on_connect(self, client: mqtt.Client, _u: Any, flags: Any, reason: Any, _p: Any) -> None:
        try:
            if reason.is_failure:
                self.last_error = str(reason)
                log.error(
                    "MQTT broker %s:%s refused the connection: %s",
                    self.cfg.host,
                    self.cfg.port,
                    reason,
                )
                return
            self._generation += 1
            self.connects += 1
            if self.connects > 1:
                self.reconnects += 1
            had_session = self._marker.exists()
            if had_session and not flags.session_present:
                self.session_lost += 1
                log.error(
                    "MQTT SESSION LOST: broker %s:%s had no session for client id %r. "
                    "Messages published while ingest was away may be missing (broker "
                    "restarted without persistence, or session expired after %d s).",
                    self.cfg.host,
                    self.cfg.port,
                    self.cfg.client_id,
                    self.cfg.session_expiry_s,
                )
            opts = SubscribeOptions(qos=self.cfg.qos)
            client.subscribe([(t, opts) for t in self.topics()])
            self._marker.parent.mkdir(parents=True, exist_ok=True)
            self._marker.touch()
            log.info(
                "connected to MQTT %s:%s as %r (session present: %s), subscribed to %s",
                self.cfg.host,
                self.cfg.port,
                self.cfg.client_id,
                flags.session_present,
                ", ".join(self.topics()),
            )
            self.connected.set()
        except Exception:  # a raise here would kill paho's network thread
            log.exception("error in MQTT on_connect")

    def _on_connect_fail(self, _c: mqtt.Client, _u: Any) -> None:
        self.last_error = "connection failed"
        log.warning(
            "cannot reach the MQTT broker at %s:%s; retrying (up to every 30 s)",
            self.cfg.host,
            self.cfg.port,
        )

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self.connected.clear()
        if reason is not None and getattr(reason, "value", 0) != 0:
            log.warning("MQTT connection lost (%s); paho reconnects", reason)

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if self._paused:
            return
        if msg.qos == 0 and self._backlog is not None:
            # QoS 1/2 deliveries are bounded by ReceiveMaximum; QoS 0 ones are not.
            # Hold paho's thread (TCP backpressure) rather than queue without limit.
            while self._backlog() > QOS0_MAX_BACKLOG and not self._paused:
                time.sleep(0.01)
        try:
            self._deliver(
                Message(
                    msg.topic, bytes(msg.payload), time.time(), (self._generation, msg.mid, msg.qos)
                )
            )
        except Exception:
            log.exception("error handing over MQTT message on %s", msg.topic)


def _safe(client_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in client_id)
