"""The ingest service: transport → processor → batch → InfluxDB / spool / dead letters → ack.

One worker thread owns all state (batch, spool, dead-letter store, counters), so
there are no locks beyond the queue from paho's network thread. A batch is flushed
when it is full, when no message arrived for ``linger_s`` (low latency at low
rates, full batches at high rates), or after ``flush_interval_s`` at most.

A message is acknowledged only after all it produced is durable: its points
accepted by InfluxDB or in the spool, its dead letter committed.

A point InfluxDB refuses becomes a dead letter the same way wherever the refusal
happens (first write, spool replay, direct write while the spool is full): the
message's original payload under its topic, so ``yukimizu deadletter replay``
republishes what the device sent (docs/delivery.md#replay). Only a point with no
payload behind it (a self-metric, or a batch spooled by an older version) is kept
as ``line_protocol``, which replay writes back to InfluxDB instead.
"""

from __future__ import annotations

import logging
import queue
import socket
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from threading import Event
from typing import Any, Protocol

from core.config import Config, load_registry
from core.influx import WriteError, Writer, make_writer
from core.message import Message
from core.mqtt import MqttSource
from ingest.deadletter import Content, DeadLetterStore, Letter
from ingest.decode import LORAWAN_ALIASES, payload_preview
from ingest.lineproto import encode
from ingest.pipeline import Limits, Processor, Result
from ingest.reasons import Drop, Reason
from ingest.spool import Origin, Spool
from sensors.registry import Registry, RegistryError
from sensors.schema import DEADLETTER_STATS, INGEST_STATS

log = logging.getLogger(__name__)


class _Source(Protocol):
    """Where points came from: a received :class:`Message` or a spooled :class:`Origin`."""

    @property
    def topic(self) -> str: ...

    @property
    def payload(self) -> bytes | None: ...


class Source(Protocol):
    """What the service needs from a transport (see :class:`core.mqtt.MqttSource`)."""

    reconnects: int
    session_lost: int

    def start(self) -> None: ...

    def pause(self) -> None: ...

    def ack(self, token: Any) -> None: ...

    def stop(self) -> None: ...


@dataclass
class Stats:
    received: int = 0
    readings: int = 0
    written: int = 0
    deadlettered: int = 0
    dropped: int = 0
    spooled: int = 0
    batches: int = 0
    last_batch_ms: float = 0.0
    deadletter_evicted: int = 0  # oldest dead letters evicted to keep the store's cap
    by_reason: Counter[Reason] = field(default_factory=Counter)
    drops: Counter[Drop] = field(default_factory=Counter)


def limits_from(cfg: Config) -> Limits:
    return Limits(
        topic_prefix=cfg.mqtt.topic_prefix,
        max_payload_bytes=cfg.ingest.max_payload_bytes,
        max_future_s=cfg.ingest.max_future_s,
        lat_min=cfg.registry.lat_min,
        lat_max=cfg.registry.lat_max,
        lon_min=cfg.registry.lon_min,
        lon_max=cfg.registry.lon_max,
        lorawan_aliases={**LORAWAN_ALIASES, **cfg.ingest.lorawan_aliases},
    )


@dataclass
class _Batch:
    messages: list[Message] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    sources: list[int] = field(default_factory=list)  # index into messages, -1: self-metric
    dead: list[Letter] = field(default_factory=list)
    started: float = 0.0

    def __bool__(self) -> bool:
        return bool(self.messages or self.lines)


class Ingest:
    """Runs the pipeline. ``run()`` blocks until ``stop`` is set, then drains."""

    def __init__(
        self,
        cfg: Config,
        registry: Registry | None = None,
        writer: Writer | None = None,
        source_factory: Callable[[Callable[[Message], None]], Source] | None = None,
    ) -> None:
        self.cfg = cfg
        icfg = cfg.ingest
        state = Path(icfg.state_dir)
        state.mkdir(parents=True, exist_ok=True)
        self.processor = Processor(registry or load_registry(cfg), limits_from(cfg))
        self.writer = writer or make_writer(cfg.influx)
        self.spool = Spool(state / "spool.sqlite", icfg.spool_max_bytes, icfg.spool_warn_fraction)
        self.deadletters = DeadLetterStore(
            state / "deadletter.sqlite",
            keep_payload_bytes=icfg.deadletter_keep_payload_bytes,
            max_bytes=icfg.deadletter_max_bytes,
        )
        self.stats = Stats()
        self._queue: queue.SimpleQueue[Message] = queue.SimpleQueue()
        self._retry_at = 0.0
        self._warned_reasons: set[Reason] = set()
        self._warned_eviction = False
        self._reload = Event()
        self._retry_delay = icfg.retry_interval_s
        self._client_id = f"{cfg.mqtt.client_id}@{socket.gethostname()}"
        if source_factory is None:
            self.source: Source = MqttSource(
                cfg.mqtt, state, self._queue.put, backlog=self._queue.qsize
            )
        else:
            self.source = source_factory(self._queue.put)

    # --- main loop --------------------------------------------------------------

    def run(self, stop: Event) -> None:
        icfg = self.cfg.ingest
        log.info("ingest writing to %s; state in %s", self.writer.describe(), icfg.state_dir)
        self._trim_dead()  # the cap may have been lowered since the last run
        self.source.start()
        batch = _Batch()
        next_metrics = time.monotonic() + icfg.metrics_interval_s
        try:
            while not stop.is_set():
                drained = self._receive(batch, self._wait_s(batch, next_metrics))
                now = time.monotonic()
                if self._flush_due(batch, drained, now):
                    self._flush(batch, stop)
                    batch = _Batch()
                self._housekeeping(now)
                if now >= next_metrics:
                    next_metrics = now + icfg.metrics_interval_s
                    self._emit_metrics(batch)
        finally:
            self._shutdown(batch)

    def _wait_s(self, batch: _Batch, next_metrics: float) -> float:
        """How long to wait for the next message: until the batch or the metrics are due."""
        icfg = self.cfg.ingest
        now = time.monotonic()
        if batch:
            # Sleep until the batch is old enough to go out when the stream pauses.
            due = batch.started + min(icfg.linger_s, icfg.flush_interval_s)
            return max(due - now, 0.001)
        return min(0.5, max(0.0, next_metrics - now))

    def _receive(self, batch: _Batch, wait: float) -> bool:
        """Take a message (waiting up to ``wait`` s), then what is queued, up to a full batch.

        Returns True once the queue was seen empty: the stream paused.
        """
        get = self._queue.get
        try:
            msg = get(timeout=wait) if wait > 0 else get(block=False)
        except queue.Empty:
            return True
        if not batch:
            batch.started = time.monotonic()
        self._take(batch, msg)
        # Take what is already queued without waiting, up to a full batch.
        batch_size = self.cfg.ingest.batch_size
        while len(batch.lines) < batch_size:
            try:
                self._take(batch, get(block=False))
            except queue.Empty:
                return True
        return False

    def _flush_due(self, batch: _Batch, drained: bool, now: float) -> bool:
        # Flush when full, when too old, or when the stream paused and the batch is
        # at least linger_s old: low latency at low rates, few large writes under
        # load (at most one per linger_s while busy).
        icfg = self.cfg.ingest
        age = now - batch.started
        return bool(batch) and (
            len(batch.lines) >= icfg.batch_size
            or age >= icfg.flush_interval_s
            or (drained and age >= icfg.linger_s)
        )

    def _housekeeping(self, now: float) -> None:
        """Between batches: retry the spool when due, reload the registry when asked."""
        if len(self.spool) and now >= self._retry_at:
            self._replay_spool(max_batches=20)
        if self._reload.is_set():
            self._reload.clear()
            self._reload_registry()

    def request_reload(self) -> None:
        """Reload the device registry at the next loop turn (safe from a signal handler)."""
        self._reload.set()

    def _reload_registry(self) -> None:
        try:
            registry = load_registry(self.cfg)
        except (RegistryError, OSError) as exc:
            log.error("registry NOT reloaded, still using the previous one: %s", exc)
            return
        self.processor.set_registry(registry)
        log.info(
            "registry reloaded: %d stations, %d meters, %d plows",
            len(registry.stations),
            len(registry.meters),
            len(registry.plows),
        )

    def _shutdown(self, batch: _Batch) -> None:
        """Stop receiving, process what was received, flush, ack, disconnect."""
        deadline = time.monotonic() + self.cfg.ingest.shutdown_timeout_s
        self.source.pause()
        while True:
            try:
                self._take(batch, self._queue.get(block=False))
            except queue.Empty:
                break
        self._emit_metrics(batch)
        give_up = Event()
        if batch:
            self._flush(batch, give_up, deadline=deadline)
        try:
            self.source.stop()
        finally:
            self.writer.close()
            self.spool.close()
            self.deadletters.close()
        log.info("ingest stopped: %s", self.summary())

    # --- per message --------------------------------------------------------------

    def _take(self, batch: _Batch, msg: Message) -> None:
        self.stats.received += 1
        res: Result = self.processor.process(msg)
        idx = len(batch.messages)
        batch.messages.append(msg)
        if res.lines:
            batch.lines.extend(res.lines)
            batch.sources.extend([idx] * len(res.lines))
            self.stats.readings += len(res.lines)
        if res.drops:
            self.stats.dropped += len(res.drops)
            self.stats.drops.update(Drop(d) for d in res.drops)
        if res.reason is not None:
            letter = Letter(msg.topic, Reason(res.reason), res.detail, msg.payload)
            batch.dead.append(letter)
            self._warn_once(letter)

    def _warn_once(self, letter: Letter) -> None:
        # One warning per reason per metrics interval: a flood of bad payloads must
        # not flood the log; all are counted and kept as dead letters.
        if letter.reason in self._warned_reasons:
            return
        self._warned_reasons.add(letter.reason)
        log.warning(
            "dead letter (%s) on %s: %s; %s: %s (more of this reason are counted, "
            "see `yukimizu deadletter list`)",
            letter.reason,
            letter.topic or "(no topic)",
            letter.detail,
            letter.content,
            payload_preview(letter.payload),
        )

    # --- flush --------------------------------------------------------------------

    def _flush(self, batch: _Batch, stop: Event, deadline: float | None = None) -> None:
        t0 = time.monotonic()
        durable = True
        if batch.lines:
            if len(self.spool):
                # Keep InfluxDB's arrival order: older spooled batches go first.
                durable = self._to_spool(
                    batch.lines,
                    batch.sources,
                    batch.messages,
                    batch.dead,
                    stop=stop,
                    deadline=deadline,
                )
            else:
                unwritten, bad = self._write(batch.lines, list(range(len(batch.lines))))
                batch.dead.extend(self._refused(bad, batch.lines, batch.sources, batch.messages))
                if unwritten:
                    durable = self._to_spool(
                        [batch.lines[i] for i in unwritten],
                        [batch.sources[i] for i in unwritten],
                        batch.messages,
                        batch.dead,
                        stop=stop,
                        deadline=deadline,
                    )
        if not durable:
            log.warning(
                "InfluxDB unavailable and spool full: %d messages left unacknowledged; "
                "the broker will deliver them again",
                len(batch.messages),
            )
            return
        self._commit_dead(batch.dead)
        ack = self.source.ack
        for m in batch.messages:
            ack(m.token)
        self.stats.batches += 1
        self.stats.last_batch_ms = (time.monotonic() - t0) * 1000

    def _write(
        self, lines: Sequence[str], idx: list[int]
    ) -> tuple[list[int], list[tuple[int, str]]]:
        """Write lines; on rejection bisect to find the bad points.

        Returns (indices not written because InfluxDB is unavailable,
        [(index, error)] of points InfluxDB rejected). Rewriting a point that was
        already stored is harmless: identical points overwrite.
        """
        try:
            self.writer.write([lines[i] for i in idx])
        except WriteError as exc:
            if not exc.bad_data:
                self._note_unavailable(exc)
                return idx, []
            if len(idx) == 1:
                return [], [(idx[0], str(exc))]
            mid = len(idx) // 2
            u1, b1 = self._write(lines, idx[:mid])
            if u1:  # went away while bisecting: keep the rest too
                return u1 + idx[mid:], b1
            u2, b2 = self._write(lines, idx[mid:])
            return u2, b1 + b2
        self.stats.written += len(idx)
        self._retry_delay = self.cfg.ingest.retry_interval_s
        return [], []

    def _note_unavailable(self, exc: WriteError) -> None:
        now = time.monotonic()
        if now >= self._retry_at:
            log.warning("%s; spooling, retry in %.0f s", exc, self._retry_delay)
        self._retry_at = now + self._retry_delay
        self._retry_delay = min(self._retry_delay * 2, 30.0)

    def _refused(
        self,
        bad: list[tuple[int, str]],
        lines: Sequence[str],
        sources: Sequence[int],
        origins: Sequence[_Source],
    ) -> list[Letter]:
        """Dead letters for the points InfluxDB refused: one per message, its payload.

        ``bad`` holds (line index, InfluxDB's error); ``sources[i]`` is the index in
        ``origins`` of line i's message, -1 for a self-metric. A point without a
        payload behind it is kept as its line protocol, marked so that replay writes
        it to InfluxDB and never publishes it to a device topic.
        """
        letters: list[Letter] = []
        errors: dict[int, list[str]] = {}
        for i, err in bad:
            src = sources[i]
            origin = origins[src] if src >= 0 else None
            if origin is not None and origin.payload is not None:
                errors.setdefault(src, []).append(err)
            else:
                topic = origin.topic if origin is not None else ""
                letters.append(
                    Letter(
                        topic,
                        Reason.INFLUX_REJECTED,
                        err,
                        lines[i].encode(),
                        Content.LINE_PROTOCOL,
                    )
                )
        for src, errs in errors.items():
            origin = origins[src]
            assert origin.payload is not None  # selected above
            detail = errs[0] if len(errs) == 1 else f"{len(errs)} points refused; {errs[0]}"
            letters.append(Letter(origin.topic, Reason.INFLUX_REJECTED, detail, origin.payload))
        for letter in letters:
            self._warn_once(letter)
        return letters

    def _commit_dead(self, letters: list[Letter]) -> None:
        if not letters:
            return
        self.deadletters.add_many(letters)
        self._trim_dead()
        self.stats.deadlettered += len(letters)
        self.stats.by_reason.update(d.reason for d in letters)

    def _trim_dead(self) -> None:
        """Keep the dead-letter store within its cap: evict the oldest, count them."""
        trimmed = self.deadletters.trim()
        if not trimmed.rows:
            return
        self.stats.deadletter_evicted += trimmed.rows
        if not self._warned_eviction:  # once per metrics interval, like dead letters
            self._warned_eviction = True
            log.warning(
                "dead-letter store over ingest.deadletter_max_bytes (%d bytes): evicted "
                "the %d oldest dead letters (%d bytes; %d since start). Look at "
                "`yukimizu deadletter list` and purge what is understood",
                self.cfg.ingest.deadletter_max_bytes,
                trimmed.rows,
                trimmed.bytes,
                self.stats.deadletter_evicted,
            )

    def _to_spool(
        self,
        lines: list[str],
        sources: list[int],
        origins: Sequence[_Source],
        dead: list[Letter],
        *,
        stop: Event,
        deadline: float | None,
    ) -> bool:
        """Append to the spool; if full, wait for InfluxDB. False: not durable.

        Points InfluxDB refuses on a direct write (spool full) go to ``dead``, to be
        committed with the batch's other dead letters before the acks.
        """
        while not self.spool.has_room():
            if len(self.spool):
                self._replay_spool(max_batches=50)
            if self.spool.has_room():
                break
            unwritten, bad = self._write(lines, list(range(len(lines))))
            if not unwritten:
                dead.extend(self._refused(bad, lines, sources, origins))
                return True
            if stop.is_set() or (deadline is not None and time.monotonic() > deadline):
                return False
            time.sleep(min(self.cfg.ingest.retry_interval_s, 1.0))
        kept = [Origin(o.topic, o.payload) for o in origins]
        self.spool.append(lines, sources, kept)
        self.stats.spooled += len(lines)
        return True

    def _replay_spool(self, max_batches: int) -> None:
        for _ in range(max_batches):
            item = self.spool.oldest()
            if item is None:
                log.info("spool drained: InfluxDB has every spooled point")
                return
            unwritten, bad = self._write(item.lines, list(range(len(item.lines))))
            if unwritten:
                return
            # Dead letters first, then forget the batch: a crash in between replays it
            # again and refuses the same points (a duplicate dead letter, no loss).
            self._commit_dead(self._refused(bad, item.lines, item.sources, item.origins))
            self.spool.remove(item.id)
            if not len(self.spool):
                log.info("spool drained: InfluxDB has every spooled point")

    # --- self-metrics ----------------------------------------------------------------

    def summary(self) -> str:
        s = self.stats
        return (
            f"received={s.received} readings={s.readings} written={s.written} "
            f"deadlettered={s.deadlettered} dropped={s.dropped} spooled={s.spooled} "
            f"spool_depth={self.spool.points} reconnects={self.source.reconnects}"
            f"{f' deadletter_evicted={s.deadletter_evicted}' if s.deadletter_evicted else ''}"
        )

    def _emit_metrics(self, batch: _Batch) -> None:
        s = self.stats
        ms = int(time.time() * 1000)
        tags = {"client_id": self._client_id}
        fields: dict[str, object] = {
            "received": s.received,
            "written": s.written,
            "deadlettered": s.deadlettered,
            "dropped": s.dropped,
            "spooled": s.spooled,
            "spool_depth": self.spool.points,
            "spool_bytes": self.spool.bytes,
            "queue_depth": self._queue.qsize(),
            "batch_latency_ms": s.last_batch_ms,
            "reconnects": self.source.reconnects,
            "session_lost": self.source.session_lost,
            "deadletter_bytes": self.deadletters.bytes,
            "deadletter_evicted": s.deadletter_evicted,
        }
        lines = [encode(INGEST_STATS, tags, fields, ms)]
        for reason, n in sorted(s.by_reason.items()):
            lines.append(encode(DEADLETTER_STATS, {**tags, "reason": reason}, {"count": n}, ms))
        if not batch:
            batch.started = time.monotonic()
        batch.lines.extend(lines)
        batch.sources.extend([-1] * len(lines))
        self._warned_reasons.clear()
        self._warned_eviction = False
        log.info("ingest: %s", self.summary())
