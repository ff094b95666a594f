"""One generated scenario through ingest's processor and the rules backtest, in memory.

As ``devtools.rulelab`` does, every simulated message goes through the same
``Processor`` ingest runs (received at its send time); the line protocol it writes is
read back into the frames the engine's ``RecordedSource`` hands out, instead of going
through an InfluxDB. That keeps a scenario of a day or two under a second, so the
battery can run hundreds of them. The backtest and the truth files are the ordinary
ones (``rules.backtest``, ``simulators.truth``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from core.config import Config
from core.message import Message
from ingest.pipeline import Processor
from ingest.service import limits_from
from rules import backtest
from rules.config import RulesConfig
from rules.engine import ReplayResult
from rules.model import Family
from rules.sources import RecordedSource, normalise
from sensors.registry import Registry
from simulators.run import prefixes_from
from simulators.scenario import Scenario
from simulators.stream import Simulation
from simulators.truth import write_truth

__all__ = ["Ran", "lines_to_frames", "run_scenario"]

# Line protocol: split on spaces and commas that are not escaped or inside quotes.
_SPLIT_SPACE = re.compile(r'(?<!\\) (?=(?:[^"]*"[^"]*")*[^"]*$)')
_SPLIT_COMMA = re.compile(r'(?<!\\),(?=(?:[^"]*"[^"]*")*[^"]*$)')


def _unescape(s: str) -> str:
    return s.replace("\\ ", " ").replace("\\,", ",").replace("\\=", "=")


def _field(v: str) -> object:
    if v.startswith('"'):
        return v[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    if v in ("true", "false"):
        return v == "true"
    if v.endswith("i"):
        return int(v[:-1])
    return float(v)


def lines_to_frames(
    lines: Sequence[str], inputs: dict[str, tuple[str, ...]]
) -> dict[str, pd.DataFrame]:
    """Parse line protocol (ms timestamps, as ingest writes) into the engine's frames."""
    rows: dict[str, list[dict[str, object]]] = {m: [] for m in inputs}
    for line in lines:
        key, fields, ts = _SPLIT_SPACE.split(line)
        parts = _SPLIT_COMMA.split(key)
        measurement = _unescape(parts[0])
        if measurement not in rows:
            continue
        row: dict[str, object] = {}
        for p in parts[1:]:
            k, v = p.split("=", 1)
            row[_unescape(k)] = _unescape(v)
        for p in _SPLIT_COMMA.split(fields):
            k, v = p.split("=", 1)
            row[_unescape(k)] = _field(v)
        row["time"] = int(ts)
        rows[measurement].append(row)
    return {m: normalise(pd.DataFrame(r), inputs[m]) for m, r in rows.items()}


@dataclass
class Ran:
    """A scenario after the backtest: what fired, and where its truth lies."""

    result: ReplayResult
    truth_dir: Path
    start_ms: int
    end_ms: int
    dead_letters: int


def run_scenario(
    scenario: Scenario,
    registry: Registry,
    *,
    cfg: Config,
    rcfg: RulesConfig,
    families: Sequence[type[Family]],
    truth_dir: Path,
    step_s: int = 600,
) -> Ran:
    """Simulate ``scenario``, process every message as ingest would, backtest."""
    sim = Simulation(scenario, registry, None, prefixes_from(cfg))
    write_truth(sim.world, truth_dir, sim.format)
    processor = Processor(registry, limits_from(cfg))
    lines: list[str] = []
    dead = 0
    for msg in sim.messages():
        res = processor.process(Message(msg.topic, msg.payload, msg.time))
        if res.reason is not None:
            dead += 1
        lines.extend(res.lines)
    inputs: dict[str, tuple[str, ...]] = {}
    for fam in families:
        for m, fields in fam.inputs.items():
            inputs[m] = tuple(dict.fromkeys((*inputs.get(m, ()), *fields)))
    source = RecordedSource(lines_to_frames(lines, inputs))
    start_ms, end_ms = int(sim.start * 1000), int(sim.end * 1000)
    result = backtest.run(
        registry,
        rcfg,
        source,
        backtest.Steps(start_ms, end_ms, step_s * 1000),
        families=families,
    )
    return Ran(result, truth_dir, start_ms, end_ms, dead)
