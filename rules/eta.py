"""When will my road be plowed? A per-segment ETA with a band, from work zones and progress.

Fed by the plow family (rules/plows.py) during a dispatch; writes ``segment_eta`` and
``zone_eta`` (rules/schema.py). Method (docs/rules-plow.md#eta):

* each zone's vehicles that are out (heard from since shortly before the dispatch)
  take contiguous runs of the zone's plowing order (``sensors.zones.split_runs``);
* a vehicle's remaining segments are its run's segments not yet plowed in this
  dispatch, and not passed over (a segment before one it already plowed is skipped);
* from its last fix, it drives blade up to the nearer end of the next segment (road
  distance) and plows it blade down, and so on; speeds are learned this trip and
  shrink toward the vehicle's speeds of past trips (else a town-wide prior);
* the band: speed uncertainty that narrows as the trip teaches the speeds, an
  allowance for idle stops on the late side, and the time since the last fix (a GPS
  gap) on both sides, so a gap widens the band rather than freezing it;
* 「見込み不明」 (state ``unknown``) with a reason instead of a number: ``no_vehicle``
  (no vehicle of the zone out), ``silent`` (no fix for ``silent_min``), ``returned``
  (the vehicle is back at the depot), ``skipped`` (passed over), ``too_wide`` (band
  wider than :data:`MAX_BAND_S`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

from sensors.registry import Registry
from sensors.zones import RoadGraph, split_runs

__all__ = [
    "BLADE_PRIOR_KMH",
    "EVERY_MS",
    "MAX_BAND_S",
    "TRANSIT_PRIOR_KMH",
    "EtaState",
    "SegmentEta",
    "Vehicle",
    "ZoneEta",
    "estimate",
]

BLADE_PRIOR_KMH: Final = 10.0  # blade down, a town's typical 7–13 km/h
TRANSIT_PRIOR_KMH: Final = 30.0  # blade up between segments
PRIOR_WEIGHT_S: Final = 900.0  # the prior counts like this much observed driving
PAST_WEIGHT: Final = 0.5  # a past trip's speed moves the vehicle's prior halfway
OUT_BEFORE_S: Final = 1200  # a vehicle heard from this long before the dispatch is out
MAX_BAND_S: Final = 2 * 3600  # wider than this reads 見込み不明
EVERY_MS: Final = 5 * 60_000  # how often segment_eta / zone_eta are written
# band: ± speed share of the lead (narrows with observed driving), fixed minutes, idle
SPEED_SHARE_EARLY: Final = 0.10
SPEED_SHARE_LATE: Final = 0.15
BAND_FIXED_S: Final = 180.0
IDLE_ALLOWANCE_S: Final = 1200.0  # one stop of up to 20 min on the late side
IDLE_SHARE: Final = 0.06  # expected standing per time of work (~0.3 stops/h of ~12 min)
STOP_S: Final = (240.0, 1200.0)  # a stop lasts 4–20 min (docs/domain.md#idle)
IDLE_RAMP_S: Final = 900.0  # ...reached for segments this far ahead
ON_SEGMENT_M: Final = 30.0  # the vehicle is on the segment it is plowing

Reason = Literal["", "no_vehicle", "silent", "returned", "skipped", "too_wide"]


@dataclass
class _Speeds:
    """Observed driving: metres and seconds, blade down and blade up."""

    blade_m: float = 0.0
    blade_s: float = 0.0
    transit_m: float = 0.0
    transit_s: float = 0.0

    def add(self, other: _Speeds) -> None:
        self.blade_m += other.blade_m
        self.blade_s += other.blade_s
        self.transit_m += other.transit_m
        self.transit_s += other.transit_s


@dataclass
class EtaState:
    """What the ETA keeps between feeds (pickled with the plow family's state)."""

    dispatch_id: str = ""
    trip: dict[str, _Speeds] = field(default_factory=dict)  # this dispatch, per plow
    past_mps: dict[str, tuple[float, float]] = field(default_factory=dict)  # (blade, transit)
    plowed_by: dict[str, str] = field(default_factory=dict)  # segment → plow, this dispatch
    last_eval_ms: int = -1

    def start(self, dispatch_id: str) -> None:
        """A new dispatch: this trip's speeds become the vehicles' past."""
        if dispatch_id == self.dispatch_id:
            return
        for plow, sp in self.trip.items():
            old_b, old_t = self.past_mps.get(plow, _prior())
            b = sp.blade_m / sp.blade_s if sp.blade_s > 300 else old_b
            t = sp.transit_m / sp.transit_s if sp.transit_s > 120 else old_t
            self.past_mps[plow] = (
                old_b + PAST_WEIGHT * (b - old_b),
                old_t + PAST_WEIGHT * (t - old_t),
            )
        self.trip = {}
        self.plowed_by = {}
        self.dispatch_id = dispatch_id
        self.last_eval_ms = -1

    def learn(
        self, plow: str, blade_m: float, blade_s: float, transit_m: float, transit_s: float
    ) -> None:
        self.trip.setdefault(plow, _Speeds()).add(_Speeds(blade_m, blade_s, transit_m, transit_s))

    def speeds(self, plow: str) -> tuple[float, float, float]:
        """(blade m/s, transit m/s, seconds of driving observed this trip)."""
        prior_b, prior_t = self.past_mps.get(plow, _prior())
        sp = self.trip.get(plow, _Speeds())
        blade = (sp.blade_m + prior_b * PRIOR_WEIGHT_S) / (sp.blade_s + PRIOR_WEIGHT_S)
        transit = (sp.transit_m + prior_t * PRIOR_WEIGHT_S) / (sp.transit_s + PRIOR_WEIGHT_S)
        return blade, transit, sp.blade_s + sp.transit_s


def _prior() -> tuple[float, float]:
    return BLADE_PRIOR_KMH / 3.6, TRANSIT_PRIOR_KMH / 3.6


@dataclass(frozen=True, slots=True)
class Vehicle:
    """A plow as the family last saw it."""

    t_ms: int  # last accepted fix
    lon: float
    lat: float
    away: bool  # away from the depot
    back: bool  # came back to the depot during this dispatch
    standing_since_ms: int | None  # standing away from the depot since


@dataclass(frozen=True, slots=True)
class SegmentEta:
    segment: str
    zone: str
    state: Literal["eta", "unknown", "done", "ended"]
    reason: Reason
    plow: str
    eta_ms: int = 0
    early_ms: int = 0
    late_ms: int = 0


@dataclass(frozen=True, slots=True)
class ZoneEta:
    zone: str
    contractor: str
    remaining: int  # segments not plowed yet
    remaining_m: float
    unknown: int  # of which 見込み不明
    finish_ms: int  # latest expected plowing (0 = none known)
    finish_late_ms: int


@dataclass(frozen=True, slots=True)
class Progress:
    """Where a dispatch stands at ``now_ms``: ``plowed``, the segments plowed in it
    (→ ms); ``covered``, the share of a segment's samples covered so far; the
    vehicles' last fixes and how long each may be silent before its ETAs go unknown."""

    now_ms: int
    dispatch_start_ms: int
    plowed: Mapping[str, int]
    covered: Mapping[str, float]
    vehicles: Mapping[str, Vehicle]
    silent_ms: Mapping[str, int]


def estimate(
    registry: Registry, graph: RoadGraph, state: EtaState, progress: Progress
) -> tuple[list[SegmentEta], list[ZoneEta]]:
    """Every zone segment's ETA at ``progress.now_ms``."""
    plowed, vehicles = progress.plowed, progress.vehicles
    out: list[SegmentEta] = []
    zones: list[ZoneEta] = []
    for zid, zone in sorted(registry.zones.items()):
        etas: dict[str, SegmentEta] = {}
        for sid in zone.segments:
            if sid in plowed:
                etas[sid] = SegmentEta(sid, zid, "done", "", state.plowed_by.get(sid, ""))
        out_now = [
            p
            for p in zone.plows
            if p in vehicles
            and vehicles[p].t_ms >= progress.dispatch_start_ms - OUT_BEFORE_S * 1000
        ]
        if not out_now:
            for sid in zone.segments:
                etas.setdefault(sid, SegmentEta(sid, zid, "unknown", "no_vehicle", ""))
        runs = split_runs(zone.segments, graph.length_m, len(out_now))
        for plow, run in zip(out_now, runs, strict=True):
            for e in _vehicle(graph, state, progress, zid=zid, plow=plow, run=run):
                etas.setdefault(e.segment, e)
        ordered = [etas[s] for s in zone.segments]
        out += ordered
        left = [e for e in ordered if e.state != "done"]
        known = [e for e in left if e.state == "eta"]
        zones.append(
            ZoneEta(
                zid,
                zone.contractor,
                len(left),
                sum(graph.length_m[e.segment] for e in left),
                len(left) - len(known),
                max((e.eta_ms for e in known), default=0),
                max((e.late_ms for e in known), default=0),
            )
        )
    return out, zones


def _vehicle(
    graph: RoadGraph,
    state: EtaState,
    progress: Progress,
    *,
    zid: str,
    plow: str,
    run: tuple[str, ...],
) -> list[SegmentEta]:
    """ETAs of one vehicle's run."""
    now_ms, plowed, covered = progress.now_ms, progress.plowed, progress.covered
    v = progress.vehicles[plow]
    silent_ms = progress.silent_ms.get(plow, 15 * 60_000)
    # passed over: unplowed segments before the last one this vehicle plowed
    done_idx = [i for i, s in enumerate(run) if s in plowed and state.plowed_by.get(s) == plow]
    cut = done_idx[-1] if done_idx else -1
    out = [
        SegmentEta(s, zid, "unknown", "skipped", plow) for s in run[: cut + 1] if s not in plowed
    ]
    remaining = [s for s in run[cut + 1 :] if s not in plowed]
    if not remaining:
        return out
    reason: Reason = ""
    if now_ms - v.t_ms >= silent_ms:
        reason = "silent"
    elif v.back and not v.away:
        reason = "returned"
    if reason:
        return out + [SegmentEta(s, zid, "unknown", reason, plow) for s in remaining]
    blade, transit, observed_s = state.speeds(plow)
    here = graph.nearest_node((v.lon, v.lat))
    # the segment being plowed: only what is left of it
    elapsed = _m(here, (v.lon, v.lat)) / transit
    first = remaining[0]
    share = covered.get(first, 0.0)
    start_k = 0
    if share > 0.0 and _near(graph, first, v):
        elapsed = graph.length_m[first] * (1.0 - share) / blade
        here = graph.approach(here, first)[1]
        out.append(
            _band(first, zid, plow, v=v, now_ms=now_ms, elapsed_s=elapsed, observed_s=observed_s)
        )
        start_k = 1
    for sid in remaining[start_k:]:
        dist, here = graph.approach(here, sid)
        elapsed += dist / transit + graph.length_m[sid] / blade
        out.append(
            _band(sid, zid, plow, v=v, now_ms=now_ms, elapsed_s=elapsed, observed_s=observed_s)
        )
    return out


def _near(graph: RoadGraph, sid: str, v: Vehicle) -> bool:
    a, b = graph.ends[sid]
    span = graph.length_m[sid] + ON_SEGMENT_M
    return _m(a, (v.lon, v.lat)) + _m(b, (v.lon, v.lat)) <= span * 1.2


def _m(a: tuple[float, float], b: tuple[float, float]) -> float:
    kx = 111_320.0 * math.cos(math.radians(a[1]))
    return math.hypot((a[0] - b[0]) * kx, (a[1] - b[1]) * 110_540.0)


def _band(
    sid: str, zid: str, plow: str, *, v: Vehicle, now_ms: int, elapsed_s: float, observed_s: float
) -> SegmentEta:
    """The expected plowing time ``elapsed_s`` after the last fix, with its band."""
    gap_s = max(0.0, (now_ms - v.t_ms) / 1000.0)
    base_ms = float(v.t_ms)
    if v.standing_since_ms is not None:
        # standing now: it goes on from now, after the rest of a typical stop
        stood = max(0.0, (now_ms - v.standing_since_ms) / 1000.0)
        lo_s, hi_s = STOP_S
        base_ms = now_ms + max(120.0, (max(stood, lo_s) + hi_s) / 2 - stood) * 1000.0
    eta = base_ms + elapsed_s * (1.0 + IDLE_SHARE) * 1000.0
    # speeds seen for a while tell more than the prior: the speed share shrinks to ~60 %
    learned = 1.0 - 0.4 * min(1.0, observed_s / 3600.0)
    early = BAND_FIXED_S + SPEED_SHARE_EARLY * learned * elapsed_s + gap_s
    late = (
        BAND_FIXED_S
        + SPEED_SHARE_LATE * learned * elapsed_s
        + IDLE_ALLOWANCE_S * min(1.0, elapsed_s / IDLE_RAMP_S)
        + gap_s
    )
    eta = max(eta, now_ms)  # overdue: due any moment, not in the past
    lo = max(now_ms, eta - early * 1000.0)
    hi = eta + late * 1000.0
    if hi - lo > MAX_BAND_S * 1000:
        return SegmentEta(sid, zid, "unknown", "too_wide", plow)
    return SegmentEta(sid, zid, "eta", "", plow, int(eta), int(lo), int(hi))
