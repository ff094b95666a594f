"""Run a scenario: publish it over MQTT (QoS 1, flow-controlled) or write it to a file.

Pacing: ``speed=None`` sends as fast as the broker acknowledges; ``speed=X`` sends
each message when ``X`` scenario seconds per wall second have passed since the
scenario start (``1`` is real time).

Timestamps are scenario time. Ingest rejects readings more than
``ingest.max_future_s`` (default 300 s) ahead of its clock, so historic scenarios
can be sent at any speed, but a scenario whose time range lies in the future only
works paced in real time from its start: ``--speed 1 --start now``.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TextIO

import orjson

from core.config import Config, load_registry
from core.publish import Publisher
from sensors.registry import Registry
from simulators.formats import WireFormat
from simulators.scenario import load_scenario
from simulators.stream import SimMessage, Simulation, TopicPrefixes
from simulators.timeutil import iso
from simulators.truth import write_truth

__all__ = [
    "Playback",
    "Progress",
    "Summary",
    "prefixes_from",
    "publish",
    "publish_scenario",
    "run",
    "write_jsonl",
]

log = logging.getLogger(__name__)

_CHIRPSTACK_FILTER = "application/+/device/+/event/up"
_TTN_FILTER = "v3/+/devices/+/up"


@dataclass(frozen=True)
class Summary:
    scenario: str
    format: str
    messages: int
    readings: int
    wall_s: float
    first_time: int | None
    last_time: int | None
    by_kind: dict[str, int] = field(default_factory=dict)
    published: int = 0  # acknowledged by the broker (0 when writing a file)
    out: Path | None = None
    truth_dir: Path | None = None
    notes: tuple[str, ...] = ()

    @property
    def messages_per_s(self) -> float:
        return self.messages / self.wall_s if self.wall_s > 0 else 0.0

    def describe(self) -> str:
        span = (
            f"{iso(self.first_time)} – {iso(self.last_time)}"
            if self.first_time is not None and self.last_time is not None
            else "no messages"
        )
        kinds = ", ".join(f"{k} {n:,}" for k, n in sorted(self.by_kind.items()))
        where = f"wrote {self.out}" if self.out else f"published {self.published:,} (QoS 1)"
        return (
            f"{self.scenario} [{self.format}]: {self.messages:,} messages ({kinds}), "
            f"{self.readings:,} readings, {span}; {where} in {self.wall_s:.1f} s "
            f"({self.messages_per_s:,.0f} msg/s)"
        )


class Progress:
    """Progress on stderr for long runs: a line every ``interval_s`` of wall time."""

    def __init__(
        self,
        label: str,
        start: int,
        end: int,
        stream: TextIO | None = None,
        interval_s: float = 2.0,
    ) -> None:
        self.label = label
        self.start = start
        self.span = max(1, end - start)
        self.stream = stream if stream is not None else sys.stderr
        self.interval_s = interval_s
        self.t0 = time.monotonic()
        self.next = self.t0 + interval_s
        self.tty = self.stream.isatty()
        self.shown = False

    def update(self, scenario_time: int, count: int) -> None:
        now = time.monotonic()
        if now < self.next:
            return
        self.next = now + self.interval_s
        pct = min(100.0, 100.0 * (scenario_time - self.start) / self.span)
        rate = count / max(now - self.t0, 1e-9)
        text = (
            f"{self.label}: {iso(scenario_time)} {pct:5.1f}%  {count:,} messages  {rate:,.0f} msg/s"
        )
        if self.tty:
            self.stream.write("\r" + text + "\x1b[K")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown and self.tty:
            self.stream.write("\n")
            self.stream.flush()


def prefixes_from(cfg: Config) -> TopicPrefixes:
    """Topic prefixes matching what ingest subscribes to (native prefix, LoRaWAN filters)."""
    chirp = ttn = ""
    for f in cfg.mqtt.lorawan_topics:
        if f.endswith(_CHIRPSTACK_FILTER):
            chirp = f[: -len(_CHIRPSTACK_FILTER)]
        elif f.endswith(_TTN_FILTER):
            ttn = f[: -len(_TTN_FILTER)]
    return TopicPrefixes(cfg.mqtt.topic_prefix, chirp, ttn)


def run(
    sim: Simulation,
    send: Callable[[SimMessage], None],
    *,
    speed: float | None = None,
    progress: Progress | None = None,
) -> Summary:
    """Stream every message of ``sim`` to ``send``, paced or as fast as possible."""
    count = readings = 0
    first: int | None = None
    last: int | None = None
    kinds: Counter[str] = Counter()
    t0 = time.monotonic()
    for msg in sim.messages():
        if speed is not None:
            due = t0 + (msg.time - sim.start) / speed
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        send(msg)
        count += 1
        readings += msg.readings
        kinds[msg.kind] += 1
        if first is None:
            first = msg.time
        last = msg.time
        if progress is not None and not count & 255:
            progress.update(msg.time, count)
    if progress is not None:
        progress.close()
    return Summary(
        scenario=sim.scenario.name,
        format=sim.format,
        messages=count,
        readings=readings,
        wall_s=time.monotonic() - t0,
        first_time=first,
        last_time=last,
        by_kind=dict(kinds),
        notes=tuple(sim.notes),
    )


def write_jsonl(
    sim: Simulation,
    out: Path,
    *,
    speed: float | None = None,
    progress: Progress | None = None,
) -> Summary:
    """Write the stream as JSON lines ``{"time", "topic", "payload"}`` (payload as text)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as fh:
        write = fh.write

        def send(msg: SimMessage) -> None:
            write(
                orjson.dumps(
                    {"time": iso(msg.time), "topic": msg.topic, "payload": msg.payload.decode()}
                )
                + b"\n"
            )

        summary = run(sim, send, speed=speed, progress=progress)
    return replace(summary, out=out)


def warn_future(sim: Simulation, cfg: Config, speed: float | None) -> str | None:
    """A warning when ingest would reject readings as being in the future."""
    limit = time.time() + cfg.ingest.max_future_s
    if speed is None and sim.end > limit:
        return (
            f"scenario runs until {iso(sim.end)}, later than ingest accepts now "
            f"(max_future_s = {cfg.ingest.max_future_s:.0f}); readings after {iso(int(limit))} "
            f"will be dead-lettered as future_timestamp. Use --speed 1 --start now."
        )
    if speed is not None and sim.start > limit:
        return f"scenario starts at {iso(sim.start)}, in the future: use --start now"
    return None


def publish(
    sim: Simulation,
    cfg: Config,
    *,
    speed: float | None = None,
    progress: Progress | None = None,
    client_id: str | None = None,
) -> Summary:
    """Publish a built simulation with QoS 1; returns once the broker acknowledged all.

    Uses :class:`core.publish.Publisher`, which bounds the unacknowledged messages,
    so nothing is dropped however long the scenario (raises ``PublishError`` if the
    broker refuses or stops acknowledging).
    """
    with Publisher(cfg.mqtt, client_id=client_id or f"yukimizu-sim-{os.getpid()}") as pub:
        summary = run(
            sim, lambda m: pub.publish(m.topic, m.payload), speed=speed, progress=progress
        )
        pub.flush()
        return replace(summary, published=pub.published)


@dataclass(frozen=True, slots=True)
class Playback:
    """How a scenario is played: ``speed`` (None: as fast as possible), the wire format
    (None: the scenario's), a new start time (None: the scenario's), whether to show
    progress, and the MQTT client id (None: one from the process id)."""

    speed: float | None = None
    fmt: WireFormat | None = None
    start: datetime | None = None
    progress: bool = True
    client_id: str | None = None


def publish_scenario(
    cfg: Config,
    scenario_path: Path,
    playback: Playback = Playback(),
    *,
    registry: Registry | None = None,
    truth_dir: Path | None = None,
) -> Summary:
    """Load a scenario and publish it over MQTT with QoS 1, never dropping.

    The registry, topic prefix and broker come from ``cfg``; ``truth_dir`` gets the
    ground truth (written before the first message is sent).
    """
    speed, fmt, start = playback.speed, playback.fmt, playback.start
    progress, client_id = playback.progress, playback.client_id
    reg = registry if registry is not None else load_registry(cfg)
    scenario = load_scenario(scenario_path)
    if start is not None:
        scenario = scenario.shifted_to(start)
    sim = Simulation(scenario, reg, fmt, prefixes_from(cfg))
    for note in sim.notes:
        log.info("%s", note)
    warning = warn_future(sim, cfg, speed)
    if warning:
        log.warning("%s", warning)
    if truth_dir is not None:
        write_truth(sim.world, truth_dir, sim.format)
    bar = Progress(f"simulate {scenario.name}", sim.start, sim.end) if progress else None
    summary = publish(sim, cfg, speed=speed, progress=bar, client_id=client_id)
    return replace(summary, truth_dir=truth_dir)
