"""Benchmark: generate a whole winter season (1 Dec – 31 Mar) for the sample town.

    .venv/bin/python -m benchmarks.season [--format native] [--days N] [--out FILE]

Generation alone (no broker): builds the world (weather, snowpack, households,
plow trips), then streams every message in time order, as ``yukimizu simulate``
would publish them. Prints messages, readings, wall time and messages/s; the last
line is ``season: <N> messages in <S> s`` (S = world + stream).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from sensors.registry import BBox, Registry
from simulators.formats import WIRE_FORMATS
from simulators.scenario import load_scenario
from simulators.stream import Simulation
from simulators.timeutil import iso

ROOT = Path(__file__).resolve().parents[1]
SEASON = ROOT / "scenarios" / "winter-season.toml"
TOWN = BBox(lat_min=38.355, lat_max=38.405, lon_min=140.165, lon_max=140.235)


def load_registry() -> Registry:
    cfg = ROOT / "config"
    return Registry.load(
        cfg / "stations.csv",
        cfg / "meters.csv",
        cfg / "plows.csv",
        cfg / "routes.geojson",
        bbox=TOWN,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--scenario", type=Path, default=SEASON)
    parser.add_argument("--format", choices=WIRE_FORMATS, default="native")
    parser.add_argument("--days", type=float, help="only the first N days")
    parser.add_argument("--out", type=Path, help="also write the messages (JSON lines)")
    args = parser.parse_args(argv)

    registry = load_registry()
    scenario = load_scenario(args.scenario)
    if args.days is not None:
        scenario = scenario.model_copy(update={"end": scenario.start + timedelta(days=args.days)})
    t0 = time.perf_counter()
    sim = Simulation(scenario, registry, args.format)
    t_world = time.perf_counter() - t0
    world = sim.world
    print(
        f"scenario {scenario.name}: {iso(sim.start)} – {iso(sim.end)}, format {sim.format}; "
        f"{len(world.stations)} stations every {scenario.intervals.station_s} s, "
        f"{len(world.meters)} meters hourly, {len(world.all_trips())} plow trips "
        f"in {len(world.dispatches)} dispatches, {len(world.storms)} storms"
    )
    print(f"world (weather, snowpack, households, trips): {t_world:.2f} s")

    kinds: Counter[str] = Counter()
    readings = 0
    payload_bytes = 0
    out = args.out.open("wb") if args.out else None
    t1 = time.perf_counter()
    try:
        for msg in sim.messages():
            kinds[msg.kind] += 1
            readings += msg.readings
            payload_bytes += len(msg.payload)
            if out is not None:
                out.write(msg.topic.encode() + b" " + msg.payload + b"\n")
    finally:
        if out is not None:
            out.close()
    t_stream = time.perf_counter() - t1
    messages = sum(kinds.values())
    total = t_world + t_stream
    for kind in ("snow", "water", "plow"):
        print(f"  {kind:<6} {kinds[kind]:>9,} messages")
    print(f"messages: {messages:,}  readings: {readings:,}  payload: {payload_bytes / 1e6:.1f} MB")
    print(
        f"stream: {t_stream:.2f} s ({messages / t_stream:,.0f} messages/s, "
        f"{readings / t_stream:,.0f} readings/s); total {total:.2f} s "
        f"({messages / total:,.0f} messages/s)"
    )
    print(f"season: {messages} messages in {total:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
