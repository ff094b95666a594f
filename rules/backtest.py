"""Replay the scheduler over a past period: what would have fired, and when.

The period's data is read once, in chunks as the replay advances (RecordedSource.load);
then the engine runs its ordinary cycle at every step, each step seeing only what had
arrived by then (a daily upload is invisible before it is sent). Nothing is sent and
nothing is written. With a simulator's ground truth (``--truth DIR``), every family
scores itself.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rules.config import RulesConfig
from rules.engine import Engine, ReplayResult
from rules.families import FAMILIES, SCORERS
from rules.model import Family
from rules.scoring import HEADER, Score
from rules.shards import Shard
from rules.sources import Source
from rules.state import MemoryState
from sensors.registry import Registry

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Steps:
    """The steps of a backtest: every ``step_ms`` in ``(start_ms, end_ms]``; from
    ``warmup_start_ms`` (if given) the steps before ``start_ms`` run too, but emit
    nothing — as the live service's first start catches up on ``rules.warmup_days``
    of history."""

    start_ms: int
    end_ms: int
    step_ms: int
    warmup_start_ms: int | None = None


def run(
    registry: Registry,
    rcfg: RulesConfig,
    source: Source,
    steps: Steps,
    *,
    families: Sequence[type[Family]] | None = None,
    keep_points: bool = False,
    shard: Shard | None = None,
) -> ReplayResult:
    """Run the engine at every step of ``steps`` (families: all by default)."""
    engine = Engine(registry, rcfg, MemoryState(), families or FAMILIES, shard)
    warm = steps.warmup_start_ms
    return engine.replay(
        source,
        start_ms=steps.start_ms if warm is None else warm,
        end_ms=steps.end_ms,
        step_ms=steps.step_ms,
        emit_after_ms=steps.start_ms,
        keep_points=keep_points,
    )


def score(truth_dir: Path, result: ReplayResult, names: Iterable[str]) -> list[Score]:
    rows: list[Score] = []
    for name in names:
        scorer = SCORERS.get(name)
        if scorer is not None:
            rows.extend(scorer(truth_dir, result.transitions, result.points))
    return rows


def print_transitions(result: ReplayResult, lang: str = "ja") -> None:
    for detected, t in result.transitions:
        delay_min = (detected - int(t.event_time.timestamp() * 1000)) / 60_000
        print(f"{t.line('en' if lang == 'en' else 'ja')}  (seen +{delay_min:.0f} min)")


def print_scores(rows: list[Score]) -> None:
    print(HEADER)
    for r in rows:
        print(r.row())
