"""The water family with hand-built frames: each rule fires, stays quiet and resolves,
and late batches carry the right event time (docs/rules-water.md)."""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from datetime import datetime

import numpy as np
import pandas as pd
import pytest

from rules.config import RulesConfig
from rules.model import DAY_MS, HOUR_MS, JST, Finding, Output, Shared
from rules.schema import WATER_HOURLY, WATER_NIGHT, WATER_STATE
from rules.water import FLAGS, WaterFamily
from sensors.registry import Meter, Registry

# 2026-02-02 00:00 JST
T0 = int(datetime(2026, 2, 2, tzinfo=JST).timestamp() * 1000)


def meter(mid: str, *, watched: bool = False, digits: int = 8, q3: float = 2.5) -> Meter:
    return Meter(mid, "上町", 38.38, 140.2, 13, q3, digits, "L", watched, None)


def registry(*meters: Meter) -> Registry:
    return Registry({}, {m.id: m for m in meters}, {}, {})


def family(*meters: Meter, **cfg: object) -> WaterFamily:
    reg = registry(*(meters or (meter("M1"), meter("W1", watched=True))))
    return WaterFamily(reg, RulesConfig.model_validate(cfg), Shared())


def frame(
    device: str,
    t0: int,
    registers: Sequence[float],
    *,
    arrival: int | None = None,
    flags: dict[str, Sequence[bool]] | None = None,
) -> pd.DataFrame:
    n = len(registers)
    times = [t0 + i * HOUR_MS for i in range(n)]
    df = pd.DataFrame(
        {
            "time": np.array(times, dtype=np.int64),
            "arrival": np.array(
                [arrival if arrival is not None else t + 5000 for t in times], dtype=np.int64
            ),
            "device": [device] * n,
            "register_l": np.array(registers, dtype=float),
            "flow_lph": np.full(n, np.nan),
        }
    )
    for f in FLAGS:
        df[f"alarm_{f}"] = list((flags or {}).get(f, [False] * n))
    return df


def cumulative(start: float, uses: Sequence[float]) -> list[float]:
    out = [start]
    for u in uses:
        out.append(out[-1] + u)
    return out


def household_day(leak: float = 0.0) -> list[float]:
    """24 hourly uses from 00:00 JST: dry nights, morning and evening use."""
    base = [0, 0, 0, 0, 0, 0, 20, 60, 15, 0, 10, 25, 30, 0, 0, 5, 0, 40, 80, 120, 30, 10, 0, 0]
    return [b + leak for b in base]


def run_hourly(fam: WaterFamily, frames: Sequence[pd.DataFrame]) -> Output:
    """Feed row by row as the live scheduler would (one cycle per hour), ticking."""
    out = Output()
    for df in frames:
        for i in range(len(df)):
            row = df.iloc[i : i + 1].reset_index(drop=True)
            fam.feed("water_meter", row, out)
            fam.tick(int(row["arrival"].iloc[0]) + 60_000, out)
    return out


def of(out: Output, rule: str) -> list[Finding]:
    return [f for f in out.findings if f.rule == rule]


# ------------------------------------------------------------------------- leak


def test_leak_fires_after_24_leaking_hours_and_resolves_after_a_zero_hour() -> None:
    fam = family()
    # two ordinary days, then a 15 L/h leak from day 3 10:00 JST for 40 h, then dry again
    uses = household_day() * 2
    leak = [15.0 if 10 <= h < 50 else 0.0 for h in range(72)]
    uses += [u + lk for u, lk in zip(household_day() * 3, leak, strict=True)]
    out = run_hourly(fam, [frame("M1", T0, cumulative(1000.0, uses))])
    leaks = of(out, "water.leak_continuous")
    assert [f.active for f in leaks] == [True, False]
    leak_start = T0 + 2 * DAY_MS + 10 * HOUR_MS
    # the 24th leaking hour ends 24 h after the leak started
    assert leaks[0].at_ms == leak_start + 24 * HOUR_MS
    assert leaks[0].severity == "info"  # 15 L/h < 50 L/h: the morning digest
    assert "15.0 L/h" in leaks[0].message
    # the first hour of zero use after the leak stopped (50 h after day 3 00:00 → 02:00)
    assert leaks[1].at_ms > leak_start + 40 * HOUR_MS
    assert not of(out, "water.burst") and not of(out, "water.reverse")


def test_district_and_meter_overrides_set_each_meters_leak_window() -> None:
    """[rules.overrides]: the district's, then the meter's own (docs/rules.md#configuration)."""
    m1 = Meter("M1", "中町", 38.38, 140.2, 13, 2.5, 8, "L", False, None)
    m2 = Meter("M2", "上町", 38.38, 140.2, 13, 2.5, 8, "L", False, None)
    m3 = Meter("M3", "中町", 38.38, 140.2, 13, 2.5, 8, "L", False, None)
    fam = family(
        m1,
        m2,
        m3,
        overrides={
            "district": {"中町": {"water": {"leak_window_h": 12}}},
            "meter": {"M3": {"water": {"leak_window_h": 30}}},
        },
    )
    uses = household_day() * 2
    leak = [15.0 if 10 <= h < 50 else 0.0 for h in range(72)]
    uses += [u + lk for u, lk in zip(household_day() * 3, leak, strict=True)]
    regs = cumulative(1000.0, uses)
    out = run_hourly(fam, [frame(m, T0, regs) for m in ("M1", "M2", "M3")])
    leak_start = T0 + 2 * DAY_MS + 10 * HOUR_MS
    fired = {f.subject: f.at_ms for f in of(out, "water.leak_continuous") if f.active}
    assert fired == {
        "M1": leak_start + 12 * HOUR_MS,
        "M2": leak_start + 24 * HOUR_MS,
        "M3": leak_start + 30 * HOUR_MS,
    }


def test_no_leak_for_an_ordinary_household() -> None:
    fam = family()
    out = run_hourly(fam, [frame("M1", T0, cumulative(5000.0, household_day() * 10))])
    assert not [f for f in out.findings if f.active]
    hourly = [p for p in out.points if p.measurement == WATER_HOURLY]
    assert len(hourly) == 240
    assert hourly[7].fields["use_l"] == 60.0 and hourly[7].time_ms == T0 + 7 * HOUR_MS


def test_large_leak_is_a_warning() -> None:
    fam = family()
    uses = household_day() + household_day(leak=80.0) * 2
    out = run_hourly(fam, [frame("M1", T0, cumulative(0.0, uses))])
    (f,) = of(out, "water.leak_continuous")
    assert f.active and f.severity == "warning"


def test_late_daily_batch_gives_the_event_time_of_the_deciding_hour() -> None:
    fam = family()
    uses = household_day() + [u + 20.0 for u in household_day()] * 2
    regs = cumulative(0.0, uses)  # 73 readings: T0 … T0 + 72 h
    out = Output()
    # uploads of the day's values at 02:10 JST the next day (arrival ≫ time)
    for day in range(3):
        lo, hi = day * 24, day * 24 + 24
        up = T0 + (day + 1) * DAY_MS + 2 * HOUR_MS + 10 * 60_000
        fam.feed("water_meter", frame("M1", T0 + lo * HOUR_MS, regs[lo:hi], arrival=up), out)
        fam.tick(up, out)
    (f,) = of(out, "water.leak_continuous")
    # leaking from day 2 00:00; 24 leaking hours end at day 3 00:00, known at day 4 02:10
    assert f.active and f.at_ms == T0 + 2 * DAY_MS
    assert fam.s["daily"][fam.slot["M1"]] == 1.0


def test_a_meter_swap_during_a_leak_neither_counts_nor_restarts_its_24_hours() -> None:
    """The battery's missed leak (seed 5, M013): a 36 L/h leak from 07:37 and a meter
    swap at 10:30. The swap hour's use is unknown; it broke the run, the 24 h restarted
    after it and the call came 27.5 h after the leak began (deadline 26 h)."""
    fam = family()
    leak_from = 2 * 24 + 7  # day 3, the hour from 07:00 on
    uses = [u + (36.0 if h >= leak_from else 0.0) for h, u in enumerate(household_day() * 5)]
    swap_at = leak_from + 4  # the reading at 11:00 is the new meter's (swapped at 10:30)
    regs = cumulative(867_000.0, uses)
    new_meter = cumulative(51.0, uses[swap_at:])
    regs = regs[:swap_at] + new_meter
    out = run_hourly(fam, [frame("M1", T0, regs)])
    assert [f.active for f in of(out, "water.swap")] == [True, False]
    (leak,) = of(out, "water.leak_continuous")
    leak_start = T0 + leak_from * HOUR_MS
    # the run began with the household's 06:00–07:00 use; 24 measured hours and the
    # unmeasured swap hour later, i.e. 25 h after 06:00
    run_start = leak_start - HOUR_MS
    assert leak.active and leak.at_ms == run_start + 25 * HOUR_MS
    assert leak.at_ms - leak_start <= 26 * HOUR_MS
    assert leak.values["hours"] == 25.0 and leak.values["unmeasured_h"] == 1.0
    # the message states the window it counted and the hour it could not see
    assert "25 時間、使用ゼロの時間がありません (02-04 06:00–02-05 07:00" in leak.message
    assert "うち 1 時間はメーター交換等で計量なし" in leak.message
    assert "1 h of it unmeasured" in (leak.message_en or "")


def test_a_meter_swap_between_dry_hours_starts_no_leak() -> None:
    """An unmeasured hour continues a run but never makes one: a swap on an ordinary
    household, with a zero hour either side, is no leak."""
    fam = family()
    uses = household_day() * 4
    swap_at = 24 + 3  # a dry night hour
    regs = cumulative(500_000.0, uses)
    regs = regs[:swap_at] + cumulative(20.0, uses[swap_at:])
    out = run_hourly(fam, [frame("M1", T0, regs)])
    assert [f.active for f in of(out, "water.swap")] == [True, False]
    assert not of(out, "water.leak_continuous")


# ------------------------------------------------------------------ register steps


def test_rollover_is_use_not_reverse_or_swap() -> None:
    fam = family(meter("M1", digits=5))  # wraps at 100 000 L
    regs = [99_950.0, 99_990.0, 30.0, 70.0]
    out = run_hourly(fam, [frame("M1", T0, regs)])
    uses = [p.fields["use_l"] for p in out.points if p.measurement == WATER_HOURLY]
    assert uses == [40.0, 40.0, 40.0]
    assert not out.findings


def test_swap_is_recognised_not_use_nor_reverse() -> None:
    fam = family()
    regs = [1_234_000.0, 1_234_020.0, 12.0, 30.0]
    out = run_hourly(fam, [frame("M1", T0, regs)])
    hourly = [p for p in out.points if p.measurement == WATER_HOURLY]
    assert [p.fields["use_l"] for p in hourly] == [20.0, 0.0, 18.0]
    assert [p.fields["reverse_l"] for p in hourly] == [0.0, 0.0, 0.0]
    swaps = of(out, "water.swap")
    assert [f.active for f in swaps] == [True, False]
    assert swaps[0].at_ms == T0 + 2 * HOUR_MS
    assert not of(out, "water.reverse") and not of(out, "water.burst")


def test_small_backwards_step_is_reverse_flow_and_resolves() -> None:
    fam = family()
    regs = [5000.0, 5010.0, 4950.0, 4950.0, 4960.0]
    out = run_hourly(fam, [frame("M1", T0, regs)])
    rev = of(out, "water.reverse")
    assert [f.active for f in rev] == [True, False]
    assert rev[0].at_ms == T0 + 2 * HOUR_MS and rev[0].values["reverse_l"] == 60.0
    hourly = [p for p in out.points if p.measurement == WATER_HOURLY]
    assert hourly[1].fields == {"use_l": 0.0, "reverse_l": 60.0, "register_l": 4950.0}


# ------------------------------------------------------------------------- burst


def test_burst_two_hours_above_a_fifth_of_q3() -> None:
    fam = family()
    uses = [10.0, 600.0, 700.0, 20.0, 0.0]
    out = run_hourly(fam, [frame("M1", T0, cumulative(0.0, uses))])
    b = of(out, "water.burst")
    assert [f.active for f in b] == [True, False]
    assert b[0].at_ms == T0 + 3 * HOUR_MS and b[0].severity == "critical"
    assert b[1].at_ms == T0 + 4 * HOUR_MS


def test_one_heavy_household_hour_is_not_a_burst_but_twice_the_limit_is() -> None:
    fam = family()
    out = run_hourly(fam, [frame("M1", T0, cumulative(0.0, [10.0, 520.0, 20.0]))])
    assert not of(out, "water.burst")
    fam = family()
    out = run_hourly(fam, [frame("M1", T0, cumulative(0.0, [10.0, 1100.0, 20.0]))])
    assert [f.active for f in of(out, "water.burst")] == [True, False]


# ------------------------------------------------------------------------- flags


def test_device_flags_pass_through() -> None:
    fam = family()
    tamper = [False, True, True, False]
    out = run_hourly(fam, [frame("M1", T0, [0.0, 1.0, 2.0, 3.0], flags={"tamper": tamper})])
    t = of(out, "water.flag_tamper")
    assert [(f.active, f.at_ms) for f in t] == [(True, T0 + HOUR_MS), (False, T0 + 3 * HOUR_MS)]
    states = [p.fields["state"] for p in out.points if p.measurement == WATER_STATE]
    assert states == ["tamper", "ok"]


# ------------------------------------------------------------------------- stale


def test_stale_hourly_sender_event_time_is_last_arrival_plus_threshold() -> None:
    fam = family()
    out = Output()
    df = frame("M1", T0, [0.0, 1.0, 2.0])
    fam.feed("water_meter", df, out)
    last = int(df["arrival"].max())
    fam.tick(last + 2 * HOUR_MS, out)
    assert not of(out, "water.stale")
    fam.tick(last + 3 * HOUR_MS + 60_000, out)
    (f,) = of(out, "water.stale")
    assert f.active and f.at_ms == last + 3 * HOUR_MS
    fam.tick(last + 4 * HOUR_MS, out)
    assert len(of(out, "water.stale")) == 1  # reported once
    back = frame("M1", T0 + 5 * HOUR_MS, [3.0])
    fam.feed("water_meter", back, out)
    g = of(out, "water.stale")[-1]
    assert not g.active and g.at_ms == int(back["arrival"].iloc[0])


def test_daily_uploader_is_stale_only_after_26_hours() -> None:
    fam = family()
    out = Output()
    up = T0 + DAY_MS + 2 * HOUR_MS
    fam.feed("water_meter", frame("M1", T0, [float(i) for i in range(24)], arrival=up), out)
    fam.tick(up + 20 * HOUR_MS, out)
    assert not of(out, "water.stale")
    fam.tick(up + 27 * HOUR_MS, out)
    (f,) = of(out, "water.stale")
    assert f.at_ms == up + 26 * HOUR_MS


# ------------------------------------------------------------------------- stuck


def test_stuck_meter_after_three_days_of_zero_at_a_normal_site() -> None:
    fam = family()
    uses = household_day() * 10 + [0.0] * (4 * 24) + [30.0]
    out = Output()
    regs = cumulative(100.0, uses)
    fam.feed("water_meter", frame("M1", T0, regs), out)  # one warm-up feed
    st = of(out, "water.stuck")
    assert [f.active for f in st] == [True, False]
    # zero from day 10 00:00 (the last use of day 9 ended 22:00 → zero since 21:00)
    first_zero = T0 + 9 * DAY_MS + 21 * HOUR_MS
    assert st[0].at_ms == first_zero + 72 * HOUR_MS + HOUR_MS
    assert st[1].at_ms == T0 + len(uses) * HOUR_MS


def test_no_use_notice_names_away_and_stopped() -> None:
    fam = family()
    uses = household_day() * 10 + [0.0] * (4 * 24) + [30.0]
    out = Output()
    fam.feed("water_meter", frame("M1", T0, cumulative(100.0, uses)), out)
    on = next(f for f in of(out, "water.stuck") if f.active)
    assert "不在" in on.message and "メーター停止" in on.message
    assert "区別できません" in on.message
    assert "away" in (on.message_en or "") and "stopped" in (on.message_en or "")


def test_away_period_suppresses_the_no_use_notice() -> None:
    # away from day 10 00:00 JST for four days, written without an offset: read as JST
    away = {"M1": [("2026-02-12T00:00:00", "2026-02-16T00:00:00")]}
    fam = family(away=away)
    assert T0 + 10 * DAY_MS == 1_770_822_000_000  # 2026-02-12T00:00 JST
    uses = household_day() * 10 + [0.0] * (4 * 24) + household_day()
    out = Output()
    fam.feed("water_meter", frame("M1", T0, cumulative(100.0, uses)), out)
    assert not of(out, "water.stuck")
    # the same days without the away period: the notice
    fam = family()
    out = Output()
    fam.feed("water_meter", frame("M1", T0, cumulative(100.0, uses)), out)
    assert [f.active for f in of(out, "water.stuck")] == [True, False]


def test_no_stuck_at_a_site_that_never_uses_water() -> None:
    fam = family()
    out = run_hourly(fam, [frame("M1", T0, [7.0] * (5 * 24))])
    assert not of(out, "water.stuck")


# ------------------------------------------------------------------------- night flow


def test_night_flow_three_nights_running_evaluated_at_seven() -> None:
    fam = family()
    days = 12
    uses = household_day() * days + [u + 8.0 for u in household_day()] * 3 + household_day()
    out = Output()
    regs = cumulative(0.0, uses)
    # hourly arrivals, ticks every hour (as live)
    for i in range(len(regs)):
        row = frame("M1", T0 + i * HOUR_MS, [regs[i]])
        fam.feed("water_meter", row, out)
        fam.tick(T0 + i * HOUR_MS + 60_000, out)
    nf = of(out, "water.night_flow")
    assert [f.active for f in nf] == [True, False]
    third = T0 + (days + 2) * DAY_MS
    assert nf[0].at_ms == third + 7 * HOUR_MS
    assert nf[0].values["min_flow_lph"] == 8.0 and nf[0].values["limit_lph"] == 5.0
    nights = [p for p in out.points if p.measurement == WATER_NIGHT]
    assert nights[0].time_ms == T0 + 2 * HOUR_MS
    assert len(nights) == days + 4


def test_night_flow_from_a_late_batch_keeps_the_seven_oclock_event_time() -> None:
    fam = family()
    out = Output()
    uses = [u + 8.0 for u in household_day()] * 4
    regs = cumulative(0.0, uses)
    for day in range(4):
        up = T0 + (day + 1) * DAY_MS + 2 * HOUR_MS + 600_000
        fam.feed(
            "water_meter",
            frame("M1", T0 + day * DAY_MS, regs[day * 24 : day * 24 + 24], arrival=up),
            out,
        )
        fam.tick(up, out)
    (f,) = of(out, "water.night_flow")
    assert f.active and f.at_ms == T0 + 2 * DAY_MS + 7 * HOUR_MS


# ------------------------------------------------------------------------- watch-over


def watched_day_without_use() -> list[float]:
    day = household_day()
    return day[:7] + [30.0] + [0.0] * 16  # 07:00–08:00 some use, then nothing


def test_watch_no_use_fires_after_23_hours_without_use_and_clears_on_use() -> None:
    fam = family()
    late_morning = [0.0] * 9 + household_day()[9:]  # first use 10:00–11:00
    uses = household_day() + watched_day_without_use() + late_morning + household_day()
    out = run_hourly(fam, [frame("W1", T0, cumulative(0.0, uses))])
    w = of(out, "water.watch_no_use")
    assert [f.active for f in w] == [True, False]
    # last use in the hour to 08:00; 23 hours without use (the night counts): 07:00 next
    # day, less than 24 h after the last use, while still silent
    assert w[0].at_ms == T0 + DAY_MS + 8 * HOUR_MS + 23 * HOUR_MS
    assert "23 時間、水の使用がありません" in w[0].message
    assert "最後の使用 02-03 08:00" in w[0].message
    assert w[1].at_ms == T0 + 2 * DAY_MS + 11 * HOUR_MS


def test_watch_no_use_quiet_on_a_day_out_and_the_night_after() -> None:
    """Out 08:00–21:00 (no use), a dry night, first use 06:00: 22 h, an ordinary day."""
    day = household_day()
    out_day = day[:8] + [0.0] * 16
    fam = family()
    out = run_hourly(fam, [frame("W1", T0, cumulative(0.0, day + out_day + day))])
    assert not of(out, "water.watch_no_use")


def test_watch_no_use_only_for_watched_meters() -> None:
    late_morning = [0.0] * 9 + household_day()[9:]
    uses = household_day() + watched_day_without_use() + late_morning + household_day()
    fam = family()
    out = run_hourly(fam, [frame("M1", T0, cumulative(0.0, uses))])
    assert not of(out, "water.watch_no_use")


def test_watch_away_period_suppresses() -> None:
    late_morning = [0.0] * 9 + household_day()[9:]
    uses = household_day() + watched_day_without_use() + late_morning + household_day()
    away = {"W1": [("2026-02-03T00:00:00+09:00", "2026-02-04T12:00:00+09:00")]}
    out = run_hourly(family(away=away), [frame("W1", T0, cumulative(0.0, uses))])
    assert not [f for f in of(out, "water.watch_no_use") if f.active]
    out = run_hourly(family(), [frame("W1", T0, cumulative(0.0, uses))])
    assert [f.active for f in of(out, "water.watch_no_use")] == [True, False]


def test_watch_continuous_use() -> None:
    fam = family()
    uses = household_day()[:10] + [300.0, 320.0, 400.0, 0.0] + [0.0] * 10
    out = run_hourly(fam, [frame("W1", T0, cumulative(0.0, uses))])
    w = of(out, "water.watch_continuous")
    assert [(f.active, f.at_ms) for f in w] == [
        (True, T0 + 12 * HOUR_MS),
        (False, T0 + 14 * HOUR_MS),
    ]


# ------------------------------------------------------------------------- engine


def test_pickled_midway_gives_the_same_findings() -> None:
    uses = household_day() * 2 + household_day(leak=20.0) * 2
    regs = cumulative(0.0, uses)
    df = frame("M1", T0, regs)
    a = family()
    out_a = Output()
    a.feed("water_meter", df, out_a)
    b = family()
    out_b = Output()
    b.feed("water_meter", df.iloc[:40].reset_index(drop=True), out_b)
    blob = pickle.dumps(b)
    b2: WaterFamily = pickle.loads(blob)
    b2.rebind(a.registry, a.config, Shared())
    b2.feed("water_meter", df.iloc[40:].reset_index(drop=True), out_b)
    key = [(f.rule, f.active, f.at_ms) for f in out_a.findings]
    assert key == [(f.rule, f.active, f.at_ms) for f in out_b.findings]
    assert key and key[0][0] == "water.leak_continuous"


def test_state_pickled_before_a_column_existed_still_loads() -> None:
    """A running engine's state from before ``leak_span`` was added: the column comes
    back with its initial value and the leak is still found."""
    uses = household_day() * 2 + household_day(leak=20.0) * 2
    df = frame("M1", T0, cumulative(0.0, uses))
    old = family()
    out = Output()
    old.feed("water_meter", df.iloc[:60].reset_index(drop=True), out)  # 11 h into the leak
    del old.s["leak_span"]
    loaded: WaterFamily = pickle.loads(pickle.dumps(old))
    loaded.rebind(old.registry, old.config, Shared())
    assert loaded.s["leak_span"].tolist() == [0.0]
    assert loaded.s["leak_run"].tolist() == [11.0]  # the leak's run had begun
    loaded.feed("water_meter", df.iloc[60:].reset_index(drop=True), out)
    (leak,) = of(out, "water.leak_continuous")
    # the window still spans the whole run, with nothing called unmeasured
    assert leak.active and leak.values["hours"] == 24.0 and leak.values["unmeasured_h"] == 0.0
    assert "24 時間、使用ゼロの時間がありません" in leak.message and "計量なし" not in leak.message


def test_ten_thousand_meters_in_one_feed() -> None:
    """A town-sized feed in one call (its speed is measured in benchmarks/rules.py)."""
    n = 10_000
    meters = [meter(f"X{i:05d}", watched=i % 10 == 0) for i in range(n)]
    fam = WaterFamily(registry(*meters), RulesConfig(), Shared())
    rng = np.random.default_rng(1)
    uses = rng.choice([0.0, 0.0, 0.0, 5.0, 30.0, 120.0], size=(n, 24))
    uses[::50] += 15.0  # some leaks
    regs = np.concatenate([np.full((n, 1), 1000.0), 1000.0 + np.cumsum(uses, axis=1)], axis=1)
    t = T0 + np.arange(25) * HOUR_MS
    df = pd.DataFrame(
        {
            "time": np.tile(t, n),
            "arrival": np.tile(t, n) + 5000,
            "device": np.repeat([m.id for m in meters], 25),
            "register_l": regs.ravel(),
            "flow_lph": np.nan,
        }
    )
    for f in FLAGS:
        df[f"alarm_{f}"] = False
    out = Output()
    fam.feed("water_meter", df, out)
    fam.tick(int(t[-1]) + 60_000, out)
    assert sum(1 for p in out.points if p.measurement == WATER_HOURLY) == n * 24


@pytest.mark.parametrize("uses", [[0.0] * 48, household_day() * 2])
def test_quiet_meters_say_nothing(uses: list[float]) -> None:
    out = run_hourly(family(), [frame("M1", T0, cumulative(10.0, uses))])
    assert not [f for f in out.findings if f.active]
