"""Plow trips: what each plow truly does after a dispatch (the world, not the GPS).

A dispatch hands each plow its work zone's dispatched segments, in the zone's plowing
order, split between the zone's dispatched vehicles (:func:`assign_segments`,
docs/rules-plow.md#work-zones). A trip is planned once, deterministically: warm up
at the depot, take the yard's access road to the network, then for each assigned
segment drive (blade up, at transit speed) the shortest way to whichever end is
nearer and plow it (blade down, 7–13 km/h), perhaps stop for a while (a stuck car, a
break: 4–20 min, so some are "idle" by the 10-minute rule of docs/domain.md#idle),
and finally drive back and park. The blade-down passes are the ground truth for
"segment plowed at".
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from sensors.zones import WorkZone, split_runs
from simulators.roads import Node, Polyline, RoadNetwork
from simulators.seeding import geometric_gap, rng_for

__all__ = [
    "Driving",
    "Leg",
    "SegmentPass",
    "Stop",
    "Trip",
    "assign_segments",
    "plan_dispatch",
    "plan_trip",
    "split_segments",
]

KMH: Final = 1 / 3.6
ACCESS_SPEED_KMH: Final = 12.0
PLOW_SPEED_KMH: Final = (7.0, 13.0)
TRANSIT_SPEED_KMH: Final = (25.0, 40.0)
WARMUP_S: Final = (180, 480)
IDLE_S: Final = (240, 1200)
PARK_S: Final = 60
GPS_GAP_S: Final = (10, 90)
GPS_INVALID_S: Final = (3, 20)


@dataclass(frozen=True, slots=True)
class Leg:
    line: Polyline
    speed_mps: float
    blade: bool
    start: float  # scenario seconds
    segment: str | None = None  # the route segment driven, if any
    forward: bool = True

    @property
    def end(self) -> float:
        return self.start + self.line.length / self.speed_mps


@dataclass(frozen=True, slots=True)
class Stop:
    x: float
    y: float
    start: float
    end: float
    reason: Literal["warmup", "idle", "park"]


@dataclass(frozen=True, slots=True)
class SegmentPass:
    plow: str
    segment: str
    start: int
    end: int
    forward: bool
    length_m: float


@dataclass
class Trip:
    plow: str
    dispatched_at: int
    start: int  # ignition on at the depot
    end: int  # parked again; the logger stops
    segments: tuple[str, ...]
    parts: tuple[Leg | Stop, ...] = field(repr=False)
    gps_gaps: list[tuple[int, int]] = field(default_factory=list)
    gps_invalid: list[tuple[int, int]] = field(default_factory=list)

    @property
    def passes(self) -> list[SegmentPass]:
        return [
            SegmentPass(
                self.plow,
                p.segment,
                math.floor(p.start),
                math.ceil(p.end),
                p.forward,
                round(p.line.length, 1),
            )
            for p in self.parts
            if isinstance(p, Leg) and p.blade and p.segment is not None
        ]

    @property
    def idles(self) -> list[Stop]:
        return [p for p in self.parts if isinstance(p, Stop) and p.reason == "idle"]

    def distance_m(self, blade: bool) -> float:
        return sum(p.line.length for p in self.parts if isinstance(p, Leg) and p.blade == blade)


def split_segments(
    network: RoadNetwork, segment_ids: Sequence[str], n: int
) -> list[tuple[str, ...]]:
    """Cut the ordered segment list into n contiguous runs of about equal length.

    The sample network's GeoJSON order is an Euler circuit from the depot, so
    contiguous runs are connected drives with no dead running inside them.
    """
    if n <= 0:
        return []
    total = sum(network.lines[s].length for s in segment_ids)
    chunks: list[list[str]] = [[] for _ in range(n)]
    acc = 0.0
    for sid in segment_ids:
        length = network.lines[sid].length
        k = min(n - 1, int((acc + length / 2) / total * n)) if total else 0
        chunks[k].append(sid)
        acc += length
    return [tuple(c) for c in chunks]


def assign_segments(
    network: RoadNetwork,
    zones: Mapping[str, WorkZone],
    plows: Sequence[str],
    segment_ids: Sequence[str],
) -> list[tuple[str, tuple[str, ...]]]:
    """(plow, its segments in driving order) for one dispatch.

    Without zones: the segment list cut into contiguous runs, one per plow. With zones:
    each zone's dispatched segments in the zone's order, split between its dispatched
    vehicles (``split_runs``); segments in no zone, or in a zone none of whose
    vehicles is out, go one by one to the plow with the least work so far (応援).
    """
    if not zones:
        return list(zip(plows, split_segments(network, segment_ids, len(plows)), strict=True))
    length = {s: seg.length_m for s, seg in network.segments.items()}
    wanted = set(segment_ids)
    out: dict[str, list[str]] = {p: [] for p in plows}
    placed: set[str] = set()
    orphans: list[str] = []
    for zone in zones.values():
        segs = [s for s in zone.segments if s in wanted]
        placed.update(segs)
        vehicles = [p for p in zone.plows if p in out]
        if not vehicles:
            orphans += segs
            continue
        for plow, run in zip(vehicles, split_runs(segs, length, len(vehicles)), strict=True):
            out[plow] += run
    orphans += [s for s in segment_ids if s not in placed]
    for sid in orphans:
        plow = min(plows, key=lambda p: (sum(length[s] for s in out[p]), p))
        out[plow].append(sid)
    return [(p, tuple(out[p])) for p in plows]


class _Planner:
    def __init__(self, network: RoadNetwork, rng: random.Random, t: float) -> None:
        self.net = network
        self.rng = rng
        self.t = t
        self.parts: list[Leg | Stop] = []
        self._lines: dict[tuple[str, bool], Polyline] = {}

    def line(self, sid: str, forward: bool) -> Polyline:
        key = (sid, forward)
        line = self._lines.get(key)
        if line is None:
            base = self.net.lines[sid]
            line = self._lines[key] = base if forward else base.reversed()
        return line

    def drive(self, line: Polyline, kmh: float, blade: bool, sid: str | None, fwd: bool) -> None:
        if line.length <= 0:
            return
        leg = Leg(line, kmh * KMH, blade, self.t, sid, fwd)
        self.parts.append(leg)
        self.t = leg.end

    def stop(self, seconds: float, reason: Literal["warmup", "idle", "park"]) -> None:
        x, y = self.position()
        self.parts.append(Stop(x, y, self.t, self.t + seconds, reason))
        self.t += seconds

    def position(self) -> tuple[float, float]:
        if not self.parts:
            return self.net.depot_xy
        last = self.parts[-1]
        if isinstance(last, Stop):
            return last.x, last.y
        return last.line.xs[-1], last.line.ys[-1]

    def transit(self, src: Node, dst: Node) -> None:
        path = self.net.path(src, dst)
        if path is None:  # disconnected network: drive straight there
            line = Polyline.of([self.net.node_xy(src), self.net.node_xy(dst)])
            self.drive(line, self.rng.uniform(*TRANSIT_SPEED_KMH), False, None, True)
            return
        for sid, fwd in path:
            self.drive(self.line(sid, fwd), self.rng.uniform(*TRANSIT_SPEED_KMH), False, sid, fwd)


@dataclass(frozen=True, slots=True)
class Driving:
    """How a scenario's plows drive and report: its seed, the chance a trip has an
    idle stop, per-fix rates of GPS gaps and invalid fixes, and the fix interval."""

    seed: int
    idle_probability: float
    gps_gap_rate: float
    gps_invalid_rate: float
    fix_s: int


def plan_trip(
    network: RoadNetwork,
    plow: str,
    *,
    dispatched_at: int,
    start: int,
    segments: Sequence[str],
    driving: Driving,
) -> Trip:
    rng = rng_for(driving.seed, "plow", plow, "trip", str(start))
    idle_probability, fix_s = driving.idle_probability, driving.fix_s
    gps_gap_rate, gps_invalid_rate = driving.gps_gap_rate, driving.gps_invalid_rate
    net = network
    p = _Planner(net, rng, float(start))
    p.stop(rng.uniform(*WARMUP_S), "warmup")
    access = Polyline.of([net.depot_xy, net.node_xy(net.depot_node)])
    p.drive(access, ACCESS_SPEED_KMH, False, None, True)
    here = net.depot_node
    idle = bool(segments) and rng.random() < idle_probability
    idle_after = rng.randrange(len(segments)) if idle else -1
    for n, sid in enumerate(segments):
        a, b = net.ends[sid]
        if here == b and here != a:
            fwd = False
        elif here == a:
            fwd = True
        else:
            to_a, to_b = net.path(here, a), net.path(here, b)
            len_a = net.path_length(to_a) if to_a is not None else math.inf
            len_b = net.path_length(to_b) if to_b is not None else math.inf
            fwd = len_a <= len_b
            p.transit(here, a if fwd else b)
        p.drive(p.line(sid, fwd), rng.uniform(*PLOW_SPEED_KMH), True, sid, fwd)
        here = b if fwd else a
        if n == idle_after:
            p.stop(rng.uniform(*IDLE_S), "idle")
    p.transit(here, net.depot_node)
    p.drive(access.reversed(), ACCESS_SPEED_KMH, False, None, True)
    p.stop(PARK_S, "park")
    end = math.ceil(p.t)
    trip = Trip(plow, dispatched_at, start, end, tuple(segments), tuple(p.parts))
    # Per-fix rates become per-second rates along the trip.
    for rate, (lo, hi), out in (
        (gps_gap_rate, GPS_GAP_S, trip.gps_gaps),
        (gps_invalid_rate, GPS_INVALID_S, trip.gps_invalid),
    ):
        t = start
        while True:
            t += geometric_gap(rng, rate / fix_s)
            if t >= end:
                break
            length = rng.randint(lo, hi)
            out.append((t, min(end, t + length)))
            t += length
    return trip


def plan_dispatch(
    network: RoadNetwork,
    *,
    at: int,
    plows: Sequence[str],
    segment_ids: Sequence[str],
    busy_until: Mapping[str, int],
    zones: Mapping[str, WorkZone],
    driving: Driving,
) -> list[Trip]:
    """Split the segments between the plows (by work zone) and plan each plow's trip.

    A plow still out on an earlier trip starts a minute after it is back.
    """
    trips = []
    for plow, chunk in assign_segments(network, zones, plows, segment_ids):
        if not chunk:
            continue
        start = max(at, busy_until[plow] + 60) if plow in busy_until else at
        trips.append(
            plan_trip(
                network,
                plow,
                dispatched_at=at,
                start=start,
                segments=chunk,
                driving=driving,
            )
        )
    return trips
