"""The households half of the detection battery, quick, on the held-out seed: the floors
a change must not lose (docs/rules-water.md#battery-scoring).

The battery runs every generated message through ingest's Processor and the water rules'
backtest; no timing is asserted here (the elapsed time is the benchmark's business).
"""

from __future__ import annotations

import pytest

from benchmarks.detection import households
from benchmarks.detection.common import HELD_OUT_SEED, FamilyResult


@pytest.fixture(scope="module")
def quick() -> FamilyResult:
    return households.run(HELD_OUT_SEED, quick=True)


def test_the_quick_battery_is_big_enough(quick: FamilyResult) -> None:
    assert quick.scenarios == households.SCENARIOS_QUICK
    header = quick.lines[0]
    assert "160 home-months" in header and "0 dead letters" in header


def test_every_leak_of_12_5_l_per_h_is_found_in_time(quick: FamilyResult) -> None:
    assert quick.summary["leak_recall_pct"] == 100.0, quick.notes
    assert quick.summary["leak_false_per_30"] <= 1.0


def test_every_24_h_silence_is_found_while_still_silent(quick: FamilyResult) -> None:
    assert quick.summary["watch_recall_pct"] == 100.0, quick.notes
    assert quick.summary["watch_false_per_30"] <= 1.0


def test_away_or_stopped(quick: FamilyResult) -> None:
    """Unregistered absences and stuck registers get the no-use notice, which names both
    readings; registered absences get nothing."""
    for key in (
        "stuck_recall_pct",
        "away_notice_pct",
        "away_names_both_pct",
        "away_registered_quiet_pct",
    ):
        assert quick.summary[key] == 100.0, (key, quick.lines)
