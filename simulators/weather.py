"""The true weather and snowpack at each station (the world, not what sensors say).

Everything is computed once on a fixed 10-minute grid starting on the hour before
the scenario; stations sample it by linear interpolation. The snowpack model is
deliberately small but has the three effects detection must cope with (docs/domain.md#snow-depth):

* **settling**: fresh snow compacts to about half its fallen height with a time
  constant of ~12 h, so depth can fall while it is still snowing lightly;
* **melt**: a degree-hour melt above 0 °C;
* **old-snow compaction**: a slow shrink of the old pack (~0.4 %/day).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Final, Literal

from sensors.registry import Station
from simulators.scenario import Climate, StormEvent, WarmEvent, Weather
from simulators.seeding import rng_for
from simulators.timeutil import DAY, HOUR

__all__ = [
    "STEP_S",
    "HourTruth",
    "StationTruth",
    "Storm",
    "TownWeather",
    "climate_storms",
    "resolve_storms",
    "simulate_station",
]

STEP_S: Final = 600
SETTLE_TO: Final = 0.5  # fresh snow ends at about half its fallen height
SETTLE_TAU_H: Final = 12.0
OLD_COMPACTION_PER_DAY: Final = 0.004
MELT_CM_PER_DEG_H: Final = 0.035  # ≈ 2.5 mm water equivalent per °C-day at 300 kg/m³ (winter)
STORM_RAMP_S: Final = 2 * HOUR

# Monthly mean air temperature of a heavy-snow Yamagata town (Obanazawa-like normals),
# anchored mid-month; "climate" weather interpolates between them.
_MONTHLY_MEAN_C: Final = (-1.9, -1.5, 1.6, 7.9, 13.9, 18.3, 22.1, 23.5, 19.1, 12.3, 6.4, 1.0)


@dataclass(frozen=True, slots=True)
class Storm:
    index: int
    start: int
    end: int
    total_cm: float
    profile: Literal["flat", "bell", "front", "rear"]
    temp_c: float
    stations: frozenset[str] | None  # None: every station
    spread: float
    source: Literal["scenario", "climate"]

    def share(self, a: int, b: int) -> float:
        """Fraction of the storm's snow that falls in [a, b)."""
        a, b = max(a, self.start), min(b, self.end)
        if b <= a:
            return 0.0
        span = self.end - self.start
        cdf = _PROFILE_CDF[self.profile]
        return cdf((b - self.start) / span) - cdf((a - self.start) / span)


_CLIMATE_PROFILES: Final[tuple[Literal["flat", "bell", "front", "rear"], ...]] = (
    "bell",
    "bell",
    "flat",
    "front",
    "rear",
)

_PROFILE_CDF: Final[dict[str, Callable[[float], float]]] = {
    "flat": lambda u: u,
    "bell": lambda u: u - math.sin(2 * math.pi * u) / (2 * math.pi),
    "front": lambda u: 1 - (1 - u) ** 2,
    "rear": lambda u: u * u,
}


def resolve_storms(events: Iterable[StormEvent], first_index: int = 0) -> list[Storm]:
    out = []
    for n, ev in enumerate(events, start=first_index):
        start = int(ev.start.timestamp())
        out.append(
            Storm(
                index=n,
                start=start,
                end=start + round(ev.duration_h * HOUR),
                total_cm=ev.total_cm,
                profile=ev.profile,
                temp_c=ev.temp_c,
                stations=None if ev.stations == "all" else frozenset(ev.stations or ()),
                spread=ev.spread,
                source="scenario",
            )
        )
    return out


def climate_mean_c(t: int, utc_offset_s: int) -> float:
    """Long-term mean air temperature for the local date of ``t``."""
    local_day = (t + utc_offset_s) / DAY
    # Day of year from the Unix epoch; 1970-01-01 was day 0 of a year.
    year_pos = (local_day - 0.0) % 365.2425
    month_pos = year_pos / 365.2425 * 12 - 0.5  # 0.0 = mid-January
    i = math.floor(month_pos)
    frac = month_pos - i
    a = _MONTHLY_MEAN_C[i % 12]
    b = _MONTHLY_MEAN_C[(i + 1) % 12]
    return a + (b - a) * frac


def climate_storms(
    climate: Climate,
    weather: Weather,
    *,
    start: int,
    end: int,
    seed: int,
    utc_offset_s: int,
    first_index: int,
) -> list[Storm]:
    """Random storms: Poisson arrivals, log-normal totals, no overlap.

    The sequence is drawn from the season's anchor (:func:`season_anchor`), not from
    the scenario start, so any window cut from a season sees the same storms. Storms
    ending in the day before ``start`` are kept (they decide the first dispatch).
    """
    rng = rng_for(seed, "climate")
    rate_per_h = climate.storms_per_week / (7 * 24)
    storms: list[Storm] = []
    t = float(season_anchor(start, utc_offset_s))
    while True:
        t += rng.expovariate(rate_per_h) * HOUR
        duration_h = rng.uniform(climate.min_duration_h, climate.max_duration_h)
        total = min(climate.max_total_cm, climate.median_total_cm * rng.lognormvariate(0, 0.7))
        profile = rng.choice(_CLIMATE_PROFILES)
        if t >= end:
            break
        s = int(t) // STEP_S * STEP_S
        base = (
            climate_mean_c(s, utc_offset_s)
            if weather.mean_temp_c == "climate"
            else weather.mean_temp_c
        )
        storms.append(
            Storm(
                index=first_index + len(storms),
                start=s,
                end=s + round(duration_h * HOUR / STEP_S) * STEP_S,
                total_cm=round(total, 1),
                profile=profile,
                temp_c=round(min(base - 1.5 + rng.uniform(-1.5, 1.0), 0.5), 1),
                stations=None,
                spread=climate.spread,
                source="climate",
            )
        )
        t = storms[-1].end
        if storms[-1].end <= start - DAY:
            storms.pop()
    return [replace(st, index=first_index + i) for i, st in enumerate(storms)]


def season_anchor(t: int, utc_offset_s: int) -> int:
    """Local midnight of 1 August before ``t``: where a winter's random weather starts."""
    local = datetime.fromtimestamp(t + utc_offset_s, UTC)
    year = local.year if local.month >= 8 else local.year - 1
    return int(datetime(year, 8, 1, tzinfo=UTC).timestamp()) - utc_offset_s


@dataclass
class TownWeather:
    """Town-wide air temperature (°C) and wind (0 calm … 1 gale) on the grid."""

    t0: int
    steps: int
    temp_c: list[float] = field(repr=False)
    wind: list[float] = field(repr=False)

    @classmethod
    def build(
        cls,
        weather: Weather,
        storms: Sequence[Storm],
        warms: Sequence[WarmEvent],
        *,
        t0: int,
        steps: int,
        seed: int,
        utc_offset_s: int,
    ) -> TownWeather:
        rng = rng_for(seed, "weather")
        # Day-to-day anomaly: AR(1) at local noon, interpolated in between; drawn from
        # the season's anchor so that a window cut from a season has the same days.
        first_day = (season_anchor(t0, utc_offset_s) + utc_offset_s) // DAY
        last_day = (t0 + steps * STEP_S + utc_offset_s) // DAY + 1
        anomalies: list[float] = []
        a = 0.0
        for _ in range(first_day, last_day + 1):
            a = 0.6 * a + math.sqrt(1 - 0.36) * rng.gauss(0, 1) * weather.day_to_day_sd_c
            anomalies.append(a)
        wind_rng = rng_for(seed, "wind")
        temp: list[float] = []
        wind: list[float] = []
        w = 0.25
        for i in range(steps + 1):
            t = t0 + i * STEP_S
            local = t + utc_offset_s
            if weather.mean_temp_c == "climate":
                mean = climate_mean_c(t, utc_offset_s)
            else:
                mean = weather.mean_temp_c
            day_pos = (local - DAY // 2) / DAY - first_day  # 0.0 at the first local noon
            k = min(max(math.floor(day_pos), 0), len(anomalies) - 2)
            f = min(max(day_pos - k, 0.0), 1.0)
            mean += anomalies[k] + (anomalies[k + 1] - anomalies[k]) * f
            hour = (local % DAY) / HOUR
            # Warmest about 14:30 local time, coldest before dawn.
            temp.append(
                mean + weather.diurnal_amplitude_c * math.cos(2 * math.pi * (hour - 14.5) / 24)
            )
            w = 0.98 * w + 0.02 * 0.25 + wind_rng.gauss(0, 0.03)
            wind.append(w)
        for storm in storms:
            ramp_lo = storm.start - STORM_RAMP_S
            ramp_hi = storm.end + STORM_RAMP_S
            peak = max(_peak_rate(storm), 1e-9)
            lo, hi = max(0, (ramp_lo - t0) // STEP_S), min(steps, (ramp_hi - t0) // STEP_S)
            for i in range(lo, hi + 1):
                t = t0 + i * STEP_S
                if t < storm.start:
                    weight = (t - ramp_lo) / STORM_RAMP_S
                elif t > storm.end:
                    weight = (ramp_hi - t) / STORM_RAMP_S
                else:
                    weight = 1.0
                hour = ((t + utc_offset_s) % DAY) / HOUR
                storm_t = storm.temp_c + 0.7 * math.cos(2 * math.pi * (hour - 14.5) / 24)
                temp[i] = temp[i] * (1 - weight) + storm_t * weight
                intensity = storm.share(t, t + STEP_S) * storm.total_cm / peak
                wind[i] += 0.15 * weight + 0.45 * intensity
        for warm in warms:
            ws = int(warm.start.timestamp())
            we = ws + round(warm.duration_h * HOUR)
            for i in range(max(0, (ws - t0) // STEP_S), min(steps, (we - t0) // STEP_S) + 1):
                t = t0 + i * STEP_S
                edge = min(t - ws, we - t) / (3 * HOUR)
                temp[i] += warm.delta_c * min(1.0, max(0.0, edge))
        wind = [min(1.0, max(0.0, x)) for x in wind]
        return cls(t0, steps, temp, wind)


def _peak_rate(storm: Storm) -> float:
    """The largest snowfall in one grid step (cm), to scale wind with intensity."""
    best = 0.0
    for t in range(storm.start, storm.end, STEP_S):
        best = max(best, storm.share(t, t + STEP_S) * storm.total_cm)
    return best


@dataclass(frozen=True, slots=True)
class HourTruth:
    start: int
    snowfall_cm: float  # fresh snow that fell in the hour (storm totals add up to this)
    new_snow_cm: float  # JMA hourly new snow on the true depth: max(0, Δdepth)
    depth_cm: float  # true depth at the end of the hour
    air_temp_c: float  # mean over the hour


@dataclass
class StationTruth:
    """True air temperature, wind, snowfall and snow depth at one station."""

    station: Station
    t0: int
    depth_cm: list[float] = field(repr=False)  # at grid points
    temp_c: list[float] = field(repr=False)
    wind: list[float] = field(repr=False)
    snowfall_cm: list[float] = field(repr=False)  # fallen in step i: [t_i, t_i+1)
    storm_totals: dict[int, float] = field(default_factory=dict)

    def sample(self, t: int) -> tuple[float, float, float, float]:
        """(depth cm, air °C, wind 0–1, snowfall rate cm/h) at time t."""
        pos = (t - self.t0) / STEP_S
        i = min(max(int(pos), 0), len(self.depth_cm) - 2)
        f = pos - i
        d = self.depth_cm
        tc = self.temp_c
        depth = d[i] + (d[i + 1] - d[i]) * f
        temp = tc[i] + (tc[i + 1] - tc[i]) * f
        return depth, temp, self.wind[i], self.snowfall_cm[i] * (HOUR / STEP_S)

    def hours(self, start: int, end: int) -> list[HourTruth]:
        """Hourly truth for the whole hours in [start, end)."""
        out = []
        per_hour = HOUR // STEP_S
        h = max(start - (start - self.t0) % HOUR, self.t0)
        while h + HOUR <= end:
            i = (h - self.t0) // STEP_S
            if i + per_hour >= len(self.depth_cm):
                break
            fall = sum(self.snowfall_cm[i : i + per_hour])
            d0, d1 = self.depth_cm[i], self.depth_cm[i + per_hour]
            temps = self.temp_c[i : i + per_hour + 1]
            out.append(
                HourTruth(
                    start=h,
                    snowfall_cm=round(fall, 3),
                    new_snow_cm=round(max(0.0, d1 - d0), 3),
                    depth_cm=round(d1, 3),
                    air_temp_c=round(sum(temps) / len(temps), 2),
                )
            )
            h += HOUR
        return out


def simulate_station(
    station: Station,
    town: TownWeather,
    storms: Sequence[Storm],
    initial_depth_cm: float,
    seed: int,
) -> StationTruth:
    """Run the snowpack model for one station over the grid."""
    rng = rng_for(seed, "station", station.id, "climate")
    temp_offset = rng.uniform(-0.7, 0.7)
    depth0 = initial_depth_cm * (1 + rng.uniform(-0.1, 0.1))
    steps = town.steps
    snowfall = [0.0] * steps
    totals: dict[int, float] = {}
    for storm in storms:
        if storm.stations is not None and station.id not in storm.stations:
            continue
        srng = rng_for(seed, "storm", str(storm.start), station.id)
        total = storm.total_cm * (1 + storm.spread * srng.uniform(-1, 1))
        fallen = 0.0
        lo = max(0, (storm.start - town.t0) // STEP_S)
        hi = min(steps, -(-(storm.end - town.t0) // STEP_S))
        for i in range(lo, hi):
            t = town.t0 + i * STEP_S
            amount = storm.share(t, t + STEP_S) * total
            snowfall[i] += amount
            fallen += amount
        totals[storm.index] = round(fallen, 3)
    temp = [x + temp_offset for x in town.temp_c]
    depth = [0.0] * (steps + 1)
    dt_h = STEP_S / HOUR
    settle = 1 - math.exp(-dt_h / SETTLE_TAU_H)
    compaction = OLD_COMPACTION_PER_DAY * STEP_S / DAY
    d = depth0
    excess = 0.0  # fresh-snow height still to settle
    depth[0] = d
    for i in range(steps):
        s = snowfall[i]
        d += s
        excess += s * (1 - SETTLE_TO)
        ds = excess * settle
        excess -= ds
        d -= ds + (d - excess) * compaction
        air = (temp[i] + temp[i + 1]) / 2
        if air > 0:
            d -= air * MELT_CM_PER_DEG_H * dt_h
        if d < 0:
            d = 0.0
        excess = min(excess, d)
        depth[i + 1] = d
    return StationTruth(station, town.t0, depth, temp, town.wind, snowfall, totals)
