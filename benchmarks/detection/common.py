"""What every family of the detection battery hands back, and how seeds are split.

Seeds: a family's scenario ``i`` is generated from ``(base_seed, family, i)``. The
rules' parameters were tuned on ``TUNING_SEED`` only; the figures reported (and the
floors checked in CI) come from ``HELD_OUT_SEED``, which nobody tuned on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

TUNING_SEED = 1
HELD_OUT_SEED = 20261206


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
