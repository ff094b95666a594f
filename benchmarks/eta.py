"""Backtest of the plow ETA (rules/eta.py) against the simulators' ground truth.

    python -m benchmarks.eta [--quick] [--nights N]

For each fleet night (the storm-morning fleet scenario, the winter season's dispatch
nights and a battery of generated nights), the simulator's plow fixes are fed to the
plow family minute by minute, as the rules engine would see them, and every
``segment_eta`` it writes is compared with the truth: the end of the segment's first
blade-down pass after the prediction, in the same dispatch. Predictions 30 min or
more ahead of the truth count. A 見込み不明 prediction (state ``unknown``) has no
number to score; the share of them is reported apart.

Last line, exactly: ``eta: <m> min median error, <p>% inside band (<n> segments ≥ 30
min ahead)``. Offline: no services, nothing written. Single-threaded; figures measured
while other work runs on the machine are the same (they are not timings).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pandas as pd

from benchmarks.common import REPO, SAMPLE_CONFIG
from core.config import load_config, load_registry
from rules.config import RulesConfig
from rules.model import Output, Shared
from rules.plows import PlowFamily
from rules.schema import SEGMENT_ETA
from sensors.registry import Registry
from sensors.schema import PLOW
from simulators.plow_gps import plow_fixes
from simulators.scenario import Scenario, load_scenario, parse_scenario
from simulators.world import World, build_world

__all__ = ["NightResult", "backtest_world", "generated_night", "main", "summary_line"]

STEP_S = 60  # the rules engine's cycle
AHEAD_S = 30 * 60
JST = timedelta(hours=9)


@dataclass
class NightResult:
    name: str
    errors_s: list[float] = field(default_factory=list)  # |eta - truth|, ≥ 30 min ahead
    inside: int = 0
    widths_s: list[float] = field(default_factory=list)  # late - early of each scored band
    unknown: int = 0  # 見込み不明 predictions ≥ 30 min ahead of a true plowing

    @property
    def n(self) -> int:
        return len(self.errors_s)

    def add(self, other: NightResult) -> None:
        self.errors_s += other.errors_s
        self.inside += other.inside
        self.widths_s += other.widths_s
        self.unknown += other.unknown


def _fix_frame(world: World) -> pd.DataFrame:
    rows = []
    for plow in sorted(world.trips):
        for t, v in plow_fixes(world, plow):
            if v is None:  # an invalid fix: ingest drops it
                continue
            rows.append(
                {
                    "time": t * 1000,
                    "device": plow,
                    "lat": v["lat"],
                    "lon": v["lon"],
                    "speed_kmh": v["speed_kmh"],
                    "heading_deg": v["heading_deg"],
                    "blade_down": v["blade_down"],
                }
            )
    frame = pd.DataFrame(rows)
    return frame.sort_values(["time", "device"], kind="stable").reset_index(drop=True)


def _truth(world: World) -> dict[str, list[tuple[int, int]]]:
    """segment → sorted (pass end s, dispatch time s) of its blade-down passes."""
    out: dict[str, list[tuple[int, int]]] = {}
    for trips in world.trips.values():
        for trip in trips:
            for p in trip.passes:
                out.setdefault(p.segment, []).append((p.end, trip.dispatched_at))
    for v in out.values():
        v.sort()
    return out


def backtest_world(name: str, world: World, registry: Registry) -> NightResult:
    """Feed the world's plow fixes to the plow family; score its segment ETAs."""
    result = NightResult(name)
    if not world.dispatches:
        return result
    frame = _fix_frame(world)
    if frame.empty:
        return result
    truth = _truth(world)
    family = PlowFamily(registry, RulesConfig(), Shared())
    times = frame["time"].to_numpy()
    # only the hours with fixes (a season is mostly quiet), a minute at a time
    start = int(times[0]) // 1000 // STEP_S * STEP_S
    end = int(times[-1]) // 1000 + 3600
    i = 0
    t = start
    while t <= end:
        now_ms = t * 1000
        j = int(times.searchsorted(now_ms, side="right"))
        out = Output()
        if j > i:
            part = frame.iloc[i:j].sort_values(["device", "time"], kind="stable")
            family.feed(PLOW, part.reset_index(drop=True), out)
            i = j
        family.tick(now_ms, out)
        _score(out, truth, result)
        if i >= len(times) and family._dispatch is None:  # noqa: SLF001 (benchmark)
            break
        # jump over quiet hours between trips
        if j == i and i < len(times) and family._dispatch is None:  # noqa: SLF001
            t = max(t + STEP_S, int(times[i]) // 1000 // STEP_S * STEP_S)
        else:
            t += STEP_S
    return result


def _score(out: Output, truth: dict[str, list[tuple[int, int]]], result: NightResult) -> None:
    for p in out.points:
        if p.measurement != SEGMENT_ETA or p.fields["state"] not in ("eta", "unknown"):
            continue
        now_s = p.time_ms // 1000
        passes = truth.get(p.tags["segment"], [])
        # the first pass ending after now, of a dispatch made by now
        nxt = next((e for e, d in passes if e > now_s and d <= now_s), None)
        if nxt is None or nxt - now_s < AHEAD_S:
            continue
        if p.fields["state"] == "unknown":
            result.unknown += 1
            continue
        eta = p.fields["eta_s"]
        result.errors_s.append(abs(eta - nxt))
        result.widths_s.append(p.fields["late_s"] - p.fields["early_s"])
        if p.fields["early_s"] <= nxt <= p.fields["late_s"]:
            result.inside += 1


# ------------------------------------------------------------------ scenarios


def generated_night(seed: int) -> Scenario:
    """A fleet night: a storm, then all plows (or all but one) dispatched at a random
    hour, with the GPS gap and idle rates of a rough night drawn at random."""
    rng = random.Random(f"eta-night/{seed}")
    day = datetime(2026, 1, 5, tzinfo=UTC) + timedelta(days=rng.randrange(60))
    storm_start = day + timedelta(minutes=rng.randrange(-480, -120))  # the evening before
    at = day + timedelta(minutes=rng.randrange(-450, -330))  # 01:30–03:30 JST
    plows = "all" if rng.random() < 0.7 else ["P01", "P02", "P04", "P05"]
    data = {
        "name": f"eta-night-{seed}",
        "description": "generated fleet night for the ETA backtest",
        "seed": seed,
        "start": (at - timedelta(hours=1)).isoformat(),
        "end": (at + timedelta(hours=7)).isoformat(),
        "sensors": {
            "gps_gap_rate": rng.choice([0.0003, 0.001, 0.003]),
            "idle_probability": rng.choice([0.2, 0.3, 0.5]),
        },
        "events": [
            {
                "type": "storm",
                "start": storm_start.isoformat(),
                "duration_h": 6,
                "total_cm": round(rng.uniform(10, 35), 1),
            },
            {"type": "dispatch", "at": at.isoformat(), "plows": plows, "segments": "all"},
        ],
    }
    return parse_scenario(data, f"<generated night {seed}>")


def summary_line(total: NightResult) -> str:
    median_min = statistics.median(total.errors_s) / 60 if total.errors_s else float("nan")
    share = 100.0 * total.inside / total.n if total.n else float("nan")
    return (
        f"eta: {median_min:.1f} min median error, {share:.0f}% inside band "
        f"({total.n} segments ≥ 30 min ahead)"
    )


def _row(r: NightResult) -> str:
    med = statistics.median(r.errors_s) / 60 if r.errors_s else float("nan")
    share = 100.0 * r.inside / r.n if r.n else float("nan")
    unknown = 100.0 * r.unknown / (r.n + r.unknown) if r.n + r.unknown else 0.0
    width = statistics.median(r.widths_s) / 60 if r.widths_s else float("nan")
    return (
        f"  {r.name:<22} n={r.n:>5}  median {med:5.1f} min  inside {share:5.1f}%  "
        f"band {width:4.0f} min  見込み不明 {unknown:4.1f}%"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--nights", type=int, default=12, help="generated nights (default 12)")
    parser.add_argument("--quick", action="store_true", help="3 generated nights, no season")
    args = parser.parse_args(argv)
    if args.quick:
        args.nights = 3
    registry = load_registry(load_config(SAMPLE_CONFIG))
    total = NightResult("all")
    groups: dict[str, NightResult] = {}

    def run(group: str, name: str, world: World) -> None:
        r = backtest_world(name, world, registry)
        print(_row(r), flush=True)
        total.add(r)
        groups.setdefault(group, NightResult(group)).add(r)

    print("fleet scenario:")
    fleet = load_scenario(REPO / "scenarios" / "storm-morning-fleet.toml")
    run("storm-morning-fleet", "storm-morning-fleet", build_world(fleet, registry))
    if not args.quick:
        print("winter season (every automatic dispatch):")
        season = load_scenario(REPO / "scenarios" / "winter-season.toml")
        run("winter season", "winter-season", build_world(season, registry))
    print("generated nights (seeds 1000…):")
    for seed in range(1000, 1000 + args.nights):
        run("generated", f"night {seed}", build_world(generated_night(seed), registry))
    print("by group:")
    for r in groups.values():
        print(_row(r))
    print(summary_line(total))
    return 0


if __name__ == "__main__":
    sys.exit(main())
