"""The quick storm battery on the held-out seed: the dispatch call's floor in CI.

Generated storm nights (docs/detection.md#storm-nights) go through ingest's processor
and the rules backtest and are scored against their truth (docs/detection.md#dispatch).
A change that loses recall, calls late or adds false calls fails here. The floors are
what this quick battery gave when the rules were last changed (16 of 16 crossings on
time, no false call; tuned on the tuning seeds 1–3, never this one), less one crossing.
The uncertainty warning's limits are likewise what it gave (0.11 flaps, 9 of 18 warned
nights with a blind spell over a deciding station), with margin.
They guard against regressions; the targets of issue 14 (97 % on time) are not met
yet (93.0 % on the full run's three held-out seeds) — docs/detection.md#results has
the full-run figures.
"""

from __future__ import annotations

import json
import re
import shutil
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from benchmarks.detection import storms
from benchmarks.detection.common import HELD_OUT_SEED
from core.config import load_config, load_registry
from rules.model import HOUR_MS
from rules.params import SnowParams
from simulators.scenario import FaultEvent
from tests.snow_support import dispatch_call

ON_TIME_FLOOR_PCT = 93.0  # crossings called within 1 h of the truth's crossing
FALSE_CEILING_PER_20 = 1.0  # false or duplicate calls per 20 storm nights
# a call's station figures within max(2 cm, 20 %) of the truth for the window stated
# (docs/detection.md#dispatch, Figures): 88.9 % on the quick run in round 8
FIGURES_FLOOR_PCT = 80.0
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
    assert result.summary["dispatch_figures_pct"] >= FIGURES_FLOOR_PCT, report
    assert result.summary["uncertain_flaps_per_night"] <= UNCERTAIN_FLAPS_CEILING, report
    assert result.summary["uncertain_relevant_pct"] >= UNCERTAIN_RELEVANT_FLOOR_PCT, report


T0 = 1_768_400_000_000 - 1_768_400_000_000 % HOUR_MS  # 2026-01-14, on the hour
DAY = 24 * HOUR_MS
JST = timezone(timedelta(hours=9))


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def test_crossings_not_on_time_are_told_apart_plows_out_marginal_or_clear(
    tmp_path: Path,
) -> None:
    """Three crossings on ST01 and ST02, none called: a storm that goes on to 14 cm
    (clear), one that ends at 10.2 cm (marginal: within the figures' 2 cm of the limit),
    and one that crosses while the truth's plows are out. All three are missed; the
    breakdown says which is which, and a call on time counts for the clear one only
    (docs/detection.md#dispatch, Under way and marginal)."""
    rows = ["hour_start,station,new_snow_cm"]
    # (first hour, cm per hour, hours)
    for start, rate, n in ((0, 2.0, 7), (2 * DAY, 1.02, 10), (4 * DAY, 2.0, 8)):
        for h in range(n):
            rows += [f"{_iso(T0 + start + h * HOUR_MS)},{s},{rate}" for s in ("ST01", "ST02")]
    (tmp_path / "snow_hourly.csv").write_text("\n".join(rows) + "\n")
    out, back = T0 + 4 * DAY + 270 * 60_000, T0 + 4 * DAY + 330 * 60_000  # 04:30–05:30
    trip = {"plow": "P1", "dispatched_at": _iso(out), "leave_depot": _iso(out)}
    (tmp_path / "truth.json").write_text(
        json.dumps({"trips": [trip | {"back_at_depot": _iso(back)}]})
    )
    p = SnowParams()

    t = storms.score_scenario(tmp_path, [], (), p, "#0")
    assert (t.crossings, t.missed, t.on_time) == (3, 3, 0), t.cases
    assert (t.plows_out, t.marginal, t.clear, t.clear_on_time) == (1, 1, 1, 0), t.cases
    assert any("(plows out)" in c for c in t.cases), t.cases
    assert any("marginal: 2nd station peaked 10.2 cm" in c for c in t.cases), t.cases

    clear_call = dispatch_call(T0 + 5 * HOUR_MS)  # at the clear crossing
    t = storms.score_scenario(tmp_path, [clear_call], (), p, "#0")
    assert (t.on_time, t.missed, t.clear_on_time, t.plows_out, t.marginal) == (1, 2, 1, 1, 1)


def test_a_call_that_counts_from_a_later_plowing_is_about_the_crossing_after_it(
    tmp_path: Path,
) -> None:
    """4 cm/h on ST01 and ST02: the threshold is crossed at 03:00, the plows go out at
    03:10 and are back at 03:40, and the snow since crosses it again at 06:00. A call at
    05:30 that counts from the plowing (「除雪 03:40 終了から」) is about the second
    crossing, on time, not 2.5 h late for the first (docs/detection.md#dispatch)."""
    rows = ["hour_start,station,new_snow_cm"]
    rows += [f"{_iso(T0 + h * HOUR_MS)},{s},4.0" for h in range(8) for s in ("ST01", "ST02")]
    (tmp_path / "snow_hourly.csv").write_text("\n".join(rows) + "\n")
    out, back = T0 + 190 * 60_000, T0 + 220 * 60_000  # 03:10–03:40
    trip = {"plow": "P1", "dispatched_at": _iso(out), "leave_depot": _iso(out)}
    (tmp_path / "truth.json").write_text(
        json.dumps({"trips": [trip | {"back_at_depot": _iso(back)}]})
    )
    p = SnowParams()
    call = dispatch_call(T0 + 330 * 60_000, since_ms=T0 + 3 * HOUR_MS)

    t = storms.score_scenario(tmp_path, [call], (), p, "#0")
    assert t.crossings == 2, t.cases
    assert (t.on_time, t.late, t.missed) == (1, 0, 1), t.cases
    assert t.delays_h == [-0.5], t.cases
    first = datetime.fromtimestamp((T0 + 3 * HOUR_MS) / 1000, JST).strftime("%m-%d %H:%M")
    assert t.cases == [f"#0: missed crossing {first}"], t.cases


def test_a_town_of_lasers_sees_the_same_storms_without_the_ultrasonic_echo_loss() -> None:
    """``--lasers`` (docs/detection.md#results) measures what replacing the ultrasonic
    sensors would give: the same storms, plowings and faults, every station a laser,
    and none of the poor-echo spells that only ultrasound has in snowfall."""
    registry = load_registry(load_config(storms.SAMPLE_CONFIG, environ={}))
    town = storms.as_lasers(registry, storms.laser_ids(registry, "all"))
    assert set(town.stations) == set(registry.stations)
    assert {s.sensor_type for s in town.stations.values()} == {"laser"}
    assert {s.sensor_type for s in registry.stations.values()} == {"laser", "ultrasonic"}
    dropped = 0
    for i in range(20):
        g = storms.generate(1, i, registry)
        lz = storms.generate(1, i, registry, lasers=set(registry.stations))
        assert lz.nights == g.nights
        poor = [e for e in g.scenario.events if getattr(e, "fault", None) == "poor_quality"]
        kept = [e for e in g.scenario.events if e not in poor]
        assert list(lz.scenario.events) == kept
        assert len(lz.blind) == len(g.blind) - len(poor)
        dropped += len(poor)
    assert dropped > 0  # the scenarios drawn had poor-echo spells to drop


def test_lasers_at_some_stations_change_only_those() -> None:
    """``--lasers ST02,ST05``: those two are lasers, on the same storms, without their
    poor-echo spells; the other ultrasonic stations keep theirs. An unknown id is an
    error naming it."""
    registry = load_registry(load_config(storms.SAMPLE_CONFIG, environ={}))
    ids = storms.laser_ids(registry, "ST02, ST05")
    assert ids == {"ST02", "ST05"}
    town = storms.as_lasers(registry, ids)
    assert {k for k, s in town.stations.items() if s.sensor_type == "laser"} == {
        k for k, s in registry.stations.items() if s.sensor_type == "laser"
    } | ids
    kept_elsewhere = 0
    for i in range(20):
        g = storms.generate(1, i, registry)
        lz = storms.generate(1, i, registry, lasers=ids)
        assert lz.nights == g.nights
        poor = [
            e for e in g.scenario.events if isinstance(e, FaultEvent) and e.fault == "poor_quality"
        ]
        gone = [e for e in poor if e.device in ids]
        assert list(lz.scenario.events) == [e for e in g.scenario.events if e not in gone]
        kept_elsewhere += len(poor) - len(gone)
    assert kept_elsewhere > 0
    with pytest.raises(storms.DeploymentError, match="ST99"):
        storms.laser_ids(registry, "ST02,ST99")


def test_a_towns_own_config_is_measured_and_said_to_be(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--config``: the battery on a town's own stations (here every ultrasonic one made
    a laser in its stations.csv), labelled a deployment's figures."""
    town = tmp_path / "town"
    shutil.copytree(storms.SAMPLE_CONFIG.parent, town)
    csv = town / "stations.csv"
    text = csv.read_text(encoding="utf-8")
    assert ",ultrasonic," in text
    csv.write_text(text.replace(",ultrasonic,", ",laser,"), encoding="utf-8")
    toml = town / storms.SAMPLE_CONFIG.name
    assert storms.main(["--quick", "--config", str(toml)]) == 0
    out = capsys.readouterr().out
    assert f"the stations, plows and rules of {toml}" in out, out
    assert "true crossings" in out and "snow.dispatch  recall" in out, out
    # lasers measure within ±1 cm: the call's figures are right (88.9 % on the sample
    # town's quick run, docs/detection.md#results)
    figures = re.search(r"figures within max\(2 cm, 20 %\): \d+/\d+ = ([\d.]+)%", out)
    assert figures and float(figures[1]) >= 95.0, out
    # a config that does not load, or a station the town does not have: said, exit 2
    assert storms.main(["--quick", "--config", str(town / "nope.toml")]) == 2
    assert "nope.toml" in capsys.readouterr().err
    assert storms.main(["--quick", "--config", str(toml), "--lasers", "ST99"]) == 2
    assert "no station ST99" in capsys.readouterr().err
