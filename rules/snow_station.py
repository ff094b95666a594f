"""Snow family, per station: the reading cleaning chain and the station-hour.

Every reading goes through a small cleaning chain (docs/rules-snow.md#cleaning):

1. poor echo (``quality`` below ``quality_poor_below``) → kept apart and counted; the
   level uses poor echoes, with their wider error, only when an hour has too few good
   readings (docs/domain.md#echo-quality, docs/domain.md#echo-loss-in-snowfall);
2. frozen sensor: the raw figure repeated exactly ``frozen_readings`` times → the
   station is faulty and its repeats are not used;
3. spike filter: a jump of more than ``spike_cm`` within ``spike_window_min`` is held
   back; it becomes a spike when the next reading returns, and a real level change
   when ``spike_confirm_readings`` readings stay at the new level or a neighbouring
   station jumped the same way (docs/domain.md#spike-filter). Neighbours' jumps are
   known for the whole frame before any station is judged, so the verdict does not
   depend on the order in which stations are fed.

At the end of each hour a depth-and-rate track (a Kalman filter fed every reading, weak
echoes at their own scatter) gives the end-of-hour level and its standard error (with
``level_filter = "line"``: a Theil–Sen line through the last ``level_window_h`` hours);
hourly new snow is the rise of a hysteresis reference that follows this level (the JMA
positive difference, made robust to ±3 cm ultrasonic noise;
docs/domain.md#hourly-new-snow, docs/rules-snow.md#new-snow).

The station faults (offline, frozen, poor echo, spikes, low battery) are reported from
here; the town-wide decisions on the finalised hours live in :mod:`rules.snow_town`.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from rules.model import (
    HOUR_MS,
    MINUTE_MS,
    Family,
    Finding,
    Output,
    floor_hour,
    fmt_num,
    hhmm,
)
from rules.params import SnowParams
from rules.schema import SNOW_HOURLY, STATION_HEALTH
from rules.transitions import Severity, Value
from sensors.registry import EARTH_RADIUS_M, Registry

__all__ = [
    "EXCLUDING",
    "FAULTS",
    "FAULT_TEXT",
    "SPIKE_HOLD_MS",
    "SnowStations",
    "stated_noise_cm",
]

# Faults in the order a station_health point names them (worst first).
FAULTS: tuple[str, ...] = ("offline", "frozen", "poor_echo", "spike", "low_battery")
# Faults whose station's readings must not drive a dispatch (docs/rules-snow.md#faults).
# A poor echo is not among them: the level then rests on the poor echoes, with their
# wider error (docs/rules-snow.md#new-snow), and a blind station is worth more than none.
EXCLUDING: frozenset[str] = frozenset({"offline", "frozen"})
FAULT_TEXT: dict[str, tuple[str, str]] = {
    "offline": ("通信途絶", "offline"),
    "frozen": ("センサー固着 (同じ値の繰り返し)", "frozen sensor (same figure repeated)"),
    "poor_echo": ("エコー不良", "poor echo"),
    "spike": ("スパイク (急変値を除外)", "spikes (sudden jumps rejected)"),
    "low_battery": ("電池残量低下", "low battery"),
}
# Of the spike rule: a station stays "spiky" this long after its last spike.
SPIKE_HOLD_MS = HOUR_MS


@dataclass
class _Hour:
    """One finalised station-hour (kept for the since-plowed and 24 h sums)."""

    start: int
    new_cm: float  # NaN: no usable reading in the hour
    depth_cm: float
    air_temp_c: float
    # The rise above the reference not yet counted (0 … ¾ m): the dispatch figure adds
    # the newest hour's, so a rise is not held back until it exceeds the whole margin.
    pending_cm: float = 0.0
    poor: bool = False  # the level rests on poor echoes (wider error)
    rise_cm: float = 0.0  # the whole uncounted rise (L − R), for the next accumulation
    ref_cm: float = math.nan  # the hysteresis reference after the hour
    # the depth-and-rate track at the hour's end (depth, rate, P00, P01, P11, restarts),
    # () without one: a plowing's starting depth is read again on these
    # (docs/rules-snow.md#new-snow)
    kf: tuple[float, ...] = ()


@dataclass
class _Station:
    """Running state of one station: plain values, bounded collections (pickled)."""

    last_t: int = -1  # device time of the newest reading (any quality)
    gaps: deque[int] = field(default_factory=lambda: deque(maxlen=5))  # between readings
    # how late the last readings arrived after their device time (a logger uploading
    # each hour in one batch: up to an hour)
    lags: deque[int] = field(default_factory=lambda: deque(maxlen=12))
    battery_v: float = math.nan
    battery_alarm: bool = False
    # cleaning
    acc_t: int = -1  # newest accepted reading
    acc_d: float = math.nan
    prev_raw_t: int = -1  # newest valid reading (for neighbour jumps)
    prev_raw_d: float = math.nan
    pending: list[tuple[int, float]] = field(default_factory=list)  # held (t, depth)
    figure: float = math.nan  # raw figure of the newest reading (frozen check)
    figure_run: int = 0
    figure_since: int = -1
    jumps: deque[tuple[int, float]] = field(default_factory=lambda: deque(maxlen=8))
    echo: deque[tuple[int, bool]] = field(default_factory=deque)  # last hour: (t, poor)
    last_spike_t: int = -1
    poor_since: int = -1  # first reading of the current run of a high poor-echo share
    # hourly
    open_hour: int = -1
    points: deque[tuple[int, float]] = field(default_factory=deque)  # accepted, level window
    # poor-echo readings of the level window: used, with their wider error, when the
    # good ones are too few (falling snow scatters ultrasound; docs/rules-snow.md#new-snow)
    poor_points: deque[tuple[int, float]] = field(default_factory=deque)
    last_good_t: int = -1  # newest accepted good reading (for the uncertainty warning)
    temps: list[float] = field(default_factory=list)  # air temperature of the open hour
    ref: float = math.nan  # hysteresis reference level
    rise: float = 0.0  # level − reference at the last hour with a level
    sigmas: deque[float] = field(default_factory=lambda: deque(maxlen=24))
    # depth-and-rate track at its time: (t, depth, rate/h, P00, P01, P11, misses,
    # restarts); ()
    track: tuple[float, ...] = ()
    hours: deque[_Hour] = field(default_factory=lambda: deque(maxlen=73))
    # fault rule → (active, event time) as last reported
    status: dict[str, tuple[bool, int]] = field(default_factory=dict)
    health: tuple[str, int] = ("?", -1)  # (fault text, hour) of the last health point

    def __setstate__(self, state: dict[str, Any]) -> None:
        """State pickled by an older version lacks newer fields: their defaults."""
        self.__dict__.update({**_defaults(), **state})

    def usual_sigma(self, default: float) -> float:
        """One good reading's usual noise: the median of the hours' fitted σ over the
        last 24 h, or ``default`` before the first hour with a level."""
        return float(np.median(self.sigmas)) if self.sigmas else default


def _hour_closes(st: _Station, p: SnowParams) -> int:
    """When the open hour of a station that sent nothing since closes: at its end if
    no reading of it is still due (the next one is due after the end, at the station's
    usual interval since its newest) or the station fell silent ``hour_grace_min``
    before it (its newest reading plus the largest delay of its recent ones: a batch
    uploaded each hour is not silence); else that long after the missing reading was
    due to arrive, for it to come late. A dropout in a storm had held a call 20 min past
    the hour: late (docs/rules-snow.md#snowdispatch)."""
    end = st.open_hour + HOUR_MS
    grace = p.hour_grace_min * MINUTE_MS
    lag = max(st.lags, default=0)
    due = st.last_t + (sorted(st.gaps)[len(st.gaps) // 2] if st.gaps else 0)
    if (st.gaps and due >= end) or st.last_t + lag <= end - grace:
        return end
    return min(end + grace, due + lag + grace)


def _defaults() -> dict[str, Any]:
    return dict(_Station().__dict__)


class _Raw(NamedTuple):
    """One reading of a station, as fed (NaN: the field is missing)."""

    t: int
    depth: float
    dist: float
    temp: float
    quality: float
    batt: float
    alarm: bool | None
    arrival: int  # when it arrived (its device time when the source says nothing)


Jumps = dict[str, list[tuple[int, float]]]  # station → (time, Δ cm) of its raw jumps


class SnowStations(Family):
    """The per-station half of the snow family: state, cleaning chain, hourly levels,
    station faults. :class:`rules.snow.SnowFamily` wires it to the town rules."""

    stations: dict[str, _Station]
    # Every station's jumps as known for the frame being fed (set by ``feed`` for its
    # duration only, so it is never pickled): see ``_jumps_ahead``.
    frame_jumps: Jumps

    # ------------------------------------------------------------------ params
    def _p(self, sid: str) -> SnowParams:
        st = self.registry.stations.get(sid)
        p: SnowParams = self.params("station", sid, st.district if st else None)
        return p

    def _town(self) -> SnowParams:
        p: SnowParams = self.config.family(self.name)  # type: ignore[assignment]
        return p

    def _district(self, sid: str) -> str | None:
        st = self.registry.stations.get(sid)
        return st.district if st else None

    # ------------------------------------------------------------------ feed
    def _reading(self, sid: str, st: _Station, p: SnowParams, raw: _Raw, out: Output) -> None:
        t, depth, quality = raw.t, raw.depth, raw.quality
        if t <= st.last_t:
            return  # the engine feeds each point once, in order; be safe all the same
        if st.last_t >= 0:
            st.gaps.append(t - st.last_t)
        st.last_t = t
        st.lags.append(max(0, raw.arrival - t))
        self._set(sid, st, "offline", active=False, at=t, out=out)
        if math.isfinite(raw.batt):
            st.battery_v = raw.batt
        if raw.alarm is not None:
            st.battery_alarm = raw.alarm
        self._battery(sid, st, p, t, out)
        # Hours this reading closes: it is the first of a later hour.
        while st.open_hour >= 0 and t >= st.open_hour + HOUR_MS:
            self._finalise(sid, st, p, out)
        if st.open_hour < 0:
            st.open_hour = floor_hour(t)
        # 1. echo quality (docs/domain.md#echo-quality)
        poor = not math.isfinite(quality) or quality < p.quality_poor_below
        bad = self._echo(sid, st, p, t=t, poor=poor, out=out)
        if not math.isfinite(depth):
            return
        if math.isfinite(raw.temp) and not poor:
            st.temps.append(raw.temp)
        # 2. frozen: the raw figure (distance for ultrasonic, else depth) repeated exactly,
        # whatever the echo: a sensor frozen in a snowstorm sends its stuck figure with
        # the weak echoes of the falling snow, and those must not hold the level still.
        fig = raw.dist if math.isfinite(raw.dist) else depth
        if self._frozen(sid, st, p, t=t, fig=fig, depth=depth, out=out):
            return
        if 0 < p.frozen_suspect_readings <= st.figure_run:
            return  # a live sensor's noise does not repeat a figure exactly so often
        if poor:
            self._poor_reading(sid, st, p, t=t, depth=depth, quality=quality, bad=bad, out=out)
            return
        # 3. spike filter (docs/domain.md#spike-filter)
        if math.isfinite(st.prev_raw_d) and abs(depth - st.prev_raw_d) > p.spike_cm / 2:
            st.jumps.append((t, depth - st.prev_raw_d))
        st.prev_raw_t, st.prev_raw_d = t, depth
        self._spike_filter(sid, st, p, t=t, depth=depth, out=out)

    def _poor_reading(
        self,
        sid: str,
        st: _Station,
        p: SnowParams,
        *,
        t: int,
        depth: float,
        quality: float,
        bad: bool,
        out: Output,
    ) -> None:
        wild = math.isfinite(st.acc_d) and abs(depth - st.acc_d) > self._allowed(st, p, t)
        # A wild figure with a poor echo is still a spike worth telling maintenance
        # about, unless the echo is bad all the time (that is the poor_echo fault).
        if wild and not bad:
            self._spike(sid, st, t, out)
        if not wild and quality > 0:
            # Kept apart: the level uses it only when good echoes are too few.
            st.poor_points.append((t, depth))
            keep = int(p.level_window_h * HOUR_MS)
            while st.poor_points and st.poor_points[0][0] < t - keep:
                st.poor_points.popleft()

    def _echo(
        self, sid: str, st: _Station, p: SnowParams, *, t: int, poor: bool, out: Output
    ) -> bool:
        """Track the last hour's poor-echo share; True when it is at the fault level.
        Firing waits for tick: whether the poor echo is the station's or the weather's
        is a question about all stations (docs/rules-snow.md#faults)."""
        st.echo.append((t, poor))
        while st.echo and st.echo[0][0] <= t - HOUR_MS:
            st.echo.popleft()
        share = sum(1 for _, x in st.echo if x) / len(st.echo)
        bad = len(st.echo) >= 3 and share >= p.poor_echo_share
        if bad and st.poor_since < 0:
            st.poor_since = t
        elif not bad:
            st.poor_since = -1
            self._set(sid, st, "poor_echo", active=False, at=t, out=out)
        return bad

    def _frozen(
        self,
        sid: str,
        st: _Station,
        p: SnowParams,
        *,
        t: int,
        fig: float,
        depth: float,
        out: Output,
    ) -> bool:
        """Count exact repeats of the raw figure; True when this reading is a repeat of
        a frozen sensor (not to be used). Bare ground reads 0 every time (ingest clips
        small negatives): not a freeze."""
        if depth > 0 and fig == st.figure:
            st.figure_run += 1
        else:
            st.figure_run = 1
            st.figure_since = t
        st.figure = fig
        frozen = st.figure_run >= p.frozen_readings
        self._set(sid, st, "frozen", active=frozen, at=st.figure_since, out=out)
        return st.figure_run >= 2 and st.status.get("frozen", (False, 0))[0]

    def _spike_filter(
        self, sid: str, st: _Station, p: SnowParams, *, t: int, depth: float, out: Output
    ) -> None:
        if not math.isfinite(st.acc_d):
            self._accept(st, p, t, depth)
            return
        if st.pending:
            if abs(depth - st.acc_d) <= p.spike_cm:
                # Back to the accepted level: what was held were spikes.
                for ts, _ in st.pending:
                    self._spike(sid, st, ts, out)
                st.pending = []
            elif abs(depth - st.pending[-1][1]) <= p.spike_cm:
                st.pending.append((t, depth))
                t0, d0 = st.pending[0]
                if len(st.pending) >= self._confirm(st, p, t0, d0) or self._neighbour_agrees(
                    sid, p, t0, d0 - st.acc_d
                ):
                    # The level really changed (snow slid off, sensor re-mounted,
                    # a freeze ended with snow under it): take the held readings.
                    for ts, ds in st.pending:
                        self._accept(st, p, ts, ds)
                    st.pending = []
                return
            else:
                for ts, _ in st.pending:
                    self._spike(sid, st, ts, out)
                st.pending = [(t, depth)]
                return
        # Held: a jump beyond the allowance, and after a gap any jump a spike could
        # make (more than twice spike_cm: the noise of a reading or two does not).
        limit = min(self._allowed(st, p, t), 2 * p.spike_cm)
        if abs(depth - st.acc_d) > limit and not self._neighbour_agrees(
            sid, p, t, depth - st.acc_d
        ):
            st.pending = [(t, depth)]
            return
        self._accept(st, p, t, depth)

    @classmethod
    def _confirm(cls, st: _Station, p: SnowParams, t0: int, d0: float) -> int:
        """How many readings at a held level make it the new one: two (the jump and one
        more) when the snow that could have fallen since the last accepted reading
        explains the jump, else ``spike_confirm_readings``. After a dropout in a storm
        a jump of more than twice ``spike_cm`` waits for the next reading: taken at
        once, a spike that came first after a gap was the level, and its hour counted
        it as new snow for a day (docs/rules-snow.md#cleaning)."""
        explained = abs(d0 - st.acc_d) <= cls._allowed(st, p, t0)
        return min(2, p.spike_confirm_readings) if explained else p.spike_confirm_readings

    @staticmethod
    def _allowed(st: _Station, p: SnowParams, t: int) -> float:
        """The largest change from the accepted level that snow could make by ``t``: it
        grows with the time since the last accepted reading, so after a dropout during a
        storm, the snow that fell meanwhile is not a spike."""
        return p.spike_cm * max(1.0, (t - st.acc_t) / (p.spike_window_min * MINUTE_MS))

    def _neighbour_agrees(self, sid: str, p: SnowParams, t: int, delta: float) -> bool:
        """A station within ``spike_neighbour_km`` jumped the same way at about the same
        time (its jumps of the whole frame count, fed before this station or after)."""
        me = self.registry.stations.get(sid)
        if me is None:
            return False
        window = p.spike_window_min * MINUTE_MS
        for oid, jumps in self.frame_jumps.items():
            if oid == sid:
                continue
            o = self.registry.stations.get(oid)
            if o is None or _km(me.lat, me.lon, o.lat, o.lon) > p.spike_neighbour_km:
                continue
            for tj, dj in jumps:
                if abs(tj - t) <= window and dj * delta > 0 and abs(dj) > p.spike_cm / 2:
                    return True
        return False

    def _jumps_ahead(self, raws: list[tuple[str, _Raw]]) -> Jumps:
        """Every station's jumps as known before any reading of the frame is judged: the
        ones it recorded earlier and the ones its readings in this frame will record.

        The same steps as ``_reading`` (a reading the station has, a good echo, a depth,
        not a frozen repeat, then a change of more than half ``spike_cm`` from the
        previous such reading), without their effects. Judging a jump against these,
        a station's spike verdict does not depend on whether its neighbour was fed
        before or after it (docs/rules-snow.md#cleaning)."""
        jumps: Jumps = {sid: list(st.jumps) for sid, st in self.stations.items()}
        # station → (newest time, raw figure, its run, previous depth), as in _Station
        sim: dict[str, tuple[int, float, int, float]] = {}
        params: dict[str, SnowParams] = {}
        for sid, raw in raws:
            if sid not in sim:
                st = self.stations.get(sid) or _Station()
                sim[sid] = (st.last_t, st.figure, st.figure_run, st.prev_raw_d)
                params[sid] = self._p(sid)
            last_t, figure, run, prev = sim[sid]
            p = params[sid]
            if raw.t <= last_t:
                continue
            good = math.isfinite(raw.quality) and raw.quality >= p.quality_poor_below
            if not good or not math.isfinite(raw.depth):
                sim[sid] = (raw.t, figure, run, prev)
                continue
            fig = raw.dist if math.isfinite(raw.dist) else raw.depth
            run = run + 1 if raw.depth > 0 and fig == figure else 1
            # _frozen's verdict: a repeat while the frozen status (run ≥ limit) is on
            if run >= 2 and run >= p.frozen_readings:
                sim[sid] = (raw.t, fig, run, prev)
                continue
            if math.isfinite(prev) and abs(raw.depth - prev) > p.spike_cm / 2:
                jumps.setdefault(sid, []).append((raw.t, raw.depth - prev))
            sim[sid] = (raw.t, fig, run, raw.depth)
        return jumps

    def _accept(self, st: _Station, p: SnowParams, t: int, depth: float) -> None:
        st.acc_t, st.acc_d = t, depth
        st.last_good_t = max(st.last_good_t, t)
        st.points.append((t, depth))
        keep = int(p.level_window_h * HOUR_MS)
        while st.points and st.points[0][0] < t - keep:
            st.points.popleft()

    def _spike(self, sid: str, st: _Station, t: int, out: Output) -> None:
        st.last_spike_t = max(st.last_spike_t, t)
        self._set(sid, st, "spike", active=True, at=t, out=out)

    def _battery(self, sid: str, st: _Station, p: SnowParams, t: int, out: Output) -> None:
        was = st.status.get("low_battery", (False, 0))[0]
        v = st.battery_v
        if was:  # hysteresis: a sagging battery in the cold must not flap
            active = st.battery_alarm or (
                math.isfinite(v) and v < p.low_battery_v + p.battery_hysteresis_v
            )
        else:
            active = st.battery_alarm or (math.isfinite(v) and v < p.low_battery_v)
        self._set(sid, st, "low_battery", active=active, at=t, out=out)

    # ------------------------------------------------------------------ hourly
    def _finalise(self, sid: str, st: _Station, p: SnowParams, out: Output) -> None:
        """Close the open hour: level, new snow, sums; write its snow_hourly point."""
        h = st.open_hour
        end = h + HOUR_MS
        st.open_hour = end
        pts = [(t, d) for t, d in st.points if t < end]
        n_hour = sum(1 for t, _ in pts if t >= h)
        poor = False
        extra = [(t, d) for t, d in st.poor_points if t < end]
        if self.poor_usable(sid, st, p, extra, pts):
            # Poor echoes that scatter like the good ones: as good as them.
            pts = sorted(pts + extra)
            n_hour = sum(1 for t, _ in pts if t >= h)
        elif n_hour < p.poor_echo_fallback_readings:
            # Too few good echoes (falling snow scatters ultrasound): add the poor ones
            # of the window; their scatter widens the margin below (a wider error).
            extra = [(t, d) for t, d in st.poor_points if t < end]
            if sum(1 for t, _ in extra if t >= h) > 0:
                pts = sorted(pts + extra)
                n_hour = sum(1 for t, _ in pts if t >= h)
                poor = True
        level = math.nan
        new = math.nan
        pending = 0.0
        tracked = None
        if n_hour:
            fit = pts
            usual = st.usual_sigma(math.inf)
            if not poor and n_hour >= 4 and usual <= p.quiet_sigma_cm:
                # A quiet sensor (laser) needs no second hour to find its level, and a
                # line through two hours overshoots when the snowfall eases (the storm
                # ends mid-window): snow that never fell, counted for good.
                fit = [(t, d) for t, d in pts if t >= h]
            se = math.nan
            tracked = self._track(sid, st, p, h, end) if p.level_filter == "track" else None
            if tracked is not None:
                (level, se), sigma = tracked, _fit_sigma(fit)
            else:
                level, sigma = _level(fit, end)
            if not math.isfinite(st.ref):
                # The first hour starts the reference: the median of its readings (a line
                # through one hour, read at its end, scatters twice as much).
                level = float(np.median([d for t, d in pts if t >= h]))
            # Before the station's own noise is known: the vendor figure, read as ±2 σ.
            prior = self._stated_sigma(sid, p)
            new, pending = self._new_snow(
                st, p, level, len(fit), prior=prior, sigma_now=sigma, se=se, poor=poor
            )
            if math.isfinite(sigma) and not poor:
                st.sigmas.append(sigma)
        temp = float(np.mean(st.temps)) if st.temps else math.nan
        st.temps = []
        kf = (*st.track[1:6], st.track[7] if len(st.track) > 7 else 0.0) if tracked else ()
        st.hours.append(
            _Hour(h, new, level, temp, pending, poor, st.rise if n_hour else 0.0, st.ref, kf)
        )
        fields: dict[str, Any] = {
            "depth_cm": level,
            "new_snow_cm": new,
            "new_24h_cm": self._sum_since(st, end - 24 * HOUR_MS),
            "since_plowed_cm": self._sum_since(st, self._reset_ms(end)),
            "air_temp_c": temp,
        }
        out.point(SNOW_HOURLY, {"device": sid, "district": self._district(sid) or ""}, fields, h)

    def poor_usable(
        self,
        sid: str,
        st: _Station,
        p: SnowParams,
        poor: list[tuple[int, float]],
        good: list[tuple[int, float]],
    ) -> bool:
        """Poor echoes measure as well as good ones when they scatter no more than
        ``poor_echo_merge_ratio`` times the good ones, or the sensor's stated noise if
        that is larger: falling snow weakens the echo and widens the scatter of every
        reading alike; a failing transducer scatters far more
        (docs/domain.md#echo-loss-in-snowfall)."""
        if len(poor) < 5:
            return False
        floor = self._stated_sigma(sid, p)
        ref = _scatter(good) if len(good) >= 5 else st.usual_sigma(floor)
        return _scatter(poor) <= p.poor_echo_merge_ratio * max(ref, floor)

    def _stated_sigma(self, sid: str, p: SnowParams) -> float:
        """One reading's noise as the vendor states it, read as ±2 σ
        (docs/domain.md#sensor-noise)."""
        return stated_noise_cm(self.registry, sid, p) / 2

    def _track(
        self, sid: str, st: _Station, p: SnowParams, h: int, end: int
    ) -> tuple[float, float] | None:
        """The depth at ``end`` and its standard error from a depth-and-rate track
        (a Kalman filter, local linear trend) fed every reading of the hour: the good
        echoes at the station's noise, the weak ones at their own scatter."""
        # A station without a track yet (new, or state from before tracks) starts it on
        # the whole window, so a restart mid-storm does not lose the hour before.
        since = h if st.track else -1
        win_good = [(t, d) for t, d in st.points if t < end]
        win_poor = [(t, d) for t, d in st.poor_points if t < end]
        floor = self._stated_sigma(sid, p)
        usual = st.usual_sigma(floor)
        # Too few good echoes to measure their scatter: all readings' (falling snow
        # widens both alike), so a lone good echo in a storm is not taken as exact.
        pooled = win_good if len(win_good) >= 5 else sorted(win_good + win_poor)
        sg = max(usual, floor / 2, _scatter(pooled) if len(pooled) >= 5 else floor)
        sp = max(sg, _scatter(win_poor)) if len(win_poor) >= 5 else 2 * sg
        obs = sorted(
            [(t, d, sg * sg) for t, d in win_good if t >= since]
            + [(t, d, sp * sp) for t, d in win_poor if t >= since]
        )
        st.track = _track_step(st.track, obs, end, p)
        return (st.track[1], math.sqrt(st.track[3])) if st.track else None

    def _new_snow(
        self,
        st: _Station,
        p: SnowParams,
        level: float,
        n: int,
        *,
        prior: float,
        sigma_now: float,
        se: float = math.nan,
        poor: bool = False,
    ) -> tuple[float, float]:
        """JMA hourly new snow against a hysteresis reference (docs/rules-snow.md#new-snow).

        The reference follows the level with play ±m: it moves up only when the level
        is more than m above it (the rise is new snow) and down only when the level is
        more than m below it (settling or melt). m is the deadband or, larger, the
        level's own noise (``hysteresis_z`` standard errors), so noise cannot pump it.
        The noise is the larger of the station's usual (median of 24 h) and the
        window's own: wind and falling snow raise it within the hour, and a margin
        set in the calm before the storm would let the storm's noise count as snow.

        A level that rests on poor echoes (``poor``) can raise the reference but not
        lower it: weak echoes read low for hours let it follow them down, and the good
        echoes after the spell counted the way back up as new snow (docs/rules-snow.md).

        Returns (new snow, the rise above the reference not yet counted).
        """
        if not math.isfinite(st.ref):
            st.ref = level
            return 0.0, 0.0
        sigma = st.usual_sigma(prior)
        if math.isfinite(sigma_now):
            sigma = max(sigma, sigma_now)
        # Standard error of the end-of-hour level: a Theil–Sen line fitted to n readings
        # and read at its end scatters by about 2.4/√n of one reading's noise (measured:
        # 0.67 σ at n = 12, 1.0 σ at n = 6).
        if not math.isfinite(se):
            se = sigma * 2.4 / math.sqrt(max(n, 1))
        m = max(p.deadband_cm, p.hysteresis_z * se)
        new = 0.0
        if level - m > st.ref:
            # A rise beyond the noise margin is real snow; the true surface lies within
            # the margin below the measured level. Count up to a quarter of the margin
            # below it (counting only what exceeds the margin reports every snowfall
            # 1–2 cm short and calls the plows an hour late; counting up to the level
            # lets noise add a little at every rise). Measured: docs/rules-snow.md.
            target = level - m / 4
            new = target - st.ref
            st.ref = target
        elif poor:
            pass  # weak echoes are no evidence of settling
        elif level + m < st.ref:
            st.ref = level + m
        elif level < st.ref:
            st.ref -= p.settle_follow * (st.ref - level)
        st.rise = max(0.0, level - st.ref)
        return new, max(0.0, level - p.pending_margin * m - st.ref)

    def _reset_ms(self, end: int) -> int:
        """Start of the accumulation: last plowing end, at most ``window_h`` back."""
        floor = end - self._town().window_h * HOUR_MS
        last = self.shared.last_plowing_before(end)
        return max(floor, last) if last is not None else floor

    @staticmethod
    def _sum_since(st: _Station, start_ms: int) -> float:
        """New snow of the hours that end after ``start_ms``."""
        return float(
            sum(h.new_cm for h in st.hours if h.start + HOUR_MS > start_ms and h.new_cm > 0)
        )

    # ------------------------------------------------------------------ tick
    def _tick_stations(self, now_ms: int, out: Output) -> None:
        """The station half of a tick: close silent hours, offline, spike release,
        health points, poor echo."""
        for sid, st in self.stations.items():
            p = self._p(sid)
            # Hours of a silent station close so the town keeps counting with the
            # stations that still report: at once when no reading of the hour is still
            # due, else after a grace period for one that comes late.
            while st.open_hour >= 0 and now_ms >= _hour_closes(st, p):
                self._finalise(sid, st, p, out)
            offline = p.offline_min * MINUTE_MS
            if st.last_t >= 0 and now_ms - st.last_t >= offline:
                self._set(sid, st, "offline", active=True, at=st.last_t + offline, out=out)
            if (
                st.status.get("spike", (False, 0))[0]
                and not st.pending
                and now_ms >= st.last_spike_t + SPIKE_HOLD_MS
            ):
                self._set(
                    sid, st, "spike", active=False, at=st.last_spike_t + SPIKE_HOLD_MS, out=out
                )
            self._health(sid, st, now_ms, out)
        self._poor_echo(now_ms, out)

    def _poor_echo(self, now_ms: int, out: Output) -> None:
        """Fire snow.poor_echo for a station whose echo has been poor for
        ``poor_echo_min`` — unless most stations of its sensor type are poor as well:
        falling snow scatters ultrasound at every station at once, which is weather,
        not a fault to send someone out for."""
        by_type: dict[str, list[bool]] = {}
        for sid, st in self.stations.items():
            station = self.registry.stations.get(sid)
            kind = station.sensor_type if station else "?"
            if now_ms - st.last_t < HOUR_MS and st.echo:
                # A peer with even half the fault's share of poor echoes counts: snow
                # showers come and go, and a station flickering around the limit is
                # still seeing the same weather.
                share = sum(1 for _, x in st.echo if x) / len(st.echo)
                by_type.setdefault(kind, []).append(share >= self._p(sid).poor_echo_share / 2)
        for sid, st in self.stations.items():
            if st.poor_since < 0 or st.status.get("poor_echo", (False, 0))[0]:
                continue
            p = self._p(sid)
            if now_ms - st.poor_since < p.poor_echo_min * MINUTE_MS:
                continue
            if station_is_ultrasonic(self.registry, sid) and self._snowing(now_ms):
                continue  # falling snow scatters ultrasound: weather, not a fault
            station = self.registry.stations.get(sid)
            peers = by_type.get(station.sensor_type if station else "?", [])
            if len(peers) >= 3 and sum(peers) / len(peers) >= p.poor_echo_common_share:
                continue
            self._set(sid, st, "poor_echo", active=True, at=st.poor_since, out=out)

    def _snowing(self, now_ms: int) -> bool:
        """New snow at two or more stations in the last three hours: it is snowing in
        town (docs/domain.md#echo-loss-in-snowfall: falling snow weakens ultrasonic
        echoes). A station's level rests on its poor echoes when good ones are too few,
        so a storm on two blind stations still counts."""
        since = now_ms - 3 * HOUR_MS
        count = 0
        for st in self.stations.values():
            if any(h.start + HOUR_MS > since and h.new_cm > 0 for h in list(st.hours)[-4:]):
                count += 1
                if count >= 2:
                    return True
        return False

    def _health(self, sid: str, st: _Station, now_ms: int, out: Output) -> None:
        faults = ",".join(f for f in FAULTS if st.status.get(f, (False, 0))[0])
        hour = floor_hour(now_ms)
        if (faults, hour) == st.health:
            return  # at most one point per station and hour, unless the fault changes
        st.health = (faults, hour)
        poor = sum(1 for _, x in st.echo if x)
        out.point(
            STATION_HEALTH,
            {"device": sid, "district": self._district(sid) or ""},
            {
                "ok": not faults,
                "fault": faults,
                "last_seen_s": int(max(0, now_ms - st.last_t) // 1000),
                "battery_v": st.battery_v,
                "poor_echo_share": poor / len(st.echo) if st.echo else 0.0,
                # what the dispatch figures' error comes from (docs/domain.md#report-interval)
                "noise_cm": st.usual_sigma(math.nan),
            },
            now_ms,
        )

    # ------------------------------------------------------------------ findings
    def _set(
        self, sid: str, st: _Station, rule: str, *, active: bool, at: int, out: Output
    ) -> None:
        """Report a station fault when its status changes (the engine keeps the rest)."""
        known = st.status.get(rule)
        was = known[0] if known else False
        if active == was:
            return
        # An event never goes back before the one that decided the current status.
        at = max(at, known[1]) if known else at
        st.status[rule] = (active, at)
        p = self._p(sid)
        ja, en = FAULT_TEXT[rule]
        station = self.registry.stations.get(sid)
        label = f"{station.name} {sid}" if station else sid
        values: dict[str, Value] = {"station": sid}
        detail_ja = detail_en = ""
        if rule == "low_battery":
            values["battery_v"] = st.battery_v if math.isfinite(st.battery_v) else None
            detail_ja = detail_en = f" {fmt_num(st.battery_v, 2)} V (< {p.low_battery_v} V)"
        elif rule == "offline":
            detail_ja = f" 最終受信 {hhmm(st.last_t)}"
            detail_en = f" last reading {hhmm(st.last_t)}"
        elif rule == "frozen":
            values["readings"] = st.figure_run
            detail_ja = f" {st.figure_run} 回連続 {fmt_num(st.figure, 1)}"
            detail_en = f" {st.figure_run} identical readings {fmt_num(st.figure, 1)}"
        elif rule == "poor_echo":
            share = sum(1 for _, x in st.echo if x) / max(1, len(st.echo))
            values["share"] = round(share, 2)
            detail_ja = detail_en = f" {share:.0%}"
        if active:
            msg = f"{label}: {ja}{detail_ja}。"
            msg_en = f"{label}: {en}{detail_en}."
            if rule in EXCLUDING:
                # Its readings are not used; its figure goes on at the rate last seen
                # for a while (docs/rules-snow.md#blind-stations).
                trend = fmt_num(p.blind_trend_h)
                msg += f"この間の値は除雪判定に使わず、直前の傾向で最大 {trend} 時間推定。"
                msg_en += f" Readings not used; estimated on its trend for {trend} h at most."
        else:
            msg, msg_en = f"{label}: {ja} 解消。", f"{label}: {en} cleared."
        out.finding(
            Finding(
                rule=f"snow.{rule}",
                category="snow",
                subject=sid,
                subject_kind="station",
                active=active,
                at_ms=at,
                severity=Severity.WARNING if rule in ("offline", "frozen") else Severity.INFO,
                district=self._district(sid),
                values=values,
                message=msg,
                message_en=msg_en,
            )
        )

    def _healthy(self, st: _Station) -> bool:
        return not any(st.status.get(f, (False, 0))[0] for f in EXCLUDING)


def _scatter(pts: list[tuple[int, float]]) -> float:
    """One reading's noise in ``pts`` (at least 2 readings)."""
    return _diff_sigma(np.fromiter((x[1] for x in pts), dtype=float, count=len(pts)))


def _diff_sigma(d: np.ndarray[Any, np.dtype[np.float64]]) -> float:
    """One reading's noise from successive differences (robust MAD; a difference of two
    readings has √2 σ; a steady trend is removed by the median)."""
    diff = np.diff(d)
    return 1.4826 * float(np.median(np.abs(diff - np.median(diff)))) / math.sqrt(2)


def _level(pts: list[tuple[int, float]], end: int) -> tuple[float, float]:
    """Robust depth at ``end`` from accepted readings, and the readings' noise.

    A Theil–Sen line (median of pairwise slopes) through the window, read at the end of
    the hour: no lag behind a rising depth (an hourly median lags half an hour) and
    no pull from a stray reading. Few readings: their median.
    """
    t = np.fromiter((x[0] for x in pts), dtype=float, count=len(pts))
    d = np.fromiter((x[1] for x in pts), dtype=float, count=len(pts))
    sigma = _fit_sigma(pts)
    if not math.isfinite(sigma):
        return float(np.median(d)), sigma
    x = (t - end) / HOUR_MS
    i, j = np.triu_indices(len(x), 1)
    dx = x[j] - x[i]
    ok = dx > 0
    slope = float(np.median((d[j] - d[i])[ok] / dx[ok]))
    level = float(np.median(d - slope * x))
    return level, sigma


def _fit_sigma(pts: list[tuple[int, float]]) -> float:
    """One reading's noise in a level fit's readings; NaN when they are too few (under
    four, or spanning under half an hour) for a line."""
    if len(pts) < 4 or pts[-1][0] - pts[0][0] < HOUR_MS / 2:
        return math.nan
    return _scatter(pts)


def track_predicted_cov(
    p00: float, p01: float, p11: float, dt: float, p: SnowParams
) -> tuple[float, float, float]:
    """The depth-and-rate track's covariance ``dt`` hours on: the rate may wander by
    ``track_rate_q`` and the depth by ``track_depth_q`` per hour."""
    q, qx = p.track_rate_q, p.track_depth_q
    return (
        p00 + 2 * dt * p01 + dt * dt * p11 + q * dt**3 / 3 + qx * dt,
        p01 + dt * p11 + q * dt * dt / 2,
        p11 + q * dt,
    )


def _track_step(
    kf: tuple[float, ...], obs: list[tuple[int, float, float]], end: int, p: SnowParams
) -> tuple[float, ...]:
    """Advance a depth-and-rate track (t, depth, rate, P00, P01, P11, misses, restarts;
    older tracks lack the count) through ``obs`` (time, depth, variance) to ``end``. A
    reading more than ``track_gate`` σ off is weighed as if it were just at the gate
    (the farther, the less it moves the track); three in a row restart the track on
    the third (the level really moved)."""

    def predict(s: list[float], t: float) -> None:
        dt = (t - s[0]) / HOUR_MS
        if dt <= 0:
            return
        s[1] += s[2] * dt
        s[3], s[4], s[5] = track_predicted_cov(s[3], s[4], s[5], dt, p)
        s[0] = t

    def start(t: float, d: float, r: float, restarts: float) -> list[float]:
        # on one reading: its variance, no rate yet (± 2 cm/h), no misses
        return [t, d, 0.0, r, 0.0, 4.0, 0, restarts]

    s = list(kf)
    for t, d, r in obs:
        if not s:
            s = start(t, d, r, 0)
            continue
        if t <= s[0]:
            continue
        predict(s, t)
        innov = d - s[1]
        var = s[3] + r
        if innov * innov > p.track_gate**2 * var:
            s[6] += 1
            if s[6] >= 3:
                s = start(t, d, r, (s[7] if len(s) > 7 else 0) + 1)
                continue
            # Weighed as if its error were just at the gate: the farther off, the less
            # it moves the track, yet a storm rising faster than the track expects
            # still pulls it along.
            var = innov * innov / p.track_gate**2
        else:
            s[6] = 0
        k0, k1 = s[3] / var, s[4] / var
        s[1] += k0 * innov
        s[2] += k1 * innov
        p00, p01, p11 = s[3], s[4], s[5]
        s[3], s[4], s[5] = (1 - k0) * p00, (1 - k0) * p01, p11 - k1 * p01
    if s:
        predict(s, end)
    return tuple(s)


def _km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    h = (
        math.sin((p2 - p1) / 2) ** 2
        + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(h)) / 1000


def stated_noise_cm(registry: Registry, sid: str, p: SnowParams) -> float:
    """A reading's error as the vendor states it (±, docs/domain.md#sensor-noise). A
    station missing from the registry is taken for the noisier, ultrasonic kind: a
    laser's figure would count an unknown sensor's noise as snow."""
    station = registry.stations.get(sid)
    laser = station is not None and station.sensor_type == "laser"
    return p.noise_laser_cm if laser else p.noise_ultrasonic_cm


def station_is_ultrasonic(registry: Registry, sid: str) -> bool:
    station = registry.stations.get(sid)
    return station is not None and station.sensor_type == "ultrasonic"
