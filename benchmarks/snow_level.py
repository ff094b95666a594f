"""Benchmark: the snow family's hourly level, depth-and-rate track against the line.

    .venv/bin/python -m benchmarks.snow_level [--stations 100] [--hours 24] [--repeat 3]

A day of 10-minute readings for N ultrasonic-like stations (σ 1.5 cm, 40 % weak
echoes) is fed to the snow family in one frame and ticked to its end, once with
``level_filter = "line"`` (the Theil–Sen line, the baseline), once with ``"track"``
(docs/rules-snow.md#new-snow) and once with the track but the starting depth after
the midday plowing taken as seen (``baseline_smooth_h = 0``), alternately
``--repeat`` times. Prints CPU seconds per run and per 1,000 station-hours. Offline:
no services, nothing written.

Last line, exactly: ``snow level: track <t> CPU-s, line <l> CPU-s (<r>x) for <N>
stations x <H> h``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import pandas as pd

from benchmarks.common import SAMPLE_CONFIG
from core.config import load_config, load_registry
from rules.config import RulesConfig
from rules.model import HOUR_MS, MINUTE_MS, Output, Shared
from rules.snow import SnowFamily

T0 = 1_768_400_000_000 - 1_768_400_000_000 % HOUR_MS


def frame(stations: int, hours: int) -> pd.DataFrame:
    t = np.arange(0, hours * 60, 10) * MINUTE_MS + T0
    rng = np.random.default_rng(3)
    n = stations * len(t)
    df = pd.DataFrame(
        {
            "time": np.tile(t, stations),
            "device": np.repeat([f"X{i:03d}" for i in range(stations)], len(t)),
            "depth_cm": 80 + rng.normal(0, 1.5, n).round(1),
            "distance_mm": np.nan,
            "air_temp_c": -3.0,
            "quality": np.where(rng.random(n) < 0.4, 30, 80),
            "battery_v": 3.6,
            "alarm_low_battery": False,
        }
    )
    df["arrival"] = df["time"]
    return df


VARIANTS: dict[str, dict[str, object]] = {
    "line": {"level_filter": "line"},
    "track": {"level_filter": "track"},
    # the track, without re-reading the starting depth after the plowing
    "as-seen": {"level_filter": "track", "baseline_smooth_h": 0},
}


def run_once(variant: str, df: pd.DataFrame, hours: int) -> float:
    registry = load_registry(load_config(SAMPLE_CONFIG, environ={}))
    shared = Shared()
    shared.plowed(T0 + hours // 2 * HOUR_MS + 5 * MINUTE_MS)  # a plowing at midday
    family = SnowFamily(registry, RulesConfig(snow=VARIANTS[variant]), shared)
    out = Output()
    start = time.process_time()
    family.feed("snow_depth", df, out)
    family.tick(T0 + hours * HOUR_MS, out)
    return time.process_time() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--stations", type=int, default=100)
    ap.add_argument("--hours", type=int, default=24)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    df = frame(args.stations, args.hours)
    cpu: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for _ in range(args.repeat):
        for lf, runs in cpu.items():
            runs.append(run_once(lf, df, args.hours))
    station_hours = args.stations * args.hours
    for lf, runs in cpu.items():
        per_k = 1000 * statistics.median(runs) / station_hours
        print(
            f"{lf:7}: " + ", ".join(f"{x:.3f}" for x in runs) + f" CPU-s ({per_k:.3f} per 1,000"
            " station-hours, median)"
        )
    track, line = statistics.median(cpu["track"]), statistics.median(cpu["line"])
    seen = statistics.median(cpu["as-seen"])
    print(
        f"re-reading the starting depth after the plowing: {track - seen:+.3f} CPU-s"
        f" ({track / seen:.2f}x the track without it)"
    )
    print(
        f"snow level: track {track:.3f} CPU-s, line {line:.3f} CPU-s ({track / line:.2f}x)"
        f" for {args.stations} stations x {args.hours} h"
    )


if __name__ == "__main__":
    main()
