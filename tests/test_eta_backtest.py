"""The plow ETA against the simulator's truth on held-out fleet nights (seeds the
benchmark and the tuning never saw): for segments 30 min or more ahead, the median
absolute error is at most 15 min and at least 80 % of the true plowing times fall
inside the band (docs/rules-plow.md#eta; the full battery is ``python -m
benchmarks.eta``)."""

from __future__ import annotations

import re
import statistics

import pytest

from benchmarks.eta import NightResult, backtest_world, generated_night, summary_line
from core.config import load_config, load_registry
from simulators.world import build_world
from tests.conftest import SAMPLE_CONFIG

HELD_OUT = (7001, 7002, 7003, 7004)  # the benchmark's own nights are 1000-1011


@pytest.fixture(scope="module")
def held_out() -> NightResult:
    registry = load_registry(load_config(SAMPLE_CONFIG))
    total = NightResult("held-out")
    for seed in HELD_OUT:
        total.add(
            backtest_world(f"night {seed}", build_world(generated_night(seed), registry), registry)
        )
    return total


def test_eta_meets_the_floors_on_held_out_nights(held_out: NightResult) -> None:
    assert held_out.n >= 40, "too few segments 30 min ahead to judge"
    assert statistics.median(held_out.errors_s) <= 15 * 60
    assert held_out.inside / held_out.n >= 0.80
    # a band is not a day: it stays under an hour for the typical segment
    assert statistics.median(held_out.widths_s) <= 60 * 60


def test_summary_line_format(held_out: NightResult) -> None:
    """The benchmark's last line, exactly as the issue asks."""
    line = summary_line(held_out)
    m = re.fullmatch(
        r"eta: (\d+\.\d) min median error, (\d+)% inside band \((\d+) segments ≥ 30 min ahead\)",
        line,
    )
    assert m, line
    assert int(m[3]) == held_out.n
    assert float(m[1]) == pytest.approx(statistics.median(held_out.errors_s) / 60, abs=0.05)
