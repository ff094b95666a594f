"""MQTT transport: every paho-mqtt client of yukimizu is built here.

``core/mqtt.py`` and ``core/publish.py`` are the only modules of yukimizu that import
paho (docs/architecture.md#layers; tests and benchmarks also use paho directly, to
measure and to check against it). :func:`make_client` is the one place a paho client
is configured from :class:`~core.config.MqttConfig` (client id, MQTT v5, credentials,
TLS); :class:`MqttSource` delivers :class:`core.message.Message` objects to a callback
and takes acks back through :meth:`MqttSource.ack`.

Delivery rules (docs/architecture.md#mqtt, docs/delivery.md#mqtt-session):

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
* Ready means subscribed: :attr:`MqttSource.ready` is set, and the line
  :func:`ready_marker` logged, only once the broker's SUBACK granted every topic.

The fast path (:class:`BufferedClient`, :func:`install_fast_publish_decode`) reaches
into paho's private reader methods and its private ``_packet`` module. It is fenced:
it runs only on the paho versions in :data:`TESTED_PAHO_VERSIONS` (pyproject.toml pins
the same release line), any other version gets plain paho and one log line, and every
reach into paho's privates carries a ``paho-private`` comment
(``grep -n paho-private core/mqtt.py``; tests/test_mqtt_ready.py checks the fence).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import paho.mqtt.client as mqtt
from paho import mqtt as paho_mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from core.config import ConfigError, MqttConfig
from core.message import Message

try:
    # paho-private: the module holding decode_publish; absent on other paho builds.
    from paho.mqtt import _packet as paho_packet
except ImportError:  # then no fast decoder: fast_path_available() says so once
    paho_packet = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

QOS0_MAX_BACKLOG = 100_000  # messages waiting for the worker before QoS 0 input is held

# The paho releases the fast path has been checked against: tests/test_mqtt_decode.py
# (fast decoder output equal to paho's, ingest end to end on both paths) and
# benchmarks/ingest.py. To admit another release: install it, run both, add it here
# and widen the paho-mqtt pin in pyproject.toml.
TESTED_PAHO_VERSIONS: Final = frozenset({"2.2.0"})

# paho.mqtt.Client members BufferedClient overrides or calls (paho-private but for
# loop_read and reconnect): all must exist, or the fast path stays off.
_PAHO_READER_MEMBERS: Final = ("_sock_recv", "_packet_read", "_loop_rc_handle", "loop_read")

_EMPTY_PUBLISH_PROPERTIES = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]


def paho_version() -> str:
    return str(getattr(paho_mqtt, "__version__", ""))


@functools.cache
def fast_path_available() -> bool:
    """Whether this paho is one the fast path was tested on; logs once per process if not."""
    version = paho_version()
    complete = (
        paho_packet is not None
        and hasattr(paho_packet, "decode_publish")  # paho-private
        and hasattr(paho_packet, "PublishPacket")  # paho-private
        and all(hasattr(mqtt.Client, name) for name in _PAHO_READER_MEMBERS)  # paho-private
    )
    if version in TESTED_PAHO_VERSIONS and complete:
        return True
    log.warning(
        "paho-mqtt %s is not a version the MQTT fast path was tested on (%s): using plain "
        "paho (slower receive, same results)",
        version or "(unknown version)",
        ", ".join(sorted(TESTED_PAHO_VERSIONS)),
    )
    return False


def make_client(
    cfg: MqttConfig,
    client_id: str,
    *,
    manual_ack: bool = False,
    fast: bool = False,
) -> mqtt.Client:
    """A paho client for ``cfg``: MQTT v5, callback API 2, credentials and TLS.

    ``fast``: a :class:`BufferedClient` where :func:`fast_path_available`. Raises
    :class:`~core.config.ConfigError` naming ``mqtt.tls_ca_file`` when the CA file is
    missing or unusable: paho would only fail later, with a bare ``FileNotFoundError``.
    """
    cls: type[mqtt.Client] = BufferedClient if fast and fast_path_available() else mqtt.Client
    client = cls(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5,
        manual_ack=manual_ack,
    )
    if cfg.username:
        secret = cfg.password.get_secret_value() if cfg.password else None
        client.username_pw_set(cfg.username, secret)
    if cfg.tls_ca_file is not None:
        ca = Path(cfg.tls_ca_file)
        if not ca.is_file():
            raise ConfigError(f"mqtt.tls_ca_file: CA certificate file {ca} does not exist")
        try:
            client.tls_set(ca_certs=str(ca), cert_reqs=ssl.CERT_REQUIRED)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(
                f"mqtt.tls_ca_file: cannot load CA certificates from {ca}: {exc}"
            ) from exc
    return client


def ready_marker(pid: int | None = None) -> str:
    """The start of the log line an MQTT source writes once subscribed (SUBACK granted).

    Carries the process id, so a launcher reading an appended log
    (devtools/processes.py) can tell its own process's line from an earlier one's.
    """
    return f"MQTT ready (pid {os.getpid() if pid is None else pid})"


class BufferedClient(mqtt.Client):
    """paho's Client, reading its socket in 64 KiB chunks and draining it per wake-up.

    Measured (py-spy on benchmarks/ingest.py): for a client that only receives,
    paho 2.2 reads one packet per select() wake-up (``loop_read`` reads as many
    packets as it has outbound messages in flight, at least one) and each packet
    with three or more recv() calls (1 byte command, the length byte by byte, the
    body). Here every wake-up reads until the socket would block, from a local
    buffer. The buffer is always emptied before returning to select(), so no data
    can sit unseen; it is dropped on reconnect. Only built by :func:`make_client`
    on a paho in :data:`TESTED_PAHO_VERSIONS`.
    """

    # Our own state on paho's object: prefixed so no paho attribute can collide.
    _yukimizu_rbuf: bytes = b""
    _yukimizu_rpos: int = 0

    def reconnect(self) -> MQTTErrorCode:
        self._yukimizu_rbuf, self._yukimizu_rpos = b"", 0
        return super().reconnect()

    def _sock_recv(self, bufsize: int) -> bytes:  # paho-private: overrides paho's reader
        if self._yukimizu_rpos >= len(self._yukimizu_rbuf):
            data = super()._sock_recv(65536)  # paho-private
            if not data:
                return data  # connection closed
            self._yukimizu_rbuf, self._yukimizu_rpos = data, 0
        start = self._yukimizu_rpos
        self._yukimizu_rpos = min(start + bufsize, len(self._yukimizu_rbuf))
        return self._yukimizu_rbuf[start : self._yukimizu_rpos]

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        n = 0
        while True:
            if self._sock is None:  # paho-private
                return MQTTErrorCode.MQTT_ERR_NO_CONN
            rc = self._packet_read()  # paho-private
            if rc > 0:
                return self._loop_rc_handle(rc)  # paho-private
            if rc == MQTTErrorCode.MQTT_ERR_AGAIN:
                return MQTTErrorCode.MQTT_ERR_SUCCESS
            n += 1
            # Give writes (acks, pings) a turn now and then, but never leave
            # buffered bytes behind: select() would not report them.
            if n >= 2_000 and self._yukimizu_rpos >= len(self._yukimizu_rbuf):
                return MQTTErrorCode.MQTT_ERR_SUCCESS


def fast_publish_decoder(original: Callable[..., Any]) -> Callable[..., Any]:
    """paho's ``decode_publish`` (``original``) with a shortcut for PUBLISH packets
    without properties; see :func:`install_fast_publish_decode`.

    ``functools.wraps`` records ``original`` as ``__wrapped__`` (``inspect.unwrap``).
    tests/test_mqtt_decode.py compares the two on random packets.
    """
    if paho_packet is None:
        raise RuntimeError(f"paho-mqtt {paho_version()} has no paho.mqtt._packet module")
    v5 = MQTTProtocolVersion.MQTTv5
    unpack_h = struct.Struct("!H").unpack_from
    publish_packet = paho_packet.PublishPacket  # paho-private

    @functools.wraps(original)
    def decode_publish(header: int, packet: bytes | bytearray, protocol: Any) -> Any:
        if protocol == v5 and len(packet) >= 2:
            (slen,) = unpack_h(packet)
            qos = (header & 0x06) >> 1
            off = 2 + slen + (2 if qos else 0)
            if len(packet) > off and packet[off] == 0:  # property length 0
                return publish_packet(
                    dup=(header & 0x08) != 0,
                    qos=qos,
                    retain=(header & 0x01) != 0,
                    topic=bytes(packet[2 : 2 + slen]),
                    mid=unpack_h(packet, 2 + slen)[0] if qos else 0,
                    properties=_EMPTY_PUBLISH_PROPERTIES,
                    payload=bytes(packet[off + 1 :]),
                )
        return original(header, packet, protocol)

    return decode_publish


class _DecodePatch:
    """Who uses the fast decoder: installed while at least one user holds it.

    The patch is process-wide (paho looks ``decode_publish`` up in its module), so
    it is counted: two sources in one process share it, and it is gone once both
    have stopped.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users = 0
        self.installed: Callable[..., Any] | None = None  # ours, while in place
        self.original: Callable[..., Any] | None = None  # paho's, to put back


_decode_patch = _DecodePatch()


def install_fast_publish_decode() -> bool:
    """Skip paho's per-message Properties parsing for PUBLISH packets without properties.

    Measured (benchmarks/ingest.py, py-spy): paho 2.2 builds and parses a fresh
    ``Properties`` object for every MQTT v5 PUBLISH, about 40 % of ingest's CPU per
    message, although device messages almost never carry properties. Packets whose
    property length is zero get a shared, empty Properties object (paho only reads
    it, and ingest never looks at it); every other packet takes paho's own decoder.
    Only on :data:`TESTED_PAHO_VERSIONS`; returns whether it is active. Every
    successful call must be paired with :func:`uninstall_fast_publish_decode` (or use
    :func:`fast_publish_decode`). tests/test_mqtt_decode.py proves the output equal
    to paho's.
    """
    if not fast_path_available() or paho_packet is None:
        return False
    with _decode_patch.lock:
        if _decode_patch.users == 0:
            original = paho_packet.decode_publish  # paho-private
            fast = fast_publish_decoder(original)
            paho_packet.decode_publish = fast  # paho-private: process-wide patch
            _decode_patch.installed, _decode_patch.original = fast, original
        _decode_patch.users += 1
    return True


def uninstall_fast_publish_decode() -> None:
    """Release one :func:`install_fast_publish_decode`; the last one restores paho's."""
    with _decode_patch.lock:
        if _decode_patch.users == 0 or paho_packet is None:
            raise RuntimeError("the fast PUBLISH decoder is not installed")
        _decode_patch.users -= 1
        if _decode_patch.users:
            return
        current = paho_packet.decode_publish  # paho-private
        original = _decode_patch.original
        if current is not _decode_patch.installed or original is None:
            raise RuntimeError(
                f"paho's decode_publish was replaced by {current!r} while yukimizu's fast "
                "decoder was installed; not restoring over it"
            )
        paho_packet.decode_publish = original  # paho-private: restore paho's
        _decode_patch.installed = _decode_patch.original = None


@contextlib.contextmanager
def fast_publish_decode() -> Iterator[bool]:
    """The fast PUBLISH decoder for this block only; yields whether it is active."""
    active = install_fast_publish_decode()
    try:
        yield active
    finally:
        if active:
            uninstall_fast_publish_decode()


def fast_publish_decode_installed() -> bool:
    """Whether paho currently decodes PUBLISH packets with yukimizu's fast decoder."""
    with _decode_patch.lock:
        return _decode_patch.installed is not None


class MqttSource:
    """Subscribes to the configured topics and hands messages to ``deliver``.

    ``connected`` is set on a granted CONNACK, ``ready`` only once the SUBACK has
    granted every topic: before that, a message published to a topic ingest has not
    yet subscribed to would be lost (no session holds it). A refused subscription
    (reason code >= 0x80, e.g. an ACL refusal) is logged as an error and kept in
    ``subscribe_error``; ``ready`` then stays unset.
    """

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
        self._subscribe_mid: int | None = None
        self._decoder_held = False
        self.connected = threading.Event()
        self.ready = threading.Event()
        self.connects = 0
        self.reconnects = 0
        self.session_lost = 0
        self.last_error: str | None = None
        self.subscribe_error: str | None = None
        client = make_client(cfg, cfg.client_id, manual_ack=True, fast=cfg.paho_fast_path)
        self.fast_path = isinstance(client, BufferedClient)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        client.on_message = self._on_message
        self._client = client

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
        if self.fast_path:
            # Process-wide while this source runs; released in stop().
            self._decoder_held = install_fast_publish_decode()
            log.debug("paho fast path active (decoder: %s)", self._decoder_held)
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
            if self._decoder_held:
                self._decoder_held = False
                uninstall_fast_publish_decode()

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
            self.connected.set()
            self._marker.parent.mkdir(parents=True, exist_ok=True)
            self._marker.touch()
            opts = SubscribeOptions(qos=self.cfg.qos)
            rc, self._subscribe_mid = client.subscribe([(t, opts) for t in self.topics()])
            log.info(
                "connected to MQTT %s:%s as %r (session present: %s); subscribing to %s",
                self.cfg.host,
                self.cfg.port,
                self.cfg.client_id,
                flags.session_present,
                ", ".join(self.topics()),
            )
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                # paho reconnects after a failed send, and on_connect subscribes again.
                log.warning("MQTT SUBSCRIBE could not be sent: %s", mqtt.error_string(rc))
        except Exception:  # a raise here would kill paho's network thread
            log.exception("error in MQTT on_connect")

    def _on_subscribe(
        self, _c: mqtt.Client, _u: Any, mid: int, reason_codes: list[ReasonCode], _p: Any
    ) -> None:
        try:
            if mid != self._subscribe_mid:
                return  # the answer to an earlier connection's SUBSCRIBE
            topics = self.topics()
            granted = list(zip(topics, reason_codes, strict=True))
            refused = [(t, rc) for t, rc in granted if rc.is_failure]  # reason code >= 0x80
            if refused:
                self.subscribe_error = "; ".join(f"{t}: {rc}" for t, rc in refused)
                self.last_error = f"subscription refused: {self.subscribe_error}"
                for topic, rc in refused:
                    log.error(
                        "MQTT broker %s:%s REFUSED the subscription to %r for client id %r "
                        "(user %r): %s (reason code 0x%02X). Nothing published there reaches "
                        "ingest; check the broker's ACL for this user.",
                        self.cfg.host,
                        self.cfg.port,
                        topic,
                        self.cfg.client_id,
                        self.cfg.username,
                        rc,
                        rc.value,
                    )
                return
            for topic, qos in [(t, rc.value) for t, rc in granted if rc.value < self.cfg.qos]:
                # QoS 0 means no redelivery: readings lost while ingest is away.
                log.warning(
                    "MQTT broker granted QoS %d for %r, below the configured QoS %d",
                    qos,
                    topic,
                    self.cfg.qos,
                )
            self.subscribe_error = None
            log.info("%s: subscribed to %s", ready_marker(), ", ".join(topics))
            self.ready.set()
        except Exception:  # a raise here would kill paho's network thread
            log.exception("error in MQTT on_subscribe")

    def _on_connect_fail(self, _c: mqtt.Client, _u: Any) -> None:
        self.last_error = "connection failed"
        log.warning(
            "cannot reach the MQTT broker at %s:%s; retrying (up to every 30 s)",
            self.cfg.host,
            self.cfg.port,
        )

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self.ready.clear()
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
