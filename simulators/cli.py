"""``yukimizu simulate``: run a scenario to MQTT or to a file.

Wired into the main command line with :func:`add_parser`; the MQTT settings, topic
prefix and device registry come from the config (``-c``, ``$YUKIMIZU_CONFIG`` or
``config/yukimizu.toml``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path

from core.config import Config, load_registry, resolve_config
from core.publish import PublishError
from sensors.registry import RegistryError
from simulators.formats import WIRE_FORMATS, WireFormat
from simulators.run import Progress, prefixes_from, publish, warn_future, write_jsonl
from simulators.scenario import ScenarioError, load_scenario
from simulators.stream import Simulation
from simulators.truth import write_truth

__all__ = ["add_parser", "cmd_simulate"]

log = logging.getLogger(__name__)

EPILOG = """\
examples:
  yukimizu simulate scenarios/heavy-snow-night.toml --out run.jsonl --truth truth/
  yukimizu simulate scenarios/winter-season.toml --as-fast-as-possible
  yukimizu simulate scenarios/storm-morning-fleet.toml --format chirpstack
  yukimizu simulate scenarios/quiet-winter-day.toml --speed 1 --start now

Scenario times are device times. Ingest rejects readings more than max_future_s
(300 s) ahead of its clock: a scenario in the future only works with --speed 1
--start now (real-time pacing from the current time).
"""


def _config(args: argparse.Namespace) -> Config:
    return resolve_config(getattr(args, "config", None))


def _start(text: str | None) -> datetime | None:
    if text is None:
        return None
    if text == "now":
        now = datetime.now(UTC)
        return now.replace(second=0, microsecond=0)
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--start {text!r}: not ISO 8601 or 'now'") from None
    if dt.tzinfo is None:
        raise argparse.ArgumentTypeError(f"--start {text!r}: needs a UTC offset, e.g. +09:00")
    return dt.replace(second=0, microsecond=0)


def _speed(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("--speed must be greater than 0")
    return value


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register the ``simulate`` subcommand."""
    p = sub.add_parser(
        "simulate",
        help="publish a simulated scenario (stations, meters, plows) over MQTT or to a file",
        description="Run a scenario file: publish every message over MQTT with QoS 1 "
        "(flow-controlled, nothing dropped) or write them to a JSON-lines file.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("scenario", type=Path, help="scenario TOML file (see scenarios/)")
    pace = p.add_mutually_exclusive_group()
    pace.add_argument(
        "--speed",
        type=_speed,
        metavar="X",
        help="pace messages at X scenario seconds per second (1 = real time)",
    )
    pace.add_argument(
        "--as-fast-as-possible",
        action="store_true",
        help="no pacing: as fast as the broker acknowledges (the default)",
    )
    p.add_argument(
        "--format",
        choices=WIRE_FORMATS,
        help="wire format (default: the scenario's, usually native); devices it does not "
        "fit publish native JSON",
    )
    p.add_argument("--out", type=Path, metavar="FILE", help="write JSON lines instead of MQTT")
    p.add_argument("--truth", type=Path, metavar="DIR", help="write the ground truth here")
    p.add_argument(
        "--start", metavar="TIME", help="move the scenario to start at TIME (ISO 8601) or 'now'"
    )
    p.add_argument("--seed", type=int, help="override the scenario's seed")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    # SUPPRESS: when wired under the main parser, do not overwrite its -c value.
    p.add_argument("-c", "--config", type=Path, default=argparse.SUPPRESS, help="TOML config")
    p.set_defaults(func=cmd_simulate)


def cmd_simulate(args: argparse.Namespace) -> int:
    cfg = _config(args)
    try:
        start = _start(args.start)
    except argparse.ArgumentTypeError as exc:
        print(f"yukimizu simulate: {exc}", file=sys.stderr)
        return 2
    speed: float | None = None if args.as_fast_as_possible else args.speed
    fmt: WireFormat | None = args.format
    try:
        registry = load_registry(cfg)
        scenario = load_scenario(args.scenario)
        if start is not None:
            scenario = scenario.shifted_to(start)
        if args.seed is not None:
            scenario = scenario.model_copy(update={"seed": args.seed})
        sim = Simulation(scenario, registry, fmt, prefixes_from(cfg))
    except (ScenarioError, RegistryError) as exc:
        print(f"yukimizu simulate: {exc}", file=sys.stderr)
        return 2
    for note in sim.notes:
        print(f"note: {note}", file=sys.stderr)
    if args.truth is not None:
        files = write_truth(sim.world, args.truth, sim.format)
        print(f"ground truth: {len(files)} files in {args.truth}", file=sys.stderr)
    progress = None if args.quiet else Progress(f"simulate {scenario.name}", sim.start, sim.end)
    if args.out is not None:
        summary = write_jsonl(sim, args.out, speed=speed, progress=progress)
    else:
        warning = warn_future(sim, cfg, speed)
        if warning:
            print(f"warning: {warning}", file=sys.stderr)
        try:
            summary = publish(sim, cfg, speed=speed, progress=progress)
        except PublishError as exc:
            print(f"yukimizu simulate: {exc}", file=sys.stderr)
            return 1
    print(summary.describe())
    return 0
