"""除雪作業日報: what each plow did, from its GPS log (``plow_position``).

Per plow, the accepted fixes (a fix implying more than ``max_speed_kmh`` from the last
accepted one is a GPS jump and dropped) are projected to local metres around the depot
(equirectangular: good to centimetres over a town) and cut into *trips*: fixes come
only with the ignition on, so a silence longer than ``trip_gap_min`` ends one.

* leaving the depot: the last fix within ``depot_radius_m`` before the plow first left
  it; back: the first fix within it after it was last outside;
* blade time / km: track pieces (consecutive fixes at most ``max_gap_s`` apart) that
  start with the blade down; travel: the rest of the trip that is not idle;
* idle: standing (< ``idle_kmh``) for more than ``idle_min`` away from the depot;
* segments: the rules' ``segment_status`` points of this plow when InfluxDB holds them,
  otherwise computed the same way (docs/domain.md#segment-plowed: ≥ 80 % of the
  segment's samples within 15 m of a blade-down piece);
* dispatch: the rules' ``dispatch`` series when present; otherwise a departure at
  least ``dispatch_gap_min`` after the previous one starts a dispatch, id = JST start
  ``%Y%m%d-%H%M`` as the rules name them. A trip belongs to the dispatch that started
  it, so a night's work crossing midnight stays on its dispatch's day.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pandas as pd

from core.influxql import InfluxQuery
from reports.config import PlowReportConfig
from reports.meter import JST, midnight_ms
from rules.schema import DISPATCH, SEGMENT_STATUS
from sensors.registry import EARTH_RADIUS_M, Registry, RouteSegment
from sensors.schema import PLOW

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
MIN_MS = 60_000


@dataclass
class Geo:
    lon0: float
    lat0: float

    @classmethod
    def of(cls, registry: Registry) -> Geo:
        if registry.depot is not None:
            return cls(*registry.depot)
        pts = [c for s in registry.routes.values() for c in s.coords]
        return cls(float(np.mean([p[0] for p in pts])), float(np.mean([p[1] for p in pts])))

    def xy(self, lat: F64, lon: F64) -> tuple[F64, F64]:
        k = math.pi / 180 * EARTH_RADIUS_M
        return (lon - self.lon0) * k * math.cos(math.radians(self.lat0)), (lat - self.lat0) * k


@dataclass
class SegmentPass:
    segment: str
    name: str
    priority: int
    at_ms: int
    source: str  # segment_status | gps


@dataclass
class Trip:
    plow: str
    contractor: str
    leave_ms: int
    back_ms: int
    fixes: int
    first_fix_ms: int
    last_fix_ms: int
    dropped: int
    out_ms: int  # the first fix beyond the depot radius (the rules' dispatch start)
    blade_s: float
    idle_s: float
    total_km: float
    blade_km: float
    idle: list[tuple[int, int]] = field(default_factory=list)
    segments: list[SegmentPass] = field(default_factory=list)
    dispatch_id: str = ""
    dispatch_ms: int | None = None
    # blade-down pieces (x0, y0, x1, y1, t0) for coverage
    pieces: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros((0, 5)))

    @property
    def working_s(self) -> float:
        return (self.back_ms - self.leave_ms) / 1000

    @property
    def travel_s(self) -> float:
        return max(self.working_s - self.blade_s - self.idle_s, 0.0)

    @property
    def travel_km(self) -> float:
        return self.total_km - self.blade_km


@dataclass
class Dispatch:
    id: str
    start_ms: int
    trips: list[Trip] = field(default_factory=list)
    work_time_s: float | None = None  # 除雪作業時間: start → last priority segment plowed
    priority_total: int = 0
    priority_done: int = 0


def dispatch_id(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, JST).strftime("%Y%m%d-%H%M")


def _accept(t: I64, x: F64, y: F64, max_kmh: float) -> npt.NDArray[np.bool_]:
    """Drop fixes implying more than ``max_kmh`` from the last accepted fix."""
    keep = np.ones(len(t), dtype=bool)
    last = 0
    for i in range(1, len(t)):
        dt_s = max((t[i] - t[last]) / 1000, 1e-3)
        if math.hypot(x[i] - x[last], y[i] - y[last]) / dt_s * 3.6 > max_kmh:
            keep[i] = False
        else:
            last = i
    return keep


class PlowAnalysis:
    def __init__(self, q: InfluxQuery, registry: Registry, cfg: PlowReportConfig) -> None:
        self.q = q
        self.registry = registry
        self.cfg = cfg
        self.geo = Geo.of(registry)

    # ----------------------------------------------------------------- trips
    def trips(self, start_ms: int, end_ms: int) -> list[Trip]:
        df = self.q.frame(
            f'SELECT lat, lon, speed_kmh, blade_down, "device" FROM {PLOW} '
            f"WHERE time >= {start_ms}ms AND time < {end_ms}ms",
            str_columns=("device",),
        )
        out: list[Trip] = []
        if not len(df):
            return out
        for plow, g in df.groupby("device"):
            out.extend(self._plow_trips(str(plow), g))
        out.sort(key=lambda tr: (tr.leave_ms, tr.plow))
        return out

    def _plow_trips(self, plow: str, g: pd.DataFrame) -> list[Trip]:
        g = g.dropna(subset=["lat", "lon"]).drop_duplicates("time").sort_values("time")
        t = g["time"].to_numpy(np.int64)
        x, y = self.geo.xy(g["lat"].to_numpy(np.float64), g["lon"].to_numpy(np.float64))
        speed = g["speed_kmh"].to_numpy(np.float64) if "speed_kmh" in g else np.full(len(t), np.nan)
        blade = (
            g["blade_down"].astype("boolean").fillna(False).to_numpy(bool)
            if "blade_down" in g
            else np.zeros(len(t), dtype=bool)
        )
        # a trip's fixes are split first, so each trip counts its own dropped jumps
        cuts = np.flatnonzero(np.diff(t) > self.cfg.trip_gap_min * MIN_MS) + 1
        plow_rec = self.registry.plows.get(plow)
        contractor = plow_rec.contractor if plow_rec is not None else ""
        trips = []
        for idx in np.split(np.arange(len(t)), cuts):
            keep = _accept(t[idx], x[idx], y[idx], self.cfg.max_speed_kmh)
            sel = idx[keep]
            trip = self._trip(
                plow, contractor, t=t[sel], x=x[sel], y=y[sel], speed=speed[sel], blade=blade[sel]
            )
            if trip is not None:
                trip.dropped = int((~keep).sum())
                trips.append(trip)
        return trips

    def _trip(
        self,
        plow: str,
        contractor: str,
        *,
        t: I64,
        x: F64,
        y: F64,
        speed: F64,
        blade: npt.NDArray[np.bool_],
    ) -> Trip | None:
        away = np.hypot(x, y) > self.cfg.depot_radius_m
        if len(t) < 2 or not away.any():
            return None  # ignition on in the yard: no trip
        # fixes come only with the ignition on: a trip starting in the yard left the
        # depot when the engine started (the simulator's and the contractor's view)
        first_out, last_out = int(np.argmax(away)), len(t) - 1 - int(np.argmax(away[::-1]))
        leave = t[0] if not away[0] else t[first_out]
        back = t[-1] if not away[-1] else t[last_out]
        dts = np.diff(t) / 1000
        lens = np.hypot(np.diff(x), np.diff(y))
        # standing still, GPS noise walks a few metres per fix: not distance driven
        sp = np.nan_to_num(speed, nan=np.inf)
        lens[(sp[:-1] < self.cfg.idle_kmh) & (sp[1:] < self.cfg.idle_kmh)] = 0.0
        joined = dts <= self.cfg.max_gap_s
        bl = blade[:-1] & joined
        idle = self._idle(t, speed, away)
        pieces = np.column_stack([x[:-1], y[:-1], x[1:], y[1:], t[:-1].astype(float)])[bl]
        return Trip(
            plow=plow,
            contractor=contractor,
            leave_ms=int(leave),
            back_ms=int(back),
            fixes=len(t),
            first_fix_ms=int(t[0]),
            last_fix_ms=int(t[-1]),
            dropped=0,
            out_ms=int(t[first_out]),
            blade_s=float(dts[bl].sum()),
            idle_s=sum((b - a) / 1000 for a, b in idle),
            total_km=float(lens[joined].sum() / 1000),
            blade_km=float(lens[bl].sum() / 1000),
            idle=idle,
            pieces=pieces,
        )

    def _idle(self, t: I64, speed: F64, away: npt.NDArray[np.bool_]) -> list[tuple[int, int]]:
        slow = (np.nan_to_num(speed, nan=0.0) < self.cfg.idle_kmh) & away
        runs = []
        i = 0
        while i < len(t):
            if not slow[i]:
                i += 1
                continue
            j = i
            while j + 1 < len(t) and slow[j + 1]:
                j += 1
            # the stop lasts until the next fix that moves (or leaves the run)
            end = t[min(j + 1, len(t) - 1)]
            if end - t[i] > self.cfg.idle_min * MIN_MS:
                runs.append((int(t[i]), int(end)))
            i = j + 1
        return runs

    # -------------------------------------------------------------- segments
    def attach_segments(self, trips: Sequence[Trip], start_ms: int, end_ms: int) -> None:
        stored = self.q.frame(
            f'SELECT plow, dispatch_id, "segment" FROM {SEGMENT_STATUS} '
            f"WHERE time >= {start_ms}ms AND time < {end_ms}ms",
            str_columns=("plow", "dispatch_id", "segment"),
        )
        for trip in trips:
            rows = (
                stored[
                    (stored["plow"] == trip.plow)
                    & (stored["time"] >= trip.first_fix_ms)
                    & (stored["time"] <= trip.last_fix_ms + 15 * MIN_MS)
                ]
                if len(stored)
                else stored
            )
            if len(rows):
                trip.segments = [
                    self._pass(sid, int(ms), "segment_status")
                    for sid, ms in zip(
                        rows["segment"].astype(str), rows["time"].astype("int64"), strict=True
                    )
                    if sid in self.registry.routes
                ]
            else:
                trip.segments = self._covered(trip)
            trip.segments.sort(key=lambda s: s.at_ms)

    def _pass(self, sid: str, at_ms: int, source: str) -> SegmentPass:
        seg = self.registry.routes[sid]
        return SegmentPass(sid, seg.name, seg.priority, at_ms, source)

    def _samples(self, seg: RouteSegment) -> tuple[F64, F64]:
        lon = np.array([c[0] for c in seg.coords])
        lat = np.array([c[1] for c in seg.coords])
        x, y = self.geo.xy(lat, lon)
        d = np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(x), np.diff(y)))])
        s = np.linspace(0.0, d[-1], max(int(d[-1] / self.cfg.sample_step_m) + 1, 2))
        return np.interp(s, d, x), np.interp(s, d, y)

    def _covered(self, trip: Trip) -> list[SegmentPass]:
        """docs/domain.md#segment-plowed: ≥ cover_share of the samples within
        cover_radius_m of a blade-down piece; plowed at the moment that share is reached."""
        p = trip.pieces
        out: list[SegmentPass] = []
        if not len(p):
            return out
        r = self.cfg.cover_radius_m
        for sid, seg in self.registry.routes.items():
            sx, sy = self._samples(seg)
            near = (
                (np.minimum(p[:, 0], p[:, 2]) <= sx.max() + r)
                & (np.maximum(p[:, 0], p[:, 2]) >= sx.min() - r)
                & (np.minimum(p[:, 1], p[:, 3]) <= sy.max() + r)
                & (np.maximum(p[:, 1], p[:, 3]) >= sy.min() - r)
            )
            if not near.any():
                continue
            first = _first_cover(sx, sy, p[near], r)
            need = math.ceil(self.cfg.cover_share * len(sx))
            done = np.sort(first[np.isfinite(first)])
            if len(done) >= need:
                out.append(self._pass(sid, int(done[need - 1]), "gps"))
        return out

    # ------------------------------------------------------------ dispatches
    def dispatches(self, trips: Sequence[Trip], start_ms: int, end_ms: int) -> list[Dispatch]:
        stored = self.q.frame(
            f'SELECT started_s, work_time_s, priority_total, priority_done, "dispatch_id" '
            f"FROM {DISPATCH} WHERE time >= {start_ms}ms AND time < {end_ms}ms",
            str_columns=("dispatch_id",),
        )
        by_id: dict[str, Dispatch] = {}
        if len(stored):
            for did, g in stored.sort_values("time").groupby("dispatch_id"):
                last = g.iloc[-1]
                stored_d = Dispatch(str(did), int(last["started_s"]) * 1000)
                if pd.notna(last.get("work_time_s")) and last["work_time_s"] > 0:
                    stored_d.work_time_s = float(last["work_time_s"])
                by_id[stored_d.id] = stored_d
        if by_id:
            self._assign_stored(trips, sorted(by_id.values(), key=lambda d: d.start_ms))
        else:
            by_id = self._group(trips)
        for d in by_id.values():
            self._work_time(d)
        return sorted(by_id.values(), key=lambda d: d.start_ms)

    @staticmethod
    def _assign_stored(trips: Sequence[Trip], starts: Sequence[Dispatch]) -> None:
        """The rules start a dispatch when the first plow drives out of the depot radius:
        a trip belongs to the latest dispatch started by the time it drove out (a
        minute of slack for the rules' evaluation step)."""
        for trip in trips:
            cands = [d for d in starts if d.start_ms <= trip.out_ms + MIN_MS]
            if cands:
                d = cands[-1]
                trip.dispatch_id, trip.dispatch_ms = d.id, d.start_ms
                d.trips.append(trip)

    def _group(self, trips: Sequence[Trip]) -> dict[str, Dispatch]:
        """Without the rules' series: a departure more than dispatch_gap_min after every
        earlier trip ended starts a dispatch, at the first drive-out of its trips."""
        groups: list[list[Trip]] = []
        last_back: int | None = None
        for trip in sorted(trips, key=lambda tr: tr.leave_ms):
            if last_back is None or trip.leave_ms - last_back > self.cfg.dispatch_gap_min * MIN_MS:
                groups.append([])
            groups[-1].append(trip)
            last_back = max(trip.back_ms, last_back or 0)
        out: dict[str, Dispatch] = {}
        for group in groups:
            start = min(tr.out_ms for tr in group)
            d = Dispatch(dispatch_id(start), start, trips=sorted(group, key=lambda tr: tr.leave_ms))
            for trip in group:
                trip.dispatch_id, trip.dispatch_ms = d.id, d.start_ms
            out[d.id] = d
        return out

    def _work_time(self, d: Dispatch) -> None:
        """除雪作業時間: dispatch → the last priority-1 segment plowed in it."""
        priority = {s for s, seg in self.registry.routes.items() if seg.priority == 1}
        firsts: dict[str, int] = {}
        for trip in d.trips:
            for s in trip.segments:
                if s.segment in priority:
                    firsts[s.segment] = min(firsts.get(s.segment, s.at_ms), s.at_ms)
        d.priority_total, d.priority_done = len(priority), len(firsts)
        if d.work_time_s is None and priority and len(firsts) == len(priority):
            d.work_time_s = (max(firsts.values()) - d.start_ms) / 1000

    def day(self, day: dt.date) -> tuple[list[Trip], list[Dispatch]]:
        """Trips of the dispatches that started on ``day`` (JST)."""
        return self.period(day, day)

    def period(self, first: dt.date, last: dt.date) -> tuple[list[Trip], list[Dispatch]]:
        lo, hi = midnight_ms(first), midnight_ms(last + dt.timedelta(days=1))
        # read half a day before (the dispatch a trip after midnight belongs to) and
        # after (a night's work that started late runs on into the next day)
        start, end = lo - 12 * 60 * MIN_MS, hi + 18 * 60 * MIN_MS
        trips = self.trips(start, end)
        self.attach_segments(trips, start, end)
        ds = [d for d in self.dispatches(trips, start, end) if lo <= d.start_ms < hi]
        keep = {d.id for d in ds}
        return [tr for tr in trips if tr.dispatch_id in keep], ds


def _first_cover(sx: F64, sy: F64, p: F64, r: float) -> F64:
    """Per sample, the earliest start time of a piece passing within ``r`` (inf: none)."""
    ax, ay, bx, by, t0 = p[:, 0], p[:, 1], p[:, 2], p[:, 3], p[:, 4]
    vx, vy = bx - ax, by - ay
    vv = np.where(vx * vx + vy * vy > 0, vx * vx + vy * vy, 1.0)
    wx = sx[:, None] - ax[None, :]
    wy = sy[:, None] - ay[None, :]
    u = np.clip((wx * vx + wy * vy) / vv, 0.0, 1.0)
    d2 = (wx - u * vx) ** 2 + (wy - u * vy) ** 2
    times = np.where(d2 <= r * r, t0[None, :], np.inf)
    result: F64 = times.min(axis=1)
    return result
