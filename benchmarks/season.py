"""Benchmark: generate a whole winter season (1 Dec – 31 Mar) for the sample town.

    .venv/bin/python -m benchmarks.season [--format native] [--days N] [--out FILE]

Two measurements in one run:

1. generation alone: build the world (weather, snowpack, households, plow trips) and
   stream every message in time order, as ``yukimizu simulate`` would publish them;
2. the whole pipeline (skip with ``--generate-only``): private Mosquitto and InfluxDB
   on free loopback ports, ``yukimizu ingest`` as its own process, the season
   published with QoS 1 through the broker, until InfluxDB holds every reading
   (checked per measurement against the simulator's own count).

The last line is ``season: <N> messages in <S> s`` for the whole pipeline (for
generation alone with ``--generate-only``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from benchmarks.common import IngestProcess, ingest_env
from core.config import load_config
from core.config import load_registry as config_registry
from devtools.localstack import InfluxDB1, Mosquitto
from sensors.registry import Registry
from simulators.formats import WIRE_FORMATS, WireFormat
from simulators.run import Playback, publish_scenario
from simulators.scenario import load_scenario
from simulators.stream import Simulation
from simulators.timeutil import iso

ROOT = Path(__file__).resolve().parents[1]
SEASON = ROOT / "scenarios" / "winter-season.toml"


def load_registry() -> Registry:
    """The sample town's registry, as the sample config names it."""
    return config_registry(load_config(ROOT / "config" / "yukimizu.toml", environ={}))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--scenario", type=Path, default=SEASON)
    parser.add_argument("--format", choices=WIRE_FORMATS, default="native")
    parser.add_argument("--days", type=float, help="only the first N days")
    parser.add_argument("--out", type=Path, help="also write the messages (JSON lines)")
    parser.add_argument("--generate-only", action="store_true", help="skip the pipeline run")
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
    if args.generate_only:
        print(f"season: {messages} messages in {total:.1f} s")
        return 0
    return pipeline(args.scenario, args.format, args.days, registry)


def pipeline(scenario_path: Path, fmt: WireFormat, days: float | None, registry: Registry) -> int:
    """Publish the season through Mosquitto into InfluxDB via a separate ingest process."""
    print("\n== whole pipeline: simulator → Mosquitto → ingest → InfluxDB")
    with tempfile.TemporaryDirectory(prefix="yukimizu-season-") as tmp:
        work = Path(tmp)
        broker = Mosquitto(work / "mosquitto")
        influx = InfluxDB1(work / "influxdb")
        broker.start()
        influx.start()
        env = ingest_env("season", broker.port, influx.url, work / "state")
        env["YUKIMIZU_MQTT__LORAWAN_TOPICS"] = (
            '["season-lora/application/+/device/+/event/up", "season-lora/v3/+/devices/+/up"]'
        )
        cfg = load_config(Path(env["YUKIMIZU_CONFIG"]), environ=env)
        ingest = IngestProcess(env, work / "ingest.log")
        try:
            ingest.start()
            path = scenario_path
            if days is not None:
                scenario = load_scenario(scenario_path)
                cut = scenario.model_copy(update={"end": scenario.start + timedelta(days=days)})
                path = work / "scenario.toml"
                path.write_text(_scenario_toml(scenario_path, cut.end.isoformat()))
            t0 = time.perf_counter()
            summary = publish_scenario(
                cfg,
                path,
                Playback(fmt=fmt, progress=False),
                registry=registry,
            )
            t_pub = time.perf_counter() - t0
            expected = summary.readings
            deadline = time.monotonic() + 600
            got = 0
            while time.monotonic() < deadline:
                got = _total_points(influx, "season")
                if got >= summary.readings:
                    break
                time.sleep(0.25)
            wall = time.perf_counter() - t0
            rss = ingest.read_peak_rss()
        finally:
            stats = ingest.stop()
            influx.stop()
            broker.stop()
    print(
        f"published {summary.published:,} messages in {t_pub:.1f} s "
        f"({summary.published / t_pub:,.0f} msg/s, QoS 1, acknowledged by the broker)"
    )
    print(
        f"InfluxDB holds {got:,} of {expected:,} readings "
        f"{'(all)' if got == expected else '(MISSING SOME)'} after {wall:.1f} s"
    )
    print(f"ingest: {stats}; peak RSS {rss:.0f} MB")
    print(
        f"end to end: {summary.messages / wall:,.0f} messages/s, "
        f"{summary.readings / wall:,.0f} readings/s; target < 180 s: "
        f"{'met' if wall < 180 else 'MISSED'}"
    )
    print(f"season: {summary.messages} messages in {wall:.1f} s")
    return 0 if got == expected else 1


_ALWAYS = {"snow_depth": "depth_cm", "water_meter": "register_l", "plow_position": "lat"}


def _total_points(influx: InfluxDB1, db: str) -> int:
    return sum(influx.count(m, f, db) for m, f in _ALWAYS.items())


def _scenario_toml(path: Path, end_iso: str) -> str:
    """The scenario file with its ``end`` replaced (for --days in the pipeline run)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return (
        "\n".join(f"end = {end_iso}" if line.startswith("end = ") else line for line in lines)
        + "\n"
    )


if __name__ == "__main__":
    sys.exit(main())
