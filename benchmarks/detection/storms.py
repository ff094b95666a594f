"""Placeholder: the storms family of the detection battery (being written)."""

from __future__ import annotations

from benchmarks.detection.common import FamilyResult


def run(base_seed: int, *, quick: bool) -> FamilyResult:
    raise NotImplementedError("the storms battery is not written yet")
