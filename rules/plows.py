"""Plow family: which road segments were plowed, dispatches observed from GPS, plow work.

Input: ``plow_position`` fixes (lat, lon, speed_kmh, heading_deg, blade_down) sent every
1–5 s while a plow is out (docs/domain.md#fix-rate). Everything is computed per feed
with numpy and shapely bulk queries — a working night of 50 plows at 1 Hz is ~1.4 M
fixes and there is no per-fix Python loop (docs/rules-plow.md#performance).

Pipeline per feed:

1. *Fix filter* (docs/domain.md#fix-filter): drop fixes whose jump from the last
   accepted fix implies more than ``max_speed_kmh`` (plus ``fix_noise_m`` of GPS error).
   Ingest already dropped status-V fixes and positions outside the town.
2. *Local projection*: equirectangular metres around the depot (or the routes' centre),
   x = R·Δlon·cos(lat0), y = R·Δlat — good to centimetres over a town.
3. *Track pieces*: consecutive accepted fixes of one plow at most ``max_gap_s`` apart
   form a straight piece (a short GPS gap is bridged, a long one breaks the track). A
   piece plows when the blade is down at its start; a fix without blade state (NMEA
   loggers) plows when the piece is travelled at working speed — which is always during
   a dispatch, since driving out of the depot starts one — and its segments are marked
   ``inferred`` (docs/domain.md#inferred-status).
4. *Coverage* (docs/domain.md#segment-plowed): every route segment is sampled every
   ``sample_step_m``; a plowing piece covers the samples within ``cover_radius_m``
   (one STRtree ``dwithin`` bulk query). A segment is plowed at the first moment at
   which ≥ ``cover_share`` of its samples were covered within ``pass_window_min``; that
   moment is the ``segment_status`` point's time. Then its coverage starts afresh.
5. *Dispatch* from activity: the first plow leaving the depot after at least
   ``dispatch_gap_min`` without work starts a dispatch (id = JST start, %Y%m%d-%H%M); it
   ends when every plow is back at the depot or silent, confirmed after
   ``dispatch_end_min`` (end time = the last return). A plow leaving again within
   ``dispatch_gap_min`` of the end re-opens the same dispatch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, cast

import numpy as np
import numpy.typing as npt
import pandas as pd
import shapely

from rules import eta as eta_mod
from rules.model import (
    HOUR_MS,
    MINUTE_MS,
    Change,
    Family,
    Output,
    fmt_num,
    hhmm,
    jst,
)
from rules.params import PlowParams
from rules.schema import DISPATCH, PLOW_WORK, SEGMENT_ETA, SEGMENT_STATUS, ZONE_ETA
from rules.transitions import Category, Severity
from sensors.registry import EARTH_RADIUS_M, Registry
from sensors.schema import PLOW
from sensors.zones import RoadGraph

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
BoolA = npt.NDArray[np.bool_]

# plow_work accumulators older than this behind a plow's newest fix are final
_WORK_KEEP_MS = 6 * HOUR_MS
# closed dispatches kept for late segment events and plow_work attribution
_RECENT_DISPATCHES = 4
# plowing pieces merged into one polyline per plow and bucket (see _coverage)
_CHUNK_MS = 20_000
_SIMPLIFY_M = 3.0
# vectorised rounds of the fix filter before finishing plow by plow
_JUMP_ROUNDS = 8


@dataclass
class _PlowState:
    """What one plow's next feed needs from the previous ones (small and bounded)."""

    t: int = -1  # last accepted fix (ms); -1 = none yet
    x: float = 0.0
    y: float = 0.0
    blade: int = -1  # 1 down, 0 up, -1 unknown (NMEA)
    speed: float = math.nan
    away: bool = False
    back_ms: int | None = None  # when it last came back to the depot
    slow_start: int | None = None  # start of the current standing run away from the depot
    idle_on: bool = False
    silent_on: bool = False
    # the newest fix when it jumped from the one before: judged with the next feed
    # (t, x, y, speed, blade); a spike can only be told from a relocation by what follows
    pending: tuple[int, float, float, float, int] | None = None
    # hour start (ms) → [working_s, blade_s, idle_s, blade_m, travel_m]
    work: dict[int, list[float]] = field(default_factory=dict)


@dataclass
class _Dispatch:
    id: str
    start_ms: int
    state: str = "called"  # called → working → done
    end_ms: int | None = None
    plowed: dict[str, int] = field(default_factory=dict)  # segment → first plowed ms
    last_priority_ms: int | None = None


@dataclass
class _SegAcc:
    """Coverage of one segment since its last plowing: per sample the latest cover."""

    t: F64  # latest cover time (ms, NaN = none)
    plow: list[str]  # plow that made it ('' = none)
    inferred: BoolA


@dataclass
class _Fixes:
    """One feed's accepted fixes (sorted by plow, then time) and the pieces between
    consecutive ones: piece k runs from fix k to fix k + 1."""

    names: list[str]  # plow id of each code in ``dev``
    dev: I64
    t: I64
    x: F64
    y: F64
    speed: F64
    blade: I64  # 1 down, 0 up, -1 unknown
    is_anchor: BoolA
    away: BoolA  # beyond depot_radius_m from the depot
    slow: BoolA  # standing (< idle_kmh) away from the depot
    dt_ms: I64  # piece k: duration (0 across plows)
    seg_len: F64  # piece k: length in metres
    connected: BoolA  # piece k: same plow, at most max_gap_s
    plowing: BoolA  # piece k: blade down, or inferred
    inferred: BoolA  # piece k: no blade state, working speed

    @classmethod
    def build(
        cls, names: list[str], c: dict[str, npt.NDArray[Any]], p: PlowParams, geo: _Geometry
    ) -> _Fixes:
        dev, t, x, y = c["dev"], c["t"], c["x"], c["y"]
        blade = c["blade"]
        # the projection's origin is the depot; without one, everywhere is "away"
        away = np.hypot(x, y) > p.depot_radius_m if geo.has_depot else np.ones(len(t), dtype=bool)
        same = dev[1:] == dev[:-1]
        dt_ms = np.where(same, t[1:] - t[:-1], 0)
        seg_len = np.where(same, np.hypot(x[1:] - x[:-1], y[1:] - y[:-1]), 0.0)
        # a jump the fix filter left (a relocation, a long burst) is not driven: no piece
        possible = p.max_speed_kmh / 3.6 * dt_ms / 1000.0 + p.fix_noise_m
        connected = same & (dt_ms > 0) & (dt_ms <= p.max_gap_s * 1000) & (seg_len <= possible)
        kmh = np.where(connected, seg_len / np.maximum(dt_ms, 1) * 3600.0, 0.0)
        # "During a dispatch" (docs/domain.md#inferred-status) needs no test of its own:
        # fixes come only with the ignition on, and driving out of the depot starts a
        # dispatch. Not "away" either: roads begin at the depot gate, inside its radius.
        inferred = (blade[:-1] == -1) & (kmh >= p.inferred_min_kmh) & (kmh <= p.inferred_max_kmh)
        plowing = connected & ((blade[:-1] == 1) | inferred)
        # speed for idle: the fix's own speed, else the speed implied by its piece
        implied = np.full(len(t), np.nan)
        implied[1:][connected] = kmh[connected]
        fix_kmh = np.where(np.isnan(c["speed"]), implied, c["speed"])
        standing = fix_kmh < p.idle_kmh
        # Standing counts as idle away from the depot, and also on a road inside the
        # depot radius (a plow waiting at the first segment's start is on the road, not
        # parked in the yard). Only the few standing fixes near the depot are queried.
        near = np.flatnonzero(standing & ~away)
        on_road = np.zeros(len(t), dtype=bool)
        if len(near) and len(geo.samples):
            hit, _s = geo.tree.query(
                shapely.points(x[near], y[near]), predicate="dwithin", distance=p.cover_radius_m
            )
            on_road[near[np.unique(hit)]] = True
        slow = standing & (away | on_road)
        return cls(
            names, dev, t, x, y, c["speed"], blade, c["is_anchor"], away, slow,
            dt_ms, seg_len, connected, plowing, inferred & connected,
        )  # fmt: skip


@dataclass
class _Cover:
    """Cover events of one feed: sample, time (ms), plow code, inferred."""

    loc: I64
    t: F64
    plow: I64
    inferred: BoolA

    def take(self, idx: I64) -> _Cover:
        return _Cover(self.loc[idx], self.t[idx], self.plow[idx], self.inferred[idx])


class _Geometry:
    """Projected, sampled route segments and their STRtree (rebuilt, never pickled)."""

    def __init__(self, registry: Registry, sample_step_m: float) -> None:
        segs = sorted(registry.routes.values(), key=lambda s: s.id)
        if registry.depot is not None:
            self.lon0, self.lat0 = registry.depot
        elif segs:
            pts = np.array([c for s in segs for c in s.coords], dtype=float)
            self.lon0, self.lat0 = float(pts[:, 0].mean()), float(pts[:, 1].mean())
        else:
            self.lon0, self.lat0 = 0.0, 0.0
        self.kx = EARTH_RADIUS_M * math.cos(math.radians(self.lat0)) * math.pi / 180.0
        self.ky = EARTH_RADIUS_M * math.pi / 180.0
        self.has_depot = registry.depot is not None
        self.ids = [s.id for s in segs]
        self.priority = {s.id: s.priority for s in segs}
        self.length_m: dict[str, float] = {}
        xs: list[F64] = []
        owner: list[I64] = []
        for i, s in enumerate(segs):
            c = np.asarray(s.coords, dtype=float)
            line = shapely.linestrings(*self.project(c[:, 1], c[:, 0]))
            length = float(shapely.length(line))
            self.length_m[s.id] = length
            n = max(2, math.ceil(length / sample_step_m) + 1)
            pts = shapely.line_interpolate_point(line, np.linspace(0.0, length, n))
            xs.append(shapely.get_coordinates(pts))
            owner.append(np.full(n, i, dtype=np.int64))
        self.samples = np.concatenate(xs) if xs else np.zeros((0, 2))
        self.owner = np.concatenate(owner) if owner else np.zeros(0, dtype=np.int64)
        # sample index range of each segment (samples are stored segment by segment)
        self.first = np.searchsorted(self.owner, np.arange(len(segs) + 1))
        points: npt.NDArray[np.object_] = np.asarray(shapely.points(self.samples))
        self.tree = shapely.STRtree(points)

    def project(self, lat: F64, lon: F64) -> tuple[F64, F64]:
        return (lon - self.lon0) * self.kx, (lat - self.lat0) * self.ky


def _dispatch_id(start_ms: int) -> str:
    return jst(start_ms).strftime("%Y%m%d-%H%M")


class PlowFamily(Family):
    name: ClassVar[str] = "plow"
    category: ClassVar[Category] = "plow"
    inputs: ClassVar[dict[str, tuple[str, ...]]] = {
        PLOW: ("lat", "lon", "speed_kmh", "heading_deg", "blade_down")
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._plows: dict[str, _PlowState] = {}
        self._acc: dict[str, _SegAcc] = {}
        self._dispatch: _Dispatch | None = None
        self._recent: list[_Dispatch] = []  # closed ones, newest last
        self._geo_cache: _Geometry | None = None
        self._eta = eta_mod.EtaState()
        self._graph_cache: RoadGraph | None = None

    # ------------------------------------------------------------------ plumbing
    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.pop("_geo_cache", None)  # rebuilt from the registry after a restart
        state.pop("_graph_cache", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("_eta", eta_mod.EtaState())  # a state saved before the ETA
        super().__setstate__(state)
        self._geo_cache = None
        self._graph_cache = None

    def rebind(self, registry: Registry, config: Any, shared: Any) -> None:
        super().rebind(registry, config, shared)
        self._geo_cache = None  # the routes may have changed
        self._graph_cache = None

    @property
    def _p(self) -> PlowParams:
        p: PlowParams = self.config.plow
        return p

    @property
    def _geo(self) -> _Geometry:
        if self._geo_cache is None:
            self._geo_cache = _Geometry(self.registry, self._p.sample_step_m)
        return self._geo_cache

    # ------------------------------------------------------------------ feed
    def feed(self, measurement: str, frame: pd.DataFrame, out: Output) -> None:
        if measurement != PLOW or frame.empty:
            return
        frame = frame[frame["lat"].notna() & frame["lon"].notna()]
        if frame.empty:
            return
        fx = self._fixes(frame)
        if fx is None:
            return
        names, dev, t = fx.names, fx.dev, fx.t
        # --- coverage → segment events
        seg_events = self._coverage(fx)
        # --- departures and returns → dispatch events, merged with segment events
        moves = self._moves(fx)
        last = np.flatnonzero(np.r_[dev[1:] != dev[:-1], True])
        prev_t = {}
        for i in last:
            # heard from until its last fix (a dispatch's end waits for it), before events
            st = self._plows.setdefault(names[int(dev[i])], _PlowState())
            prev_t[names[int(dev[i])]] = st.t
            st.t = int(t[i])
        self._run_events(seg_events, moves, out)
        # --- idle and silence findings, plow_work hours
        self._idle(fx, out)
        self._silent_gaps(fx, prev_t, out)
        self._work(fx, out)
        self._eta_learn(fx)
        # --- remember each plow's last accepted fix
        for i in last:
            st = self._plows[names[int(dev[i])]]
            st.t, st.x, st.y = int(t[i]), float(fx.x[i]), float(fx.y[i])
            st.blade, st.speed = int(fx.blade[i]), float(fx.speed[i])
            st.away = bool(fx.away[i])

    def _fixes(self, frame: pd.DataFrame) -> _Fixes | None:
        """The feed's fixes as arrays, each plow's last accepted fix prepended as an
        anchor, filtered (docs/domain.md#fix-filter), with their pieces."""
        p = self._p
        geo = self._geo
        dev_codes, dev_names = pd.factorize(frame["device"], sort=False)
        names = [str(d) for d in dev_names]
        lat = frame["lat"].to_numpy(dtype=np.float64)
        lon = frame["lon"].to_numpy(dtype=np.float64)
        x, y = geo.project(lat, lon)
        bd = frame["blade_down"]
        blade_v = bd.fillna(False).astype(bool).to_numpy()
        cols: dict[str, npt.NDArray[Any]] = {
            "dev": dev_codes.astype(np.int64),
            "t": frame["time"].to_numpy(dtype=np.int64),
            "x": x,
            "y": y,
            "speed": pd.to_numeric(frame["speed_kmh"], errors="coerce").to_numpy(dtype=np.float64),
            "blade": np.where(bd.isna().to_numpy(), -1, blade_v.astype(np.int64)),
            "is_anchor": np.zeros(len(frame), dtype=bool),
        }
        # (code, t, x, y, speed, blade, is_anchor): last accepted fixes and pending ones
        rows: list[tuple[int, int, float, float, float, int, bool]] = []
        for i, n in enumerate(names):
            st = self._plows.get(n)
            if st is None:
                continue
            if st.t >= 0:
                rows.append((i, st.t, st.x, st.y, st.speed, st.blade, True))
            if st.pending is not None:
                rows.append((i, *st.pending, False))
                st.pending = None
        if rows:
            extra: dict[str, npt.NDArray[Any]] = {
                "dev": np.array([r[0] for r in rows], dtype=np.int64),
                "t": np.array([r[1] for r in rows], dtype=np.int64),
                "x": np.array([r[2] for r in rows], dtype=np.float64),
                "y": np.array([r[3] for r in rows], dtype=np.float64),
                "speed": np.array([r[4] for r in rows], dtype=np.float64),
                "blade": np.array([r[5] for r in rows], dtype=np.int64),
                "is_anchor": np.array([r[6] for r in rows], dtype=bool),
            }
            cols = {k: np.concatenate([extra[k], v]) for k, v in cols.items()}
            # by plow, then time; the anchor first at equal times
            order = np.lexsort((~cols["is_anchor"], cols["t"], cols["dev"]))
            cols = {k: v[order] for k, v in cols.items()}
        dev, t, is_anchor = cols["dev"], cols["t"], cols["is_anchor"]
        # a fix at or before the anchor's time was already processed
        keep = _after_anchor(dev, t, is_anchor)
        keep &= _jump_filter(
            dev,
            t,
            (cols["x"], cols["y"]),
            keep,
            (p.max_speed_kmh / 3.6, p.fix_noise_m, p.max_gap_s),
        )
        cols = {k: v[keep] for k, v in cols.items()}
        self._hold_last_jump(names, cols, p)
        if not len(cols["t"]):
            return None
        return _Fixes.build(names, cols, p, geo)

    def _hold_last_jump(
        self, names: list[str], cols: dict[str, npt.NDArray[Any]], p: PlowParams
    ) -> None:
        """A plow's newest fix that jumped from the one before stays pending: whether it
        is a spike shows only with the next fix (docs/domain.md#fix-filter)."""
        dev, t, x, y = cols["dev"], cols["t"], cols["x"], cols["y"]
        if len(t) < 2:
            return
        last = np.flatnonzero(np.r_[dev[1:] != dev[:-1], True])
        last = last[(last > 0) & ~cols["is_anchor"][last]]
        last = last[dev[last] == dev[last - 1]]
        dt = (t[last] - t[last - 1]) / 1000.0
        dist = np.hypot(x[last] - x[last - 1], y[last] - y[last - 1])
        jump = (dt <= p.max_gap_s) & (dist > p.max_speed_kmh / 3.6 * dt + p.fix_noise_m)
        held = last[jump]
        for i in held:
            st = self._plows.setdefault(names[int(dev[i])], _PlowState())
            st.pending = (
                int(t[i]), float(x[i]), float(y[i]), float(cols["speed"][i]), int(cols["blade"][i])
            )  # fmt: skip
        if len(held):
            keep = np.ones(len(t), dtype=bool)
            keep[held] = False
            for k in list(cols):
                cols[k] = cols[k][keep]

    # ------------------------------------------------------------------ coverage
    def _coverage(self, fx: _Fixes) -> list[tuple[int, int, str, Any]]:
        """Segment plowed events ``(time, 0, segment, (plow, coverage, inferred))``."""
        geo = self._geo
        window = self._p.pass_window_min * MINUTE_MS
        pairs = self._cover_pairs(fx)
        events: list[tuple[int, int, str, Any]] = []
        if pairs is not None:
            si, ev = pairs
            ev_seg = geo.owner[si]
            # plow names as codes: this feed's names, then others still in accumulators
            codes = {n: i for i, n in enumerate(fx.names)}
            order = np.lexsort((si, ev.t, ev_seg))
            bounds = np.searchsorted(ev_seg[order], np.arange(len(geo.ids) + 1))
            for k in np.flatnonzero(np.diff(bounds)):
                sel = order[bounds[k] : bounds[k + 1]]
                lo = int(geo.first[k])
                cover = _Cover(si[sel] - lo, ev.t[sel], ev.plow[sel], ev.inferred[sel])
                events += self._passes(int(k), cover, codes, window)
        # drop stale accumulations (nothing in them can count any more)
        newest = float(fx.t.max())
        for sid in [s for s, a in self._acc.items() if np.nanmax(a.t) <= newest - window]:
            del self._acc[sid]
        return events

    def _cover_pairs(self, fx: _Fixes) -> tuple[I64, _Cover] | None:
        """(sample index, cover event) pairs of this feed's plowing pieces."""
        geo = self._geo
        t, inferred = fx.t, fx.inferred
        idx = np.flatnonzero(fx.plowing)
        if not len(idx) or not len(geo.samples):
            return None
        # Consecutive plowing pieces of one plow within one _CHUNK_MS bucket become one
        # polyline (same covered samples, ~20× fewer geometries and pairs); it covers
        # at its last fix, so a plowed time is late by at most the bucket.
        brk = np.r_[
            True,
            (idx[1:] != idx[:-1] + 1)
            | (inferred[idx[1:]] != inferred[idx[:-1]])
            | (t[idx[1:]] // _CHUNK_MS != t[idx[:-1]] // _CHUNK_MS),
        ]
        c_first = idx[brk]
        c_last = np.r_[idx[np.flatnonzero(brk)[1:] - 1], idx[-1]] + 1  # last vertex (fix)
        n_vert = c_last - c_first + 1
        vert = np.repeat(c_first - np.cumsum(np.r_[0, n_vert[:-1]]), n_vert) + np.arange(
            int(n_vert.sum())
        )
        lines = shapely.linestrings(
            np.column_stack([fx.x[vert], fx.y[vert]]),
            indices=np.repeat(np.arange(len(c_first)), n_vert),
        )
        # Plain Douglas-Peucker: the topology-preserving variant (shapely's default)
        # cost ~25× more, and a 20 s piece of track has no topology worth keeping —
        # only which samples lie within cover_radius_m of it counts.
        lines = shapely.simplify(lines, _SIMPLIFY_M, preserve_topology=False)
        pi, si = geo.tree.query(lines, predicate="dwithin", distance=self._p.cover_radius_m)
        if not len(pi):
            return None
        cover = _Cover(
            np.zeros(0, dtype=np.int64),
            t[c_last][pi].astype(np.float64),
            fx.dev[c_first][pi],
            inferred[c_first][pi],
        )
        return si.astype(np.int64), cover

    def _passes(
        self, k: int, c: _Cover, codes: dict[str, int], window: int
    ) -> list[tuple[int, int, str, Any]]:
        """Plowed moments of segment ``k`` from its earlier and new cover events."""
        geo = self._geo
        sid = geo.ids[k]
        n = int(geo.first[k + 1]) - int(geo.first[k])
        need = math.ceil(self.params("route", sid).cover_share * n - 1e-9)
        acc = self._acc.get(sid)
        if acc is not None:
            have = np.flatnonzero(~np.isnan(acc.t))
            old = np.array([codes.setdefault(acc.plow[i], len(codes)) for i in have], np.int64)
            c = _Cover(
                np.concatenate([have, c.loc]),
                np.concatenate([acc.t[have], c.t]),
                np.concatenate([old, c.plow]),
                np.concatenate([acc.inferred[have], c.inferred]),
            )
            c = c.take(np.lexsort((c.loc, c.t)))
        by_code = {v: name for name, v in codes.items()}
        events: list[tuple[int, int, str, Any]] = []
        while len(c.t):
            hit = _first_covered_prefix(c.loc, c.t, n, need, window)
            if hit is None:
                break
            when = c.t[hit]
            # events at the same moment (one chunk's samples) all belong to the hit
            hit = int(np.searchsorted(c.t, when, side="right")) - 1
            # the covering events: per sample its latest cover in the window
            latest = _latest_per_sample(c.loc[: hit + 1], n)
            live = latest[latest >= 0]
            live = live[c.t[live] > when - window]
            top = int(np.argmax(np.bincount(c.plow[live])))  # ties: lowest code
            inferred = bool(np.mean(c.inferred[live]) >= 0.5)
            events.append((int(when), 0, sid, (by_code[top], len(live) / n, inferred)))
            c = c.take(np.arange(hit + 1, len(c.t)))
        # keep each sample's latest cover that can still count
        if len(c.t):
            latest = _latest_per_sample(c.loc, n)
            ok = latest >= 0
            a = _SegAcc(np.full(n, np.nan), [""] * n, np.zeros(n, dtype=bool))
            a.t[ok] = c.t[latest[ok]]
            for j in np.flatnonzero(ok):
                a.plow[j] = by_code[int(c.plow[latest[j]])]
            a.inferred[ok] = c.inferred[latest[ok]]
            self._acc[sid] = a
        else:
            self._acc.pop(sid, None)
        return events

    # ------------------------------------------------------------------ dispatch
    def _moves(self, fx: _Fixes) -> list[tuple[int, int, str, Any]]:
        """Departures ``(time, 1, plow, True)`` and returns ``(time, 1, plow, False)``."""
        dev, names, t, away, is_anchor = fx.dev, fx.names, fx.t, fx.away, fx.is_anchor
        prev_away = np.r_[False, away[:-1]]
        first = np.r_[True, dev[1:] != dev[:-1]]
        # a plow's first fix ever counts as a departure when it is already away
        prev_away = np.where(first & ~is_anchor, False, prev_away)
        change = (away != prev_away) & ~is_anchor & ~(first & ~away)
        return [(int(t[i]), 1, names[int(dev[i])], bool(away[i])) for i in np.flatnonzero(change)]

    def _run_events(
        self,
        seg_events: list[tuple[int, int, str, Any]],
        moves: list[tuple[int, int, str, Any]],
        out: Output,
    ) -> None:
        for when, kind, subject, data in sorted(
            [*seg_events, *moves], key=lambda e: (e[0], e[1], e[2])
        ):
            self._close_if_done(when, out)
            if kind == 1:
                st = self._plows.setdefault(subject, _PlowState())
                st.away = bool(data)
                if data:
                    st.back_ms = None
                    self._depart(when, out)
                else:
                    st.back_ms = when
            else:
                self._plowed(when, subject, data, out)

    def _depart(self, when: int, out: Output) -> None:
        d = self._dispatch
        if d is not None:
            return
        gap = self._p.dispatch_gap_min * MINUTE_MS
        last = self._recent[-1] if self._recent else None
        if last is not None and last.end_ms is not None and when - last.end_ms < gap:
            # back out within the gap: the same dispatch goes on
            self._recent.pop()
            last.state = "working" if last.plowed else "called"
            last.end_ms = None
            self._dispatch = last
        else:
            self._dispatch = _Dispatch(_dispatch_id(when), when)
        d = self._dispatch
        self.shared.active_dispatch = d.id
        self.shared.active_dispatch_start_ms = d.start_ms
        self._dispatch_point(d, when, out)

    def _plowed(self, when: int, sid: str, data: tuple[str, float, bool], out: Output) -> None:
        plow, coverage, inferred = data
        d = self._dispatch_at(when)
        prio = self._geo.priority.get(sid, 0)
        out.point(
            SEGMENT_STATUS,
            {"segment": sid, "priority": str(prio)},
            {
                "plow": plow,
                "coverage": round(float(coverage), 4),
                "inferred": bool(inferred),
                "dispatch_id": d.id if d is not None else "",
            },
            when,
        )
        if d is None:
            return
        if sid not in d.plowed:
            d.plowed[sid] = when
            if d is self._dispatch:
                self._eta.plowed_by.setdefault(sid, plow)
            if prio == 1:
                d.last_priority_ms = max(when, d.last_priority_ms or when)
        if d.state == "called":
            d.state = "working"
        self._dispatch_point(d, when, out)

    def _dispatch_at(self, when: int) -> _Dispatch | None:
        for d in [self._dispatch, *reversed(self._recent)]:
            if d is None:
                continue
            if d.start_ms <= when and (d.end_ms is None or when <= d.end_ms):
                return d
        return None

    def _close_if_done(self, now: int, out: Output) -> None:
        """End the dispatch once every plow has been back (or silent) long enough."""
        d = self._dispatch
        self.shared.plows_back_ms = None
        if d is None:
            return
        p = self._p
        ends = []
        for st in self._plows.values():
            if st.t < 0:
                continue
            if st.away:
                if now - st.t < p.silent_min * MINUTE_MS:
                    return  # still out and heard from
                ends.append(st.t)  # silent away from the depot: gone since its last fix
            elif st.back_ms is not None and st.back_ms >= d.start_ms:
                ends.append(st.back_ms)
        end = max(ends) if ends else d.start_ms
        if now - end < p.dispatch_end_min * MINUTE_MS:
            # Every plow is back: the snow rules count from here already (a call in
            # the wait would count the snow this plowing cleared).
            self.shared.plows_back_ms = end
            return
        d.end_ms = end
        d.state = "done"
        self._dispatch_point(d, end, out)
        self._eta_ended(d, end, out)
        self._recent = [*self._recent, d][-_RECENT_DISPATCHES:]
        self._dispatch = None
        self.shared.active_dispatch = None
        self.shared.active_dispatch_start_ms = None
        # the town was last plowed when the last plow came back
        self.shared.plowed(end)

    def _dispatch_point(self, d: _Dispatch, when: int, out: Output) -> None:
        geo = self._geo
        prio_ids = [s for s in geo.ids if geo.priority[s] == 1]
        prio_done = sum(1 for s in prio_ids if s in d.plowed)
        work = (d.last_priority_ms - d.start_ms) // 1000 if d.last_priority_ms else 0
        out.point(
            DISPATCH,
            {"dispatch_id": d.id},
            {
                "state": d.state,
                "started_s": d.start_ms // 1000,
                "priority_total": len(prio_ids),
                "priority_done": prio_done,
                "segments_total": len(geo.ids),
                "segments_done": len(d.plowed),
                "progress": round(len(d.plowed) / len(geo.ids), 4) if geo.ids else 0.0,
                "work_time_s": int(work),
            },
            when,
        )

    # ------------------------------------------------------------------ idle, silent
    def _idle(self, fx: _Fixes, out: Output) -> None:
        """plow.idle: standing (< idle_kmh) away from the depot for more than idle_min."""
        dev, names, t, slow, is_anchor = fx.dev, fx.names, fx.t, fx.slow, fx.is_anchor
        n = len(t)
        first = np.r_[True, dev[1:] != dev[:-1]]
        brk = first | (slow != np.r_[False, slow[:-1]])
        starts = np.flatnonzero(brk)
        ends = np.r_[starts[1:], n] - 1  # last index of each run
        closed = np.r_[~first[ends[:-1] + 1], False] if len(ends) else np.zeros(0, bool)
        last_t = np.where(closed, t[np.minimum(ends + 1, n - 1)], t[ends])
        # only runs that can matter: long standing runs, a plow's first run (it may carry
        # a standing run or an idle alert over from the last feed) and its last run
        shortest = MINUTE_MS  # idle_min is at least a minute
        cand = (slow[starts] & (last_t - t[starts] > shortest)) | first[starts] | ~closed
        for r in np.flatnonzero(cand):
            i0 = int(starts[r])
            name = names[int(dev[i0])]
            st = self._plows.setdefault(name, _PlowState())
            if slow[i0]:
                # carried over from the previous feed when the run begins at the anchor
                carried = is_anchor[i0] and st.slow_start is not None
                begin = st.slow_start if carried and st.slow_start is not None else int(t[i0])
                st.slow_start = None if closed[r] else begin
                limit = self.params("plow", name).idle_min * MINUTE_MS
                last = int(last_t[r])
                if last - begin > limit and not st.idle_on:
                    st.idle_on = True
                    self._idle_finding(name, True, begin + limit, (begin, last), out)
                if closed[r] and st.idle_on:
                    st.idle_on = False
                    self._idle_finding(name, False, last, (begin, last), out)
            else:
                st.slow_start = None
                if st.idle_on:  # the standing run ended right at the anchor
                    st.idle_on = False
                    self._idle_finding(name, False, int(t[i0]), (int(t[i0]), int(t[i0])), out)

    def _idle_finding(
        self, plow: str, active: bool, at: int, span: tuple[int, int], out: Output
    ) -> None:
        begin, last = span
        minutes = (last - begin) / MINUTE_MS
        name = self._plow_name(plow)
        ip = self.params("plow", plow)
        self.finding(
            out,
            "plow",
            Change(
                rule="plow.idle",
                subject=plow,
                active=active,
                at_ms=at,
                severity=Severity.INFO,
                values={"since": hhmm(begin), "minutes": round(minutes, 1)},
                message=(
                    f"{name} {plow}: {hhmm(begin)} から停車中 "
                    f"({fmt_num(minutes)} 分, 基準 {ip.idle_kmh:g} km/h 未満 {ip.idle_min} 分)。"
                    if active
                    else f"{name} {plow}: 停車終了 ({hhmm(begin)}–{hhmm(last)})。"
                ),
                message_en=(
                    f"{plow} standing since {hhmm(begin)} ({fmt_num(minutes)} min)."
                    if active
                    else f"{plow} moving again ({hhmm(begin)}–{hhmm(last)})."
                ),
            ),
        )

    def _plow_name(self, plow: str) -> str:
        """The plow's name in the registry (its id when the registry does not know it)."""
        return self.registry.plows[plow].name if plow in self.registry.plows else plow

    def _silent_gaps(self, fx: _Fixes, prev_t: dict[str, int], out: Output) -> None:
        """Gaps inside the feed (or since the anchor) while away, during a dispatch; and
        the end of a silence the tick reported."""
        dev, names, t, away, is_anchor = fx.dev, fx.names, fx.t, fx.away, fx.is_anchor
        same = np.r_[False, dev[1:] == dev[:-1]]
        gap = np.r_[0, t[1:] - t[:-1]]
        prev_away = np.r_[False, away[:-1]]
        after_anchor = np.r_[False, is_anchor[:-1]] & same
        first_new = np.r_[True, dev[1:] != dev[:-1]] & ~is_anchor
        cand = (same & prev_away & ~is_anchor & (gap >= MINUTE_MS)) | after_anchor | first_new
        for i in np.flatnonzero(cand):
            name = names[int(dev[i])]
            st = self._plows.setdefault(name, _PlowState())
            limit = self.params("plow", name).silent_min * MINUTE_MS
            long_gap = bool(same[i] and prev_away[i] and gap[i] >= limit)
            if long_gap and not st.silent_on and self._dispatch_at(int(t[i - 1])):
                self._silent_finding(name, True, int(t[i - 1]) + limit, int(t[i - 1]), out)
                st.silent_on = True
            if st.silent_on:
                st.silent_on = False
                since = int(t[i - 1]) if same[i] else prev_t.get(name, int(t[i]))
                self._silent_finding(name, False, int(t[i]), since, out)

    def _silent_finding(self, plow: str, active: bool, at: int, last: int, out: Output) -> None:
        name = self._plow_name(plow)
        limit = self.params("plow", plow).silent_min
        self.finding(
            out,
            "plow",
            Change(
                rule="plow.silent",
                subject=plow,
                active=active,
                at_ms=at,
                severity=Severity.WARNING,
                values={"last_fix": hhmm(last), "silent_min": limit},
                message=(
                    f"{name} {plow}: 出動中に {hhmm(last)} から位置が届きません "
                    f"({limit} 分以上, 車庫外)。"
                    if active
                    else f"{name} {plow}: 位置の受信が再開しました ({hhmm(at)})。"
                ),
                message_en=(
                    f"{plow}: no position since {hhmm(last)} during a dispatch, "
                    "away from the depot."
                    if active
                    else f"{plow}: positions again from {hhmm(at)}."
                ),
            ),
        )

    # ------------------------------------------------------------------ plow_work
    def _work(self, fx: _Fixes, out: Output) -> None:
        """plow_work per plow-hour: intervals between fixes, by the hour they start in."""
        dev, names, t, away, slow = fx.dev, fx.names, fx.t, fx.away, fx.slow
        plowing, seg_len = fx.plowing, fx.seg_len
        idx = np.flatnonzero(fx.connected)
        if not len(idx):
            return
        dt = fx.dt_ms[idx] / 1000.0
        # ignition on away from the depot, or plowing (R001 starts inside the depot radius)
        out_away = away[idx] | away[idx + 1] | plowing[idx]
        frame = pd.DataFrame(
            {
                "dev": dev[idx],
                "hour": t[idx] - t[idx] % HOUR_MS,
                "working": np.where(out_away, dt, 0.0),
                "blade": np.where(plowing[idx], dt, 0.0),
                "idle": np.where(slow[idx] & slow[idx + 1], dt, 0.0),
                "blade_m": np.where(plowing[idx], seg_len[idx], 0.0),
                "travel": seg_len[idx],
                "t0": t[idx],
            }
        )
        g = frame.groupby(["dev", "hour"], sort=True).agg(
            working=("working", "sum"),
            blade=("blade", "sum"),
            idle=("idle", "sum"),
            blade_m=("blade_m", "sum"),
            travel=("travel", "sum"),
            t0=("t0", "min"),
        )
        for key, row in g.iterrows():  # plow-hours: a few hundred a night
            d, hour = cast(tuple[int, int], key)
            name = names[int(d)]
            st = self._plows.setdefault(name, _PlowState())
            acc = st.work.setdefault(int(hour), [0.0, 0.0, 0.0, 0.0, 0.0])
            for j, col in enumerate(("working", "blade", "idle", "blade_m", "travel")):
                acc[j] += float(row[col])
            disp = self._dispatch_at(int(row["t0"]))
            if disp is None and self._dispatch is not None:
                disp = self._dispatch
            plow = self.registry.plows.get(name)
            out.point(
                PLOW_WORK,
                {"device": name, "contractor": plow.contractor if plow else ""},
                {
                    "working_s": round(acc[0]),
                    "blade_s": round(acc[1]),
                    "idle_s": round(acc[2]),
                    "blade_km": round(acc[3] / 1000.0, 3),
                    "travel_km": round(acc[4] / 1000.0, 3),
                    "dispatch_id": disp.id if disp is not None else "",
                },
                int(hour),
            )
            newest = max(st.work)
            for h in [h for h in st.work if h < newest - _WORK_KEEP_MS]:
                del st.work[h]

    # ------------------------------------------------------------------ tick
    def tick(self, now_ms: int, out: Output) -> None:
        d = self._dispatch
        if d is not None:
            for name, st in sorted(self._plows.items()):
                limit = self.params("plow", name).silent_min * MINUTE_MS
                if st.t >= 0 and st.away and not st.silent_on and now_ms - st.t >= limit:
                    st.silent_on = True
                    self._silent_finding(name, True, st.t + limit, st.t, out)
        self._close_if_done(now_ms, out)
        self._eta_points(now_ms, out)

    # ------------------------------------------------------------------ ETA
    # The ETA itself is rules/eta.py; here only what it learns from the fixes and the
    # points it gives (docs/rules-plow.md#eta).
    def _eta_learn(self, fx: _Fixes) -> None:
        """Blade-down and blade-up driving of this feed, per plow, for the speeds."""
        d = self._dispatch
        if d is None or not self.registry.zones:
            return
        self._eta.start(d.id)
        k = np.flatnonzero(fx.connected & (fx.t[:-1] >= d.start_ms))
        kmh = fx.seg_len[k] / np.maximum(fx.dt_ms[k], 1) * 3600.0
        blade = fx.plowing[k] & (kmh >= 2.0)
        transit = ~fx.plowing[k] & (fx.away[k] | fx.away[k + 1]) & (kmh >= 15.0)
        n = len(fx.names)
        sums = [
            np.bincount(fx.dev[k], weights=np.where(sel, w, 0.0), minlength=n)
            for sel in (blade, transit)
            for w in (fx.seg_len[k], fx.dt_ms[k] / 1000.0)
        ]
        for i, name in enumerate(fx.names):
            self._eta.learn(name, *(float(a[i]) for a in sums))

    def _eta_points(self, now_ms: int, out: Output) -> None:
        """segment_eta and zone_eta every ETA_EVERY_MIN during a dispatch."""
        d = self._dispatch
        st = self._eta
        if d is None or not self.registry.zones:
            return
        st.start(d.id)
        if st.last_eval_ms >= 0 and now_ms - st.last_eval_ms < eta_mod.EVERY_MS:
            return
        st.last_eval_ms = now_ms
        if self._graph_cache is None:
            self._graph_cache = RoadGraph(self.registry.routes)
        geo = self._geo
        vehicles = {
            name: eta_mod.Vehicle(
                p.t,
                geo.lon0 + p.x / geo.kx,
                geo.lat0 + p.y / geo.ky,
                p.away,
                p.back_ms is not None and p.back_ms >= d.start_ms,
                p.slow_start,
            )
            for name, p in self._plows.items()
            if p.t >= 0
        }
        covered = {
            sid: float(np.count_nonzero(~np.isnan(a.t))) / len(a.t) for sid, a in self._acc.items()
        }
        silent = {n: self.params("plow", n).silent_min * MINUTE_MS for n in vehicles}
        progress = eta_mod.Progress(now_ms, d.start_ms, d.plowed, covered, vehicles, silent)
        segs, zones = eta_mod.estimate(self.registry, self._graph_cache, st, progress)
        self._eta_write(d.id, now_ms, segs, zones, out)

    def _eta_ended(self, d: _Dispatch, end: int, out: Output) -> None:
        """The dispatch ended: what is still unplowed is not expected any more."""
        if not self.registry.zones:
            return
        segs = [
            eta_mod.SegmentEta(s, z.id, "done" if s in d.plowed else "ended", "", "")
            for z in self.registry.zones.values()
            for s in z.segments
        ]
        self._eta_write(d.id, end, segs, [], out)

    def _eta_write(
        self,
        dispatch_id: str,
        when: int,
        segs: list[eta_mod.SegmentEta],
        zones: list[eta_mod.ZoneEta],
        out: Output,
    ) -> None:
        for e in segs:
            out.point(
                SEGMENT_ETA,
                {"segment": e.segment, "zone": e.zone},
                {
                    "state": e.state,
                    "reason": e.reason,
                    "plow": e.plow,
                    "eta_s": e.eta_ms // 1000,
                    "early_s": e.early_ms // 1000,
                    "late_s": e.late_ms // 1000,
                    "dispatch_id": dispatch_id,
                },
                when,
            )
        for z in zones:
            out.point(
                ZONE_ETA,
                {"zone": z.zone, "contractor": z.contractor},
                {
                    "remaining_segments": z.remaining,
                    "remaining_km": round(z.remaining_m / 1000.0, 3),
                    "unknown_segments": z.unknown,
                    "finish_s": z.finish_ms // 1000,
                    "finish_late_s": z.finish_late_ms // 1000,
                    "dispatch_id": dispatch_id,
                },
                when,
            )


# ---------------------------------------------------------------------- helpers
def _after_anchor(dev: I64, t: I64, is_anchor: BoolA) -> BoolA:
    """Drop fixes not newer than their plow's anchor (already processed)."""
    if not is_anchor.any():
        return np.ones(len(t), dtype=bool)
    first = np.r_[True, dev[1:] != dev[:-1]]
    grp = np.cumsum(first) - 1
    anchor_t = np.full(int(grp[-1]) + 1, np.iinfo(np.int64).min)
    anchor_t[grp[is_anchor]] = t[is_anchor]
    out: BoolA = is_anchor | (t > anchor_t[grp])
    return out


def _jump_filter(
    dev: I64, t: I64, xy: tuple[F64, F64], keep: BoolA, limits: tuple[float, float, float]
) -> BoolA:
    """Drop isolated bad fixes: a fix that jumps away from its predecessor and back to
    its successor (each step implying more than the speed limit plus GPS noise).

    Vectorised by rounds (a burst of k bad fixes needs up to k rounds, bounded). A jump
    that is not a spike — the track goes on from the new place, or the burst outlasts
    the rounds — is left to :meth:`_Fixes.build`, which does not connect across it."""
    max_mps, noise_m, max_gap_s = limits
    x, y = xy
    ok: BoolA = keep.copy()
    for _ in range(_JUMP_ROUNDS):
        idx = np.flatnonzero(ok)
        if len(idx) < 3:
            break
        a, b = idx[:-1], idx[1:]
        dt = (t[b] - t[a]) / 1000.0
        dist = np.hypot(x[b] - x[a], y[b] - y[a])
        bad = (dev[a] == dev[b]) & (dt <= max_gap_s) & (dist > max_mps * dt + noise_m)
        spike = bad[:-1] & bad[1:]  # edge into b[k] and edge out of it
        if not spike.any():
            break
        # of two adjacent spikes drop the first only; the next round judges the other
        spike &= ~np.r_[False, spike[:-1]]
        ok[b[:-1][spike]] = False
    return ok


def _latest_per_sample(loc: I64, n: int) -> I64:
    """Index (into loc/tt, sorted by time) of each sample's latest event; -1 = none."""
    latest = np.full(n, -1, dtype=np.int64)
    latest[loc] = np.arange(len(loc))  # later assignments win: the latest
    return latest


def _first_covered_prefix(loc: I64, tt: F64, n: int, need: int, window: float) -> int | None:
    """:func:`_first_covered` on growing prefixes: the count at an event depends only on
    the events up to it, and a hit is usually near the start — so a segment plowed a
    hundred times in one feed costs a hundred short searches, not a hundred long ones."""
    size = max(4 * need, 256)
    while True:
        end = min(len(loc), size)
        hit = _first_covered(loc[:end], tt[:end], n, need, window)
        if hit is not None or end == len(loc):
            return hit
        size *= 4


def _first_covered(loc: I64, tt: F64, n: int, need: int, window: float) -> int | None:
    """First event index at which ≥ ``need`` distinct samples were covered within
    ``window`` (events sorted by time). An event covers its sample from its time until
    the sample's next event or until it is ``window`` old, so the count at an event
    time is (#intervals started) − (#intervals ended): two sorted searches."""
    if need <= 0 or len(loc) < need:
        return None
    m = len(loc)
    nxt = np.full(m, np.inf)
    o = np.lexsort((np.arange(m), loc))  # by sample, then time order
    same = loc[o][1:] == loc[o][:-1]
    nxt[o[:-1][same]] = tt[o[1:][same]]
    stop = np.minimum(nxt, tt + window)
    starts = tt  # sorted
    stops = np.sort(stop)
    count = np.searchsorted(starts, tt, side="right") - np.searchsorted(stops, tt, side="right")
    hit = np.flatnonzero(count >= need)
    return int(hit[0]) if len(hit) else None
