"""Replay the scheduler over a past period: what would have fired, and when.

The period's data is loaded once (RecordedSource); then the engine runs its ordinary
cycle at every step, each step seeing only what had arrived by then (a daily upload is
invisible before it is sent). Nothing is sent and nothing is written. With a
simulator's ground truth (``--truth DIR``), every family scores itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rules.config import RulesConfig
from rules.engine import Engine
from rules.families import FAMILIES, SCORERS
from rules.model import Family, Point
from rules.scoring import HEADER, Score
from rules.sources import Source
from rules.state import MemoryState
from rules.transitions import Transition
from sensors.registry import Registry

log = logging.getLogger(__name__)


@dataclass
class BacktestResult:
    transitions: list[tuple[int, Transition]] = field(default_factory=list)
    points: list[Point] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0
    points_read: int = 0


def steps(start_ms: int, end_ms: int, step_ms: int) -> Iterable[int]:
    """Evaluation times aligned to the step, as the live scheduler aligns its cycles."""
    t = start_ms - start_ms % step_ms + step_ms
    while t <= end_ms:
        yield t
        t += step_ms


def run(
    registry: Registry,
    rcfg: RulesConfig,
    source: Source,
    *,
    start_ms: int,
    end_ms: int,
    step_ms: int,
    families: Sequence[type[Family]] | None = None,
    warmup_start_ms: int | None = None,
    keep_points: bool = False,
) -> BacktestResult:
    """Run the engine at every step in ``(start_ms, end_ms]``.

    ``warmup_start_ms``: data from there up to ``start_ms`` is processed in one first
    cycle at ``start_ms`` without emitting (as the live service does on its first
    start with ``rules.warmup_days``).
    """
    t0 = time.perf_counter()
    engine = Engine(registry, rcfg, MemoryState(), families or FAMILIES)
    res = BacktestResult()
    first = True
    for now in steps(start_ms, end_ms, step_ms):
        if first and warmup_start_ms is not None:
            cyc = engine.cycle(now, source, emit_after_ms=start_ms)
        else:
            cyc = engine.cycle(now, source, emit_after_ms=start_ms if first else None)
        first = False
        res.steps += 1
        res.points_read += cyc.points_read
        res.transitions.extend((now, t) for t in cyc.transitions)
        if keep_points:
            res.points.extend(cyc.points)
    res.seconds = time.perf_counter() - t0
    return res


def score(truth_dir: Path, result: BacktestResult, names: Iterable[str]) -> list[Score]:
    rows: list[Score] = []
    for name in names:
        scorer = SCORERS.get(name)
        if scorer is not None:
            rows.extend(scorer(truth_dir, result.transitions, result.points))
    return rows


def print_transitions(result: BacktestResult, lang: str = "ja") -> None:
    for detected, t in result.transitions:
        delay_min = (detected - int(t.event_time.timestamp() * 1000)) / 60_000
        print(f"{t.line('en' if lang == 'en' else 'ja')}  (seen +{delay_min:.0f} min)")


def print_scores(rows: list[Score]) -> None:
    print(HEADER)
    for r in rows:
        print(r.row())
