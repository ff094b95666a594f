"""Rule lab: a scenario through ingest's processor into a real InfluxDB, then a backtest.

    python -m devtools.rulelab scenarios/heavy-snow-night.toml [--families snow,plow]
        [--step 600] [--set snow.dispatch_cm=12] [--format nmea] [--quiet]

For tuning and tests: every message of the scenario goes through the same Processor
ingest runs (received at the simulator's send time, so ``lag_s`` says when a daily
upload arrived), the lines land in a private InfluxDB 1.x, and the engine replays the
period as the scheduler would have, scored against the scenario's ground truth. The
claim "ingest stores it" is tested elsewhere through the real broker; here the focus is
what the rules make of stored data.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from core.config import Config, InfluxConfig, load_config, load_registry
from core.influxql import InfluxQuery
from core.message import Message
from devtools.localstack import InfluxDB1
from ingest.pipeline import Processor
from ingest.service import limits_from
from rules import backtest
from rules.config import RulesConfig, with_settings
from rules.engine import ReplayResult
from rules.families import BY_NAME, FAMILIES
from rules.model import Family
from rules.scoring import Score
from rules.sources import RecordedSource
from simulators.formats import WireFormat
from simulators.run import prefixes_from
from simulators.scenario import load_scenario
from simulators.stream import Simulation
from simulators.truth import write_truth

REPO = Path(__file__).resolve().parent.parent
SAMPLE_CONFIG = REPO / "config" / "yukimizu.toml"
DAY_MS = 86_400_000


@dataclass
class Loaded:
    """A scenario stored in InfluxDB, with its truth and period."""

    database: str
    truth_dir: Path
    start_ms: int
    end_ms: int
    points: int
    dead: int


def load_scenario_into(
    influx: InfluxDB1,
    database: str,
    scenario_path: Path,
    cfg: Config,
    *,
    truth_dir: Path,
    fmt: WireFormat | None = None,
) -> Loaded:
    """Simulate, process as ingest would (received at send time), write to InfluxDB."""
    registry = load_registry(cfg)
    scenario = load_scenario(scenario_path)
    sim = Simulation(scenario, registry, fmt, prefixes_from(cfg))
    write_truth(sim.world, truth_dir, sim.format)
    influx.create_database(database)
    processor = Processor(registry, limits_from(cfg))
    batch: list[str] = []
    points = dead = 0
    for msg in sim.messages():
        res = processor.process(Message(msg.topic, msg.payload, msg.time))
        if res.reason is not None:
            dead += 1
        batch.extend(res.lines)
        if len(batch) >= 20_000:
            influx.write(batch, database)
            points += len(batch)
            batch = []
    if batch:
        influx.write(batch, database)
        points += len(batch)
    return Loaded(
        database,
        truth_dir,
        int(sim.start * 1000),
        int(sim.end * 1000),
        points,
        dead,
    )


def run_backtest(
    influx_url: str,
    loaded: Loaded,
    cfg: Config,
    rcfg: RulesConfig,
    *,
    families: Sequence[type[Family]],
    step_s: int,
) -> tuple[ReplayResult, list[Score]]:
    client = InfluxQuery(
        InfluxConfig(url=influx_url, database=loaded.database, create_database=False)
    )
    registry = load_registry(cfg)
    inputs: dict[str, tuple[str, ...]] = {}
    for fam in families:
        for m, fields in fam.inputs.items():
            inputs[m] = tuple(dict.fromkeys((*inputs.get(m, ()), *fields)))
    # Late uploads of the last day arrive after the scenario's end: run a day past it.
    end = loaded.end_ms + DAY_MS
    source = RecordedSource.load(client, inputs, loaded.start_ms - 1, end)
    result = backtest.run(
        registry,
        rcfg,
        source,
        backtest.Steps(loaded.start_ms, end, step_s * 1000),
        families=families,
        keep_points=True,
    )
    scores = backtest.score(loaded.truth_dir, result, [f.name for f in families])
    return result, scores


@contextmanager
def private_influx() -> Iterator[InfluxDB1]:
    with tempfile.TemporaryDirectory(prefix="yukimizu-rulelab-") as tmp:
        influx = InfluxDB1(Path(tmp) / "influxdb")
        influx.start()
        try:
            yield influx
        finally:
            influx.stop()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m devtools.rulelab", description=__doc__)
    p.add_argument("scenario", type=Path)
    p.add_argument("--families", help="comma-separated (default: all)")
    p.add_argument("--step", type=int, default=600, help="evaluation step in seconds")
    p.add_argument(
        "--set", action="append", default=[], help="rules param, e.g. snow.dispatch_cm=12"
    )
    p.add_argument("--format", default=None)
    p.add_argument("--quiet", action="store_true", help="scores only, no transitions")
    p.add_argument("--lang", choices=["ja", "en"], default="ja")
    args = p.parse_args(argv)
    cfg = load_config(SAMPLE_CONFIG, environ={})
    rcfg = with_settings(cfg, args.set)
    if args.families:
        names = [n.strip() for n in args.families.split(",")]
        unknown = [n for n in names if n not in BY_NAME]
        if unknown:
            print(f"unknown families {unknown}; known: {sorted(BY_NAME)}", file=sys.stderr)
            return 2
        fams: list[type[Family]] = [f for f in FAMILIES if f.name in names]
    else:
        fams = list(FAMILIES)
    with private_influx() as influx, tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        loaded = load_scenario_into(
            influx, "lab", args.scenario, cfg, truth_dir=Path(tmp) / "truth", fmt=args.format
        )
        t1 = time.perf_counter()
        result, scores = run_backtest(
            influx.url, loaded, cfg, rcfg, families=fams, step_s=args.step
        )
        print(
            f"{args.scenario.name}: {loaded.points:,} points ({loaded.dead} dead letters) "
            f"loaded in {t1 - t0:.1f} s; backtest {result.steps:,} steps of {args.step} s "
            f"in {result.seconds:.1f} s; {len(result.transitions)} transitions"
        )
        if not args.quiet:
            backtest.print_transitions(result, args.lang)
        backtest.print_scores(scores)
    return 0


if __name__ == "__main__":
    sys.exit(main())
