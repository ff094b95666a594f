"""The storms family of the detection battery: generated storm nights and the dispatch call.

Each scenario is one or two storm nights drawn from the simulators' parameter space
(docs/detection.md#storm-nights): intensity 0.5–6 cm/h, flat, bell or bursty, 2–16 h,
on 1, 2, 3 or all stations, cold or near 0 °C, with the sensors' echo loss in snowfall,
random dropouts, spikes and frozen sensors, blind spells during heavy snow and
sometimes plowing during the storm. Every scenario goes through ingest's processor and
the rules backtest (``benchmarks.detection.pipeline``) and is scored against its truth
with the definitions of docs/detection.md#dispatch.
"""

from __future__ import annotations

import math
import random
import re
import statistics
import sys
import tempfile
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from benchmarks.detection.common import (
    FamilyResult,
    family_main,
    scenario_seed,
    storm_seeds,
)
from benchmarks.detection.pipeline import run_scenario
from core.config import Config, ConfigError, load_config, load_registry
from rules.config import RulesConfig, with_settings
from rules.families import BY_NAME
from rules.model import HOUR_MS, dt_to_ms
from rules.params import SnowParams
from rules.scoring.snow import (
    MATCH_H,
    NEAR_MISS_CM,
    SnowTruth,
    figure_ok,
    figure_tolerance,
    since_of,
)
from rules.transitions import Transition
from sensors.registry import Registry, RegistryError
from simulators.scenario import Scenario, parse_scenario

__all__ = ["ON_TIME_H", "Tally", "generate", "run", "score_scenario"]

REPO = Path(__file__).resolve().parents[2]
SAMPLE_CONFIG = REPO / "config" / "yukimizu.toml"
FAMILY = "storms"
FULL_SCENARIOS = 160  # ~1.3 nights each: > 200 storm nights
QUICK_SCENARIOS = 36
ON_TIME_H = 1.0  # docs/detection.md#dispatch: called within 1 h of the true crossing
# The stations report one measurement every 10 min, as the town's do
# (docs/domain.md#report-interval); --station-s and --burst measure another deployment
# (docs/detection.md#results), never the targets.
STATION_S = 600
BURST = 1
_JST = timezone(timedelta(hours=9))
_FIGURE = re.compile(r"([A-Z0-9]+)=(-?[0-9.]+)")


# ---------------------------------------------------------------- generator


@dataclass(frozen=True)
class Night:
    """What one storm night was drawn as (for the per-case lines)."""

    start: datetime
    hours: float
    rate_cm_h: float
    profile: str
    stations: tuple[str, ...]
    temp_c: float


@dataclass(frozen=True)
class Generated:
    scenario: Scenario
    nights: tuple[Night, ...]
    # spells in which a station cannot see: (station, start ms, end ms) of the injected
    # poor-echo, dropout and frozen faults
    blind: tuple[tuple[str, int, int], ...] = ()


def generate(
    base_seed: int,
    index: int,
    registry: Registry,
    *,
    station_s: int = STATION_S,
    burst: int = BURST,
    lasers: Collection[str] = (),
) -> Generated:
    """Scenario ``index`` of the storms family for ``base_seed`` (deterministic); the
    stations report every ``station_s`` seconds the median of ``burst`` measurements
    (the same storms and faults whatever these are). ``lasers``: stations made lasers
    (``as_lasers``): the same scenario without their poor-echo spells, which only
    ultrasound has; their dropouts and every other fault stay."""
    rng = random.Random(scenario_seed(base_seed, FAMILY, index))
    station_ids = sorted(registry.stations)
    ultrasonic = {s for s, st in registry.stations.items() if st.sensor_type == "ultrasonic"}
    day = datetime(2025, 12, 1, tzinfo=_JST) + timedelta(days=rng.randrange(0, 100))
    first = day + timedelta(minutes=10 * rng.randrange(15 * 6, 27 * 6))  # 15:00–03:00
    n_nights = 2 if rng.random() < 0.3 else 1
    near_zero = rng.random() < 0.5
    temp = rng.uniform(-1.5, 1.0) if near_zero else rng.uniform(-10.0, -2.0)
    events: list[dict[str, Any]] = []
    nights: list[Night] = []
    start = first
    end = first
    for n in range(n_nights):
        if n:
            # The next evening: 16–30 h after the first night began, never overlapping.
            start = max(end + timedelta(hours=3), start + timedelta(hours=rng.uniform(16, 30)))
            start = start.replace(minute=start.minute // 10 * 10, second=0, microsecond=0)
        hours = round(rng.uniform(2.0, 16.0), 1)
        rate = math.exp(rng.uniform(math.log(0.5), math.log(6.0)))
        profile = rng.choice(("flat", "bell", "bursty"))
        k = rng.choice((1, 2, 3, len(station_ids)))
        chosen = tuple(sorted(rng.sample(station_ids, k)))
        storm_temp = round(min(2.0, temp + rng.uniform(-0.7, 0.7)), 1)
        spread = round(rng.uniform(0.0, 0.3), 2)
        stations: Any = "all" if k == len(station_ids) else list(chosen)
        events += _storm_events(
            rng,
            start=start,
            hours=hours,
            rate=rate,
            profile=profile,
            stations=stations,
            temp=storm_temp,
            spread=spread,
        )
        end = start + timedelta(hours=hours)
        nights.append(Night(start, hours, round(rate, 2), profile, chosen, storm_temp))
        snowy_us = [s for s in chosen if s in ultrasonic]
        events += _blind_spells(rng, start, hours, rate, snowy_us)
        if rng.random() < 0.35:
            # Plowing during the storm (the accumulation starts again after it).
            at = start + timedelta(hours=hours * rng.uniform(0.4, 0.9))
            at = at.replace(second=0, microsecond=0)
            events.append({"type": "dispatch", "at": at, "plows": "all", "segments": "all"})
        elif n_nights == 2 and n == 0 and rng.random() < 0.5:
            at = (end + timedelta(hours=rng.uniform(1, 4))).replace(second=0, microsecond=0)
            events.append({"type": "dispatch", "at": at, "plows": "all", "segments": "all"})
    events += _random_faults(rng, first, end, station_ids)
    if lasers:
        # Drawn as for the town's stations, so the storms and faults stay the same.
        events = [
            e for e in events if not (e.get("fault") == "poor_quality" and e["device"] in lasers)
        ]
    # 6 h before the snow: the stations' noise is known when it starts; 5 h after: the
    # last call and its plowing are seen.
    sc_start = (first - timedelta(hours=6)).replace(minute=0)
    sc_end = end + timedelta(hours=5)
    doc: dict[str, Any] = {
        "name": f"storms-{base_seed}-{index}",
        "seed": scenario_seed(base_seed, FAMILY, index) % (2**62),
        "start": sc_start,
        "end": sc_end,
        "devices": {"meters": "none", "plows": "all"},
        # plows: the slowest documented rate (fewer fixes, same trips)
        "intervals": {"plow_fix_s": 5, "station_s": station_s},
        "weather": {
            "mean_temp_c": round(temp + rng.uniform(-1.0, 1.0), 1),
            "diurnal_amplitude_c": round(rng.uniform(0.5, 4.0), 1),
            "initial_depth_cm": round(rng.uniform(0.0, 120.0)),
        },
        "sensors": {
            "spike_rate": round(rng.uniform(0.0, 0.01), 4),
            # Random dropouts are the radio's, in time: as many and as long per hour at
            # any report interval (drawn per reading and in readings).
            "dropout_rate": round(rng.uniform(0.0, 0.004), 4) * station_s / STATION_S,
            "dropout_max_readings": max(1, round(rng.randint(1, 12) * STATION_S / station_s)),
            "station_burst": burst,
        },
        "events": events,
    }
    blind = tuple(
        (
            str(e["device"]),
            int(e["start"].timestamp() * 1000),
            int((e["start"] + timedelta(hours=e["duration_h"])).timestamp() * 1000),
        )
        for e in events
        if e["type"] == "fault" and e["fault"] in ("poor_quality", "dropout", "frozen")
    )
    return Generated(parse_scenario(doc, doc["name"]), tuple(nights), blind)


def _storm_events(
    rng: random.Random,
    *,
    start: datetime,
    hours: float,
    rate: float,
    profile: str,
    stations: Any,
    temp: float,
    spread: float,
) -> list[dict[str, Any]]:
    base = {"type": "storm", "stations": stations, "temp_c": temp, "spread": spread}
    if profile != "bursty":
        total = round(rate * hours, 1)
        return [
            {**base, "start": start, "duration_h": hours, "total_cm": total, "profile": profile}
        ]
    # Bursty: 2–5 flat bursts of uneven strength with lulls between them, the same
    # snow in all as a flat storm of this rate and length.
    k = rng.randint(2, 5)
    weights = [rng.uniform(0.2, 1.0) for _ in range(k)]
    lulls = [rng.uniform(0.1, 0.5) for _ in range(k - 1)]
    busy = hours / (1 + sum(lulls) / k)
    out = []
    t = start
    for i, w in enumerate(weights):
        dur = max(0.5, busy * w / sum(weights))
        burst_rate = rate * hours / busy * rng.uniform(0.6, 1.6)
        out.append(
            {
                **base,
                "start": t,
                "duration_h": round(dur, 2),
                "total_cm": round(burst_rate * dur, 1),
                "profile": "flat",
            }
        )
        t += timedelta(hours=dur)
        if i < len(lulls):
            t += timedelta(hours=busy / k * lulls[i])
        t = t.replace(second=0, microsecond=0)
    return out


def _blind_spells(
    rng: random.Random, start: datetime, hours: float, rate: float, ultrasonic: Sequence[str]
) -> list[dict[str, Any]]:
    """Beyond the simulator's own echo loss (docs/domain.md#echo-loss-in-snowfall): in
    proportion to the snowfall, an ultrasonic station goes blind (no usable echo) or
    gives no reading at all for a while during the storm."""
    out: list[dict[str, Any]] = []
    for sid in ultrasonic:
        if rng.random() < min(0.6, rate / 8):
            at = start + timedelta(hours=rng.uniform(0.0, hours * 0.8))
            out.append(
                {
                    "type": "fault",
                    "device": sid,
                    "fault": "poor_quality",
                    "start": at.replace(second=0, microsecond=0),
                    "duration_h": round(rng.uniform(0.5, 3.0), 1),
                }
            )
        if rng.random() < min(0.4, rate / 12):
            at = start + timedelta(hours=rng.uniform(0.0, hours * 0.8))
            out.append(
                {
                    "type": "fault",
                    "device": sid,
                    "fault": "dropout",
                    "start": at.replace(second=0, microsecond=0),
                    "duration_h": round(rng.uniform(0.3, 2.0), 1),
                }
            )
    return out


def _random_faults(
    rng: random.Random, first: datetime, end: datetime, stations: Sequence[str]
) -> list[dict[str, Any]]:
    """Frozen sensors and bursts of spikes at random times of the scenario."""
    out: list[dict[str, Any]] = []
    span_h = (end - first).total_seconds() / 3600 + 6
    if rng.random() < 0.25:
        at = first - timedelta(hours=3) + timedelta(hours=rng.uniform(0, span_h))
        out.append(
            {
                "type": "fault",
                "device": rng.choice(stations),
                "fault": "frozen",
                "start": at.replace(second=0, microsecond=0),
                "duration_h": round(rng.uniform(1.0, 5.0), 1),
            }
        )
    if rng.random() < 0.25:
        at = first - timedelta(hours=3) + timedelta(hours=rng.uniform(0, span_h))
        out.append(
            {
                "type": "fault",
                "device": rng.choice(stations),
                "fault": "spikes",
                "start": at.replace(second=0, microsecond=0),
                "duration_h": round(rng.uniform(0.5, 3.0), 1),
                "rate": round(rng.uniform(0.05, 0.3), 2),
            }
        )
    return out


# ---------------------------------------------------------------- scoring


@dataclass
class Tally:
    """Dispatch scores summed over scenarios (docs/detection.md#dispatch)."""

    storms: int = 0
    crossings: int = 0
    on_time: int = 0
    late: int = 0  # matched, but more than ON_TIME_H after the crossing
    early: int = 0  # matched, but more than ON_TIME_H before the crossing
    missed: int = 0
    false: int = 0
    duplicate: int = 0
    near_miss: int = 0
    # Of the crossings not on time: the truth's plows were out at the crossing (a
    # dispatch already under way), or else the second station peaked within the
    # figures' tolerance above the limit (docs/detection.md#dispatch, Under way and
    # marginal); and how the other ("clear") crossings fared
    plows_out: int = 0
    marginal: int = 0
    clear: int = 0
    clear_on_time: int = 0
    delays_h: list[float] = field(default_factory=list)
    figures: int = 0
    figures_ok: int = 0
    figure_errors: list[str] = field(default_factory=list)
    uncertain_storms: int = 0  # storm nights in which the warning fired
    uncertain_relevant: int = 0  # … of them with a blind spell over a deciding station
    uncertain_episodes: int = 0  # warnings (firing to resolving)
    blind_crossings: int = 0  # crossings with a deciding station blind before them
    blind_crossings_warned: int = 0  # … of them warned about before the call
    cases: list[str] = field(default_factory=list)  # the worst ones, for the notes

    def add(self, other: Tally) -> None:
        for k, v in vars(other).items():
            if isinstance(v, list):
                getattr(self, k).extend(v)
            else:
                setattr(self, k, getattr(self, k) + v)


def score_scenario(
    truth_dir: Path,
    transitions: list[tuple[int, Transition]],
    nights: Sequence[Night],
    p: SnowParams,
    name: str = "",
    *,
    blind: Sequence[tuple[str, int, int]] = (),
) -> Tally:
    truth = SnowTruth.load(truth_dir)
    crossings = truth.crossings(p)
    calls = [
        (d, t) for d, t in transitions if t.rule == "snow.dispatch" and t.firing
    ]  # detection time: the evaluation step that emitted it
    s = Tally(storms=len(nights), crossings=len(crossings))
    _score_uncertain(
        s,
        truth=truth,
        transitions=transitions,
        nights=nights,
        blind=blind,
        p=p,
        crossings=crossings,
    )
    used: set[int] = set()
    matched: dict[int, int] = {}  # call index → crossing
    for c in crossings:
        kind, note = _kind(truth, c, p)
        s.clear += not kind
        best = None
        for i, (d, t) in enumerate(calls):
            if i in used or abs(d - c) > MATCH_H * HOUR_MS or not truth.about(c, d, since_of(t)):
                continue
            if best is None or abs(d - c) < abs(calls[best][0] - c):
                best = i
        if best is None:
            s.missed += 1
            s.cases.append(f"{name}: missed crossing {_hhmm(c)}{note}")
            _not_on_time(s, kind)
            continue
        used.add(best)
        matched[best] = c
        delay = (calls[best][0] - c) / HOUR_MS
        s.delays_h.append(round(delay, 2))
        if abs(delay) <= ON_TIME_H:
            s.on_time += 1
            s.clear_on_time += not kind
        else:
            if delay > 0:
                s.late += 1
            else:
                s.early += 1
            s.cases.append(f"{name}: crossing {_hhmm(c)} called {delay:+.1f} h{note}")
            _not_on_time(s, kind)
    for i, (d, t) in enumerate(calls):
        if i in matched:
            _figures(s, truth, t, name)
        else:
            _unmatched(s, truth, p, d=d, t=t, matched=[calls[j][0] for j in matched], name=name)
    return s


def _kind(truth: SnowTruth, crossing: int, p: SnowParams) -> tuple[str, str]:
    """Why a crossing is hard to call on time (docs/detection.md#dispatch, Under way and
    marginal): the plows were out already, or the second station ended within the
    figures' tolerance above the limit; with the note for its case line. ("", "") for a
    clear crossing."""
    if truth.plows_out(crossing):
        return "plows_out", " (plows out)"
    peak = truth.crossing_peak(crossing, p)
    if peak < marginal_cm(p):
        return "marginal", f" (marginal: 2nd station peaked {peak:.1f} cm)"
    return "", ""


def marginal_cm(p: SnowParams) -> float:
    """Below this, a crossing's second station ended within the figures' tolerance
    above the limit."""
    return p.dispatch_cm + figure_tolerance(p.dispatch_cm)


def _not_on_time(s: Tally, kind: str) -> None:
    if kind == "plows_out":
        s.plows_out += 1
    elif kind == "marginal":
        s.marginal += 1


def _score_uncertain(
    s: Tally,
    *,
    truth: SnowTruth,
    transitions: list[tuple[int, Transition]],
    nights: Sequence[Night],
    blind: Sequence[tuple[str, int, int]],
    p: SnowParams,
    crossings: list[int],
) -> None:
    """snow.dispatch_uncertain (docs/detection.md#dispatch, Uncertain): its warnings per storm
    night, whether a blind spell lay over a station that decided the truth's crossing,
    and the crossings with such a spell that it warned about."""
    episodes: list[tuple[int, int]] = []
    for _d, t in sorted(
        ((d, t) for d, t in transitions if t.rule == "snow.dispatch_uncertain"),
        key=lambda x: x[0],
    ):
        if t.firing:
            episodes.append((_ms(t), 2**62))
        elif episodes and episodes[-1][1] == 2**62:
            episodes[-1] = (episodes[-1][0], _ms(t))
    s.uncertain_episodes += len(episodes)
    spans = [
        (int(n.start.timestamp() * 1000), int(n.start.timestamp() * 1000 + n.hours * HOUR_MS))
        for n in nights
    ]

    def night_of(ms: int) -> int:
        return min(range(len(spans)), key=lambda i: max(spans[i][0] - ms, ms - spans[i][1], 0))

    # Per crossing: the stations that decided it (at or above the threshold at it) with a
    # blind spell in the accumulation before it (or the hour after it).
    decisive: list[tuple[int, int, int]] = []  # (crossing, accumulation start, night)
    for c in crossings:
        start = truth.reset_ms(c, p)
        deciding = {st for st, v in truth.totals(start, c).items() if v >= p.dispatch_cm}
        if any(sid in deciding and a < c + HOUR_MS and b > start for sid, a, b in blind):
            decisive.append((c, start, night_of(c)))
    s.blind_crossings += len(decisive)
    s.blind_crossings_warned += sum(
        1 for c, start, _n in decisive if any(start <= a <= c + HOUR_MS for a, _b in episodes)
    )
    fired = {night_of(a) for a, _b in episodes}
    s.uncertain_storms += len(fired)
    s.uncertain_relevant += len(fired & {n for _c, _s, n in decisive})


def _unmatched(
    s: Tally,
    truth: SnowTruth,
    p: SnowParams,
    *,
    d: int,
    t: Transition,
    matched: list[int],
    name: str,
) -> None:
    """A call about no crossing: duplicate, near-miss or false."""
    at = _ms(t)
    # One call per accumulation: a call in an accumulation that already had one.
    reset = truth.reset_ms(at, p)
    if any(reset < m < d for m in matched):
        s.duplicate += 1
        s.cases.append(f"{name}: duplicate call {_hhmm(d)}: {t.message[:90]}")
        return
    peak = truth.peak_after(at, p)
    if peak >= NEAR_MISS_CM:
        s.near_miss += 1
    else:
        s.false += 1
        s.cases.append(f"{name}: false call {_hhmm(d)} (truth 2nd {peak:.1f} cm)")


def _figures(s: Tally, truth: SnowTruth, t: Transition, name: str) -> None:
    """Each station's figure against the truth for the window the message states."""
    since = since_of(t)
    figures = t.values.get("figures")
    if since is None or not isinstance(figures, str):
        # Older messages state no machine-readable window: read the first figure and
        # its "(HH:MM–HH:MM)" span from the text.
        figs = _legacy_figures(t)
    else:
        end = _ms(t)
        figs = [(sid, float(v), since, end) for sid, v in _FIGURE.findall(figures)]
    for sid, value, start, end in figs:
        want = truth.totals(start, end).get(sid, 0.0)
        s.figures += 1
        if figure_ok(value, want):
            s.figures_ok += 1
        else:
            s.figure_errors.append(f"{name}: {sid} {value:.1f} cm, truth {want:.1f} cm")


_SPAN = re.compile(
    r"([A-Z]{2}[0-9]+) 新雪 ([0-9.]+) cm \(([0-9]{2}):([0-9]{2})–([0-9]{2}):([0-9]{2})\)"
)


def _legacy_figures(t: Transition) -> list[tuple[str, float, int, int]]:
    m = _SPAN.search(t.message)
    if not m:
        return []
    end = _ms(t)
    local_end = datetime.fromtimestamp(end / 1000, _JST)
    first = local_end.replace(hour=int(m.group(3)), minute=int(m.group(4)))
    if first >= local_end:
        first -= timedelta(days=1)
    start = int(first.timestamp() * 1000)  # hours ending after it: the span's hours
    return [(m.group(1), float(m.group(2)), start, end)]


def _ms(t: Transition) -> int:
    return dt_to_ms(t.event_time)


def _hhmm(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, _JST).strftime("%m-%d %H:%M")


# ---------------------------------------------------------------- the family


def _pct(a: int, b: int) -> float:
    return 100.0 * a / b if b else 100.0


def _dist(xs: Sequence[float]) -> str:
    if not xs:
        return "–"
    q = statistics.quantiles(xs, n=10, method="inclusive") if len(xs) > 1 else [xs[0]] * 9
    return f"p50 {statistics.median(xs):+.1f} h, p90 {q[8]:+.1f} h, max {max(xs):+.1f} h"


class DeploymentError(ValueError):
    """A deployment option that names what the town does not have."""


def as_lasers(registry: Registry, ids: Collection[str]) -> Registry:
    """The town with these snow stations lasers (what replacing their ultrasonic
    sensors would give; docs/detection.md#results)."""
    stations = {
        k: replace(s, sensor_type="laser") if k in ids else s for k, s in registry.stations.items()
    }
    return replace(registry, stations=stations)


def laser_ids(registry: Registry, spec: str) -> frozenset[str]:
    """``--lasers``: "" none, "all", or station ids separated by commas."""
    if spec.strip().lower() == "all":
        return frozenset(registry.stations)
    ids = frozenset(x.strip() for x in spec.split(",") if x.strip())
    unknown = sorted(ids - set(registry.stations))
    if unknown:
        known = ", ".join(sorted(registry.stations))
        raise DeploymentError(f"--lasers: no station {', '.join(unknown)} (known: {known})")
    return ids


def battery(
    base_seed: int,
    n: int,
    *,
    cfg: Config | None = None,
    rcfg: RulesConfig | None = None,
    tag: str = "",
    station_s: int = STATION_S,
    burst: int = BURST,
    lasers: Collection[str] = (),
) -> tuple[Tally, int]:
    """Run ``n`` scenarios; the summed tally and how many storm nights they held
    (``tag`` goes before each scenario's ``#i`` in the cases; the stations report every
    ``station_s`` seconds the median of ``burst`` measurements; ``lasers``: the stations
    made lasers)."""
    cfg = cfg or load_config(SAMPLE_CONFIG, environ={})
    registry = load_registry(cfg)
    measured_by = as_lasers(registry, lasers) if lasers else registry
    rcfg = rcfg or with_settings(cfg)
    p: SnowParams = rcfg.snow
    families = [BY_NAME["plow"], BY_NAME["snow"]]
    total = Tally()
    with tempfile.TemporaryDirectory(prefix="yukimizu-storms-") as tmp:
        for i in range(n):
            g = generate(base_seed, i, registry, station_s=station_s, burst=burst, lasers=lasers)
            ran = run_scenario(
                g.scenario,
                measured_by,
                cfg=cfg,
                rcfg=rcfg,
                families=families,
                truth_dir=Path(tmp) / str(i),
            )
            total.add(
                score_scenario(
                    ran.truth_dir,
                    ran.result.transitions,
                    g.nights,
                    p,
                    f"{tag}#{i}",
                    blind=g.blind,
                )
            )
    return total, total.storms


def run(
    base_seeds: int | Sequence[int],
    *,
    quick: bool,
    station_s: int = STATION_S,
    burst: int = BURST,
    lasers: str = "",
    config: Path = SAMPLE_CONFIG,
) -> FamilyResult:
    """The family on one base seed, or on several summed (each seed's on-time share
    shown apart); ``station_s``, ``burst``: the stations' report interval, and how many
    measurements each reading is the median of; ``lasers``: the stations made lasers
    ("all", or ids separated by commas); ``config``: whose stations, plows, routes and
    rules (a town's own deployment)."""
    seeds = (base_seeds,) if isinstance(base_seeds, int) else tuple(base_seeds)
    n = QUICK_SCENARIOS if quick else FULL_SCENARIOS
    cfg = load_config(config, environ={})
    made_lasers = laser_ids(load_registry(cfg), lasers)
    rcfg = with_settings(cfg)
    t = Tally()
    per_seed = []
    for seed in seeds:
        tag = f"{seed} " if len(seeds) > 1 else ""
        one, _ = battery(
            seed,
            n,
            cfg=cfg,
            rcfg=rcfg,
            tag=tag,
            station_s=station_s,
            burst=burst,
            lasers=made_lasers,
        )
        per_seed.append(
            f"{seed} {one.on_time}/{one.crossings} = {_pct(one.on_time, one.crossings):.1f}%"
        )
        t.add(one)
    storms = t.storms
    matched = t.on_time + t.late + t.early
    calls = matched + t.false + t.duplicate + t.near_miss
    on_time_pct = _pct(t.on_time, t.crossings)
    false_per_20 = 20.0 * (t.false + t.duplicate) / storms if storms else 0.0
    lines = [
        f"storms: {n * len(seeds)} scenarios, {storms} storm nights, {t.crossings} true crossings",
        f"  snow.dispatch  recall {_pct(matched, t.crossings):.0f}% "
        f"(on time ≤ {ON_TIME_H:.0f} h: {t.on_time}/{t.crossings} = {on_time_pct:.1f}%; "
        f"late {t.late}, early {t.early}, missed {t.missed})",
        f"  snow.dispatch  precision {_pct(matched, calls):.0f}% ({calls} calls: "
        f"{t.false} false, {t.duplicate} duplicate, {t.near_miss} near-miss "
        f"[truth's 2nd station ≥ {NEAR_MISS_CM:.0f} cm, reported apart])",
        f"  snow.dispatch  not on time {t.crossings - t.on_time}: {t.plows_out} with the "
        f"truth's plows already out, {t.marginal} marginal (2nd station peaked under "
        f"{marginal_cm(rcfg.snow):g} cm); on time of the {t.clear} clear crossings: "
        f"{t.clear_on_time} = {_pct(t.clear_on_time, t.clear):.1f}% "
        "(docs/detection.md#dispatch)",
        f"  snow.dispatch  delay {_dist(t.delays_h)}",
        f"  snow.dispatch  figures within max(2 cm, 20 %): {t.figures_ok}/{t.figures} "
        f"= {_pct(t.figures_ok, t.figures):.1f}%",
        f"  snow.dispatch_uncertain  fired in {t.uncertain_storms} of {storms} storm nights "
        f"({t.uncertain_relevant} with a blind spell over a station deciding the truth's "
        f"crossing); {t.uncertain_episodes} warnings, "
        f"{(t.uncertain_episodes - t.uncertain_storms) / max(1, t.uncertain_storms):.2f} "
        f"flaps per warned night; warned before {t.blind_crossings_warned} of "
        f"{t.blind_crossings} crossings with a deciding station blind",
    ]
    if len(seeds) > 1:
        lines.insert(2, f"  snow.dispatch  on time per base seed: {'; '.join(per_seed)}")
    if (station_s, burst) != (STATION_S, BURST):
        lines.insert(
            1,
            f"  stations report every {station_s} s the median of {burst} measurement(s), "
            f"not one every {STATION_S} s: a deployment's figures, not the battery's "
            "(docs/domain.md#report-interval)",
        )
    if Path(config).resolve() != SAMPLE_CONFIG.resolve():
        lines.insert(
            1,
            f"  the stations, plows and rules of {config}: a deployment's figures, not the "
            "battery's (docs/detection.md#results)",
        )
    if made_lasers:
        lines.insert(
            1,
            f"  lasers at {lasers}, not the sensors as registered: a deployment's figures, "
            "not the battery's (docs/detection.md#results)",
        )
    notes = [f"    {c}" for c in t.cases[:12]] + [f"    figure: {e}" for e in t.figure_errors[:6]]
    return FamilyResult(
        lines=lines,
        summary={
            "dispatch_on_time_pct": on_time_pct,
            "dispatch_false_per_20": false_per_20,
            "dispatch_clear_on_time_pct": _pct(t.clear_on_time, t.clear),
            "dispatch_figures_pct": _pct(t.figures_ok, t.figures),
            # docs/detection.md#dispatch (Uncertain): share of warned nights with a
            # blind spell over a deciding station, and re-fires per warned night
            "uncertain_relevant_pct": _pct(t.uncertain_relevant, t.uncertain_storms),
            "uncertain_flaps_per_night": (t.uncertain_episodes - t.uncertain_storms)
            / max(1, t.uncertain_storms),
            "uncertain_warned_pct": _pct(t.blind_crossings_warned, t.blind_crossings),
        },
        scenarios=n * len(seeds),
        notes=notes,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """The storms family alone: ``python -m benchmarks.detection.storms [--quick]
    [--station-s S] [--burst K] [--lasers [IDS]] [--config TOML]``."""
    deployment = (
        (
            "--station-s",
            {
                "type": int,
                "default": STATION_S,
                "help": "the stations' report interval in seconds (default 600, as the "
                "battery's targets are measured); another one measures what a deployment "
                "would get",
            },
        ),
        (
            "--burst",
            {
                "type": int,
                "default": BURST,
                "help": "each reading the median of this many measurements spread over the "
                "interval (default 1, as the targets are measured)",
            },
        ),
        (
            "--lasers",
            {
                "nargs": "?",
                "const": "all",
                "default": "",
                "metavar": "IDS",
                "help": "these stations laser sensors (ST02,ST05; alone: all), on the same "
                "storms without their ultrasonic echo loss: what replacing them would give, "
                "not the targets",
            },
        ),
        (
            "--config",
            {
                "type": Path,
                "default": SAMPLE_CONFIG,
                "help": "a yukimizu.toml whose stations (their sensor types), plows, routes "
                "and rules to measure: a town's own deployment, not the targets (default: "
                "the sample town's)",
            },
        ),
    )
    try:
        return family_main("storms", run, argv, seeds=storm_seeds, options=deployment)
    except (DeploymentError, ConfigError, RegistryError) as e:
        # a deployment the town cannot have, or a config that does not load: say which
        print(f"storms: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
