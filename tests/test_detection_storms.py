"""The quick storm battery on the held-out seed: the dispatch call's floor in CI.

Generated storm nights (docs/detection.md#storm-nights) go through ingest's processor
and the rules backtest and are scored against their truth (docs/detection.md#dispatch).
A change that loses recall, calls late or adds false calls fails here. The floors are
what this quick battery gave when the rules were last changed (16 of 16 crossings on
time, no false call; tuned on the tuning seeds 1–3, never this one), less one crossing.
The uncertainty warning's limits are likewise what it gave (0.11 flaps, 9 of 18 warned
nights with a blind spell over a deciding station), with margin.
They guard against regressions; the targets of issue 14 (97 % on time) are not met
yet (91.6 % on the full run's three held-out seeds) — docs/detection.md#results has
the full-run figures.
"""

from __future__ import annotations

from benchmarks.detection import storms
from benchmarks.detection.common import HELD_OUT_SEED

ON_TIME_FLOOR_PCT = 93.0  # crossings called within 1 h of the truth's crossing
FALSE_CEILING_PER_20 = 1.0  # false or duplicate calls per 20 storm nights
# snow.dispatch_uncertain (docs/detection.md#dispatch, Uncertain): it warns at most once
# per blind spell, and most warned nights had a blind spell over a deciding station
UNCERTAIN_FLAPS_CEILING = 0.5  # re-fires per warned night
UNCERTAIN_RELEVANT_FLOOR_PCT = 35.0


def test_quick_storm_battery_meets_the_floor() -> None:
    result = storms.run(HELD_OUT_SEED, quick=True)
    report = "\n".join(result.lines + result.notes)
    on_time = result.summary["dispatch_on_time_pct"]
    false = result.summary["dispatch_false_per_20"]
    assert result.scenarios == storms.QUICK_SCENARIOS
    assert any("true crossings" in line for line in result.lines), report
    # enough crossings for the percentage to mean something
    crossings = int(result.lines[0].split(",")[2].split()[0])
    assert crossings >= 15, report
    assert on_time >= ON_TIME_FLOOR_PCT, report
    assert false <= FALSE_CEILING_PER_20, report
    assert result.summary["uncertain_flaps_per_night"] <= UNCERTAIN_FLAPS_CEILING, report
    assert result.summary["uncertain_relevant_pct"] >= UNCERTAIN_RELEVANT_FLOOR_PCT, report
