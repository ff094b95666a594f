"""What every family of the detection battery hands back, and how seeds are split.

Seeds: a family's scenario ``i`` is generated from ``(base_seed, family, i)``. The
rules' parameters were tuned on ``TUNING_SEED`` only; the figures reported (and the
floors checked in CI) come from ``HELD_OUT_SEED``, which nobody tuned on.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

TUNING_SEED = 1
HELD_OUT_SEED = 20261206
# The storms family's full run reports on three held-out seeds: one seed's ~95
# crossings measure the dispatch call's on-time share to ±5 points, too coarse for a
# 97 % target (docs/detection.md#seeds). The two added seeds were fixed before any run.
HELD_OUT_STORM_SEEDS = (HELD_OUT_SEED, 20261207, 20261208)


@dataclass(frozen=True)
class FamilyResult:
    """One family's score: the lines to print (per rule: recall, precision, delay
    distribution), the headline figures for the last line, and how many scenarios."""

    lines: list[str]
    summary: dict[str, float]
    scenarios: int
    notes: list[str] = field(default_factory=list)


def scenario_seed(base_seed: int, family: str, index: int) -> int:
    """A stable seed per (base, family, index), independent of the other families."""
    h = 0
    for ch in family:
        h = (h * 131 + ord(ch)) % 1_000_003
    return (base_seed * 1_000_003 + h) * 100_003 + index


def add_seed_options(parser: argparse.ArgumentParser) -> None:
    """``--quick``, ``--seed S`` and ``--tune``, as every entry point of the battery takes."""
    parser.add_argument("--quick", action="store_true", help="the CI-sized battery")
    parser.add_argument("--seed", type=int, help=f"base seed (default {HELD_OUT_SEED}, held out)")
    parser.add_argument("--tune", action="store_true", help=f"the tuning seed ({TUNING_SEED})")


def base_seed(args: argparse.Namespace) -> int:
    """The base seed the options ask for: ``--seed``, else tuning or held-out."""
    if args.seed is not None:
        return int(args.seed)
    return TUNING_SEED if args.tune else HELD_OUT_SEED


def storm_seeds(args: argparse.Namespace) -> tuple[int, ...]:
    """The storms family's base seeds: ``--seed`` or ``--tune`` alone, the quick run the
    held-out seed, the full run the held-out storm seeds."""
    if args.seed is not None or args.tune or args.quick:
        return (base_seed(args),)
    return HELD_OUT_STORM_SEEDS


def family_main(
    name: str,
    run: Callable[..., FamilyResult],
    argv: Sequence[str] | None = None,
    *,
    seeds: Callable[[argparse.Namespace], tuple[int, ...]] | None = None,
    options: Sequence[tuple[str, dict[str, Any]]] = (),
) -> int:
    """One family alone: ``python -m benchmarks.detection.<name> [--quick] [--tune]``;
    ``seeds``: a family that runs on several base seeds (storms), else one;
    ``options``: the family's own (flag, ``argparse`` keywords), passed to ``run`` by
    name (``--station-s`` → ``station_s``)."""
    parser = argparse.ArgumentParser(description=f"the {name} family of the detection battery")
    add_seed_options(parser)
    own = [parser.add_argument(flag, **kw).dest for flag, kw in options]
    args = parser.parse_args(argv)
    base: int | tuple[int, ...] = seeds(args) if seeds else base_seed(args)
    t0 = time.monotonic()
    result = run(base, quick=args.quick, **{k: getattr(args, k) for k in own})
    label = base if isinstance(base, int) else ", ".join(str(s) for s in base)
    print(f"{name} battery: base seed {label}, {'quick' if args.quick else 'full'}")
    for line in result.lines + result.notes:
        print(line)
    print(f"elapsed {time.monotonic() - t0:.0f} s; summary {result.summary}")
    return 0
