"""Plow family on hand-built GPS tracks: segments plowed (measured and inferred), the fix
filter and GPS gaps, dispatches observed from activity, idle and silent plows, plow_work,
late data at its event time, restart (pickle) equal to an uninterrupted run.

The town here: a depot and two straight road segments running east of it, R1 (priority
1, 200–700 m from the depot) and R2 (priority 2, 700–1200 m).
"""

from __future__ import annotations

import json
import math
import pickle
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from rules.config import RulesConfig
from rules.model import HOUR_MS, MINUTE_MS, Finding, Output, Point, Shared
from rules.params import PlowParams
from rules.plows import PlowFamily
from rules.schema import DISPATCH, PLOW_WORK, SEGMENT_STATUS
from rules.scoring.plow import score
from rules.transitions import Severity, Status, Transition, make_key
from sensors.registry import EARTH_RADIUS_M, Plow, Registry, RouteSegment

LON0, LAT0 = 140.19, 38.37
T0 = 1_768_410_000_000 - 1_768_410_000_000 % HOUR_MS  # 2026-01-14 17:00 UTC = 02:00 JST
SEC = 1000


def lonlat(x: float, y: float) -> tuple[float, float]:
    """Metres east/north of the depot → (lon, lat), the family's own projection."""
    kx = EARTH_RADIUS_M * math.cos(math.radians(LAT0)) * math.pi / 180
    ky = EARTH_RADIUS_M * math.pi / 180
    return LON0 + x / kx, LAT0 + y / ky


def registry() -> Registry:
    routes = {
        "R1": RouteSegment("R1", "本町通り", 1, (lonlat(200, 0), lonlat(450, 0), lonlat(700, 0))),
        "R2": RouteSegment("R2", "沢口線", 2, (lonlat(700, 0), lonlat(1200, 0))),
    }
    plows = {p: Plow(p, f"除雪{p[-1]}号車", "朝日建設", None) for p in ("P1", "P2")}
    return Registry({}, {}, plows, routes, depot=(LON0, LAT0))


class Track:
    """Fixes of one plow, built leg by leg."""

    def __init__(self, plow: str, t0: int, x: float = 0.0, y: float = 0.0) -> None:
        self.plow, self.t, self.x, self.y = plow, t0, x, y
        self.rows: list[dict[str, Any]] = []

    def fix(self, speed: float, blade: bool | None) -> None:
        lon, lat = lonlat(self.x, self.y)
        self.rows.append(
            {
                "time": self.t,
                "device": self.plow,
                "lat": lat,
                "lon": lon,
                "speed_kmh": speed,
                "heading_deg": 90.0,
                "blade_down": blade,
            }
        )

    def drive(
        self, to_x: float, kmh: float, blade: bool | None, step_s: int = 2, to_y: float = 0.0
    ) -> Track:
        dist = math.hypot(to_x - self.x, to_y - self.y)
        n = max(1, round(dist / (kmh / 3.6) / step_s))
        x0, y0 = self.x, self.y
        for i in range(1, n + 1):
            self.t += step_s * SEC
            self.x = x0 + (to_x - x0) * i / n
            self.y = y0 + (to_y - y0) * i / n
            self.fix(kmh, blade)
        return self

    def stand(self, seconds: int, step_s: int = 5, blade: bool | None = False) -> Track:
        for _ in range(seconds // step_s):
            self.t += step_s * SEC
            self.fix(0.2, blade)
        return self

    def gap(self, seconds: int, to_x: float) -> Track:
        """No fixes for ``seconds`` while the plow moves on to ``to_x``."""
        self.t += seconds * SEC
        self.x = to_x
        return self


def night(plow: str = "P1", blade: bool | None = True, kmh: float = 15.0) -> Track:
    """Out of the depot, R1 and R2 with the blade (or not), back to the depot."""
    tr = Track(plow, T0)
    tr.fix(0.1, False)
    tr.drive(200, 30, False).drive(1200, kmh, blade).drive(0, 30, False).stand(60)
    return tr


def frame(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame(list(rows))
    df["arrival"] = df["time"]
    df["blade_down"] = df["blade_down"].astype(object)
    cols = ["time", "arrival", "device", "lat", "lon", "speed_kmh", "heading_deg", "blade_down"]
    return df[cols].sort_values(["device", "time"], kind="stable").reset_index(drop=True)


class Run:
    """Feeds a family step by step as the engine does; collects what it reports."""

    def __init__(self, config: RulesConfig | None = None) -> None:
        self.shared = Shared()
        self.family = PlowFamily(registry(), config or RulesConfig(), self.shared)
        self.findings: list[Finding] = []
        self.points: list[Point] = []

    def feed(self, df: pd.DataFrame, now: int) -> None:
        out = Output()
        if len(df):
            self.family.feed("plow_position", df, out)
        self.family.tick(now, out)
        self.findings += out.findings
        self.points += out.points

    def steps(
        self,
        rows: Sequence[dict[str, Any]],
        step_ms: int = 60 * SEC,
        extra_ms: int = 30 * MINUTE_MS,
    ) -> Run:
        df = frame(rows)
        start = int(df["time"].min()) - int(df["time"].min()) % step_ms
        end = int(df["time"].max()) + extra_ms
        now = start
        while now <= end + step_ms:
            part = df[(df["time"] > now - step_ms) & (df["time"] <= now)]
            self.feed(part.reset_index(drop=True), now)
            now += step_ms
        return self

    def status(self) -> list[Point]:
        return [p for p in self.points if p.measurement == SEGMENT_STATUS]

    def dispatch(self) -> list[Point]:
        return [p for p in self.points if p.measurement == DISPATCH]

    def rule(self, rule: str) -> list[Finding]:
        return [f for f in self.findings if f.rule == rule]


def transitions(findings: list[Finding]) -> list[Finding]:
    """What the engine would emit: changes of activity per subject."""
    state: dict[str, bool] = {}
    out = []
    for f in sorted(findings, key=lambda f: (f.at_ms, f.rule, f.subject)):
        key = make_key(f.rule, f.subject)
        if f.active != state.get(key, False):
            state[key] = f.active
            out.append(f)
    return out


def crossing_time(rows: list[dict[str, Any]], x: float) -> int:
    """Time of the first fix at or beyond ``x`` metres east (driving east)."""
    kx = EARTH_RADIUS_M * math.cos(math.radians(LAT0)) * math.pi / 180
    return int(next(r["time"] for r in rows if (r["lon"] - LON0) * kx >= x - 1e-6))


# --------------------------------------------------------------------------- segments


def test_a_blade_down_pass_plows_each_segment_once_at_the_80_percent_moment() -> None:
    tr = night()
    run = Run().steps(tr.rows)
    st = run.status()
    assert [p.tags["segment"] for p in st] == ["R1", "R2"]
    r1, r2 = st
    assert r1.tags["priority"] == "1" and r2.tags["priority"] == "2"
    assert r1.fields["plow"] == "P1" and r1.fields["inferred"] is False
    assert r1.fields["coverage"] >= 0.8
    # 80 % of R1 (200–700 m) is covered once the plow is within 15 m of the 600 m mark
    expect = crossing_time(tr.rows, 200 + 0.8 * 500 - 15)
    assert abs(r1.time_ms - expect) <= 25 * SEC
    assert r1.fields["dispatch_id"] == "20260115-0200"


def test_blade_up_travel_plows_nothing() -> None:
    run = Run().steps(night(blade=False).rows)
    assert run.status() == []
    assert run.dispatch()[-1].fields["state"] == "done"
    assert run.dispatch()[-1].fields["segments_done"] == 0


def test_without_blade_state_working_speed_is_inferred_plowing() -> None:
    run = Run().steps(night(blade=None).rows)
    st = run.status()
    assert [p.tags["segment"] for p in st] == ["R1", "R2"]
    assert all(p.fields["inferred"] is True for p in st)


def test_without_blade_state_fast_travel_is_not_plowing() -> None:
    run = Run().steps(night(blade=None, kmh=60).rows)
    assert run.status() == []


def test_a_pass_within_the_window_counts_a_second_pass_plows_again() -> None:
    tr = Track("P1", T0)
    tr.fix(0.1, False)
    tr.drive(200, 30, False).drive(700, 15, True).drive(200, 15, True)  # there and back
    tr.drive(0, 30, False).stand(120)
    run = Run().steps(tr.rows)
    # back along R1 is a second pass over it
    assert [p.tags["segment"] for p in run.status()] == ["R1", "R1"]


def test_half_a_segment_now_and_half_after_the_pass_window_is_not_plowed() -> None:
    tr = Track("P1", T0)
    tr.fix(0.1, False)
    tr.drive(200, 30, False).drive(450, 15, True).drive(0, 30, False).stand(70 * 60, step_s=30)
    tr.drive(450, 30, False).drive(700, 15, True).drive(0, 30, False).stand(60)
    run = Run().steps(tr.rows)
    assert [p.tags["segment"] for p in run.status()] == []


def test_a_spike_fix_is_dropped_and_a_short_gps_gap_is_bridged() -> None:
    tr = Track("P1", T0)
    tr.fix(0.1, False)
    tr.drive(200, 30, False).drive(400, 15, True)
    tr.rows.append({**tr.rows[-1], "time": tr.t + SEC, "lat": tr.rows[-1]["lat"] + 0.02})
    tr.t += 2 * SEC
    tr.gap(60, to_x=650).fix(15, True)  # 60 s without fixes, on a straight road
    tr.drive(1200, 15, True).drive(0, 30, False).stand(60)
    run = Run().steps(tr.rows)
    assert [p.tags["segment"] for p in run.status()] == ["R1", "R2"]
    work = [p for p in run.points if p.measurement == PLOW_WORK]
    # the 2 km spike never entered the distance
    assert max(p.fields["travel_km"] for p in work) < 3.0


def test_a_gap_longer_than_max_gap_is_not_bridged() -> None:
    tr = Track("P1", T0)
    tr.fix(0.1, False)
    tr.drive(200, 30, False).drive(350, 15, True)
    tr.gap(300, to_x=650).fix(15, True)  # 5 min gap: the track breaks
    tr.drive(700, 15, True).drive(0, 30, False).stand(60)
    run = Run().steps(tr.rows)
    assert run.status() == []


def test_coverage_does_not_depend_on_how_the_track_is_cut_into_feeds() -> None:
    rows = night().rows
    a = Run().steps(rows, step_ms=60 * SEC)
    b = Run().steps(rows, step_ms=600 * SEC)
    c = Run()
    c.feed(frame(rows), int(frame(rows)["time"].max()) + HOUR_MS)
    times = [[(p.tags["segment"], p.time_ms) for p in r.status()] for r in (a, b, c)]
    assert times[0] == times[1] == times[2]


def test_late_positions_give_the_same_event_times() -> None:
    """A logger that uploads its night an hour late: same points, same times."""
    rows = night().rows
    live = Run().steps(rows)
    late = Run()
    late.feed(pd.DataFrame(), T0)  # nothing has arrived yet
    late.feed(frame(rows), int(frame(rows)["time"].max()) + HOUR_MS)
    assert [(p.tags["segment"], p.time_ms) for p in late.status()] == [
        (p.tags["segment"], p.time_ms) for p in live.status()
    ]
    d_live, d_late = live.dispatch()[-1], late.dispatch()[-1]
    assert d_live.time_ms == d_late.time_ms and d_late.fields["state"] == "done"


def test_a_restart_mid_night_continues_exactly() -> None:
    rows = night().rows
    whole = Run().steps(rows)
    df = frame(rows)
    mid = int(df["time"].quantile(0.4))
    first = Run()
    first.feed(df[df["time"] <= mid].reset_index(drop=True), mid)
    blob = pickle.dumps(first.family)
    again = Run()
    fam = pickle.loads(blob)
    fam.rebind(registry(), RulesConfig(), again.shared)
    again.family = fam
    again.feed(df[df["time"] > mid].reset_index(drop=True), int(df["time"].max()) + HOUR_MS)
    got = [(p.tags["segment"], p.time_ms) for p in first.status() + again.status()]
    assert got == [(p.tags["segment"], p.time_ms) for p in whole.status()]


# --------------------------------------------------------------------------- dispatch


def test_dispatch_is_observed_from_departure_to_the_last_return() -> None:
    p1 = night("P1")
    p2 = Track("P2", T0 + 5 * MINUTE_MS)
    p2.fix(0.1, False)
    p2.drive(300, 30, False).drive(0, 30, False).stand(60)
    run = Run().steps(p1.rows + p2.rows, extra_ms=30 * MINUTE_MS)
    states = [p.fields["state"] for p in run.dispatch()]
    assert states[0] == "called" and "working" in states and states[-1] == "done"
    done = run.dispatch()[-1]
    first_out = crossing_time(p1.rows, 150)
    assert done.tags["dispatch_id"] == "20260115-0200"
    assert abs(done.fields["started_s"] * SEC - first_out) <= 2 * SEC
    # the last plow back: P1, at the first fix inside the depot radius on its way home
    p1_back = next(
        r["time"] for r in p1.rows if r["time"] > first_out and r["lon"] < lonlat(150, 0)[0]
    )
    assert done.time_ms == p1_back
    assert run.shared.last_plowing_end_ms == p1_back
    assert run.shared.active_dispatch is None
    assert done.fields["priority_total"] == 1 and done.fields["priority_done"] == 1
    assert done.fields["segments_done"] == 2 and done.fields["progress"] == 1.0
    r1 = next(p for p in run.status() if p.tags["segment"] == "R1")
    assert done.fields["work_time_s"] == (r1.time_ms - first_out) // SEC


def test_active_dispatch_is_shared_while_plows_are_out() -> None:
    tr = night()
    df = frame(tr.rows)
    run = Run()
    mid = int(df["time"].median())
    run.feed(df[df["time"] <= mid].reset_index(drop=True), mid)
    assert run.shared.active_dispatch == "20260115-0200"
    assert run.shared.active_dispatch_start_ms is not None
    assert run.shared.last_plowing_end_ms is None


def test_a_plow_going_out_again_soon_continues_the_same_dispatch() -> None:
    tr = night()
    tr.stand(20 * 60, step_s=30)  # 20 min in the yard: the dispatch is closed…
    tr.drive(200, 30, False).drive(700, 15, True).drive(0, 30, False).stand(60)
    run = Run().steps(tr.rows, extra_ms=30 * MINUTE_MS)
    ids = {p.tags["dispatch_id"] for p in run.dispatch()}
    assert ids == {"20260115-0200"}  # …and re-opened: within dispatch_gap_min
    assert [p.fields["state"] for p in run.dispatch()].count("done") == 2


def test_every_plow_back_counts_as_plowed_before_the_dispatch_closes() -> None:
    # The dispatch closes dispatch_end_min (15) after the last plow is back; in that wait
    # the snow rules already count from the return (a call then would count the snow
    # this plowing cleared), and a plow going out again takes it back.
    tr = night()
    tr.stand(5 * 60, step_s=30)  # back 6 min: the dispatch is still open
    df = frame(tr.rows)
    now = int(df["time"].max())
    run = Run()
    run.feed(df, now)
    first_out = crossing_time(tr.rows, 150)
    back = next(
        r["time"] for r in tr.rows if r["time"] > first_out and r["lon"] < lonlat(150, 0)[0]
    )
    assert run.shared.active_dispatch == "20260115-0200"
    assert run.shared.last_plowing_end_ms is None
    assert run.shared.plows_back_ms == back
    assert run.shared.last_plowing_before(now) == back
    assert run.shared.last_plowing_before(back - 1) is None
    out = Track("P1", now + 30 * SEC)
    out.fix(0.1, False)
    out.drive(300, 30, False)
    run.feed(frame(out.rows), int(frame(out.rows)["time"].max()))
    assert run.shared.plows_back_ms is None
    assert run.shared.last_plowing_before(now) is None


# --------------------------------------------------------------------------- idle, silent


def _idle_track(minutes: float, x: float = 450) -> Track:
    tr = Track("P1", T0)
    tr.fix(0.1, False)
    tr.drive(x, 30, False).stand(int(minutes * 60)).drive(0, 30, False).stand(60)
    return tr


def test_idle_fires_after_ten_minutes_standing_and_resolves_when_moving() -> None:
    tr = _idle_track(14)
    run = Run().steps(tr.rows)
    tx = transitions(run.rule("plow.idle"))
    assert [f.active for f in tx] == [True, False]
    stop = crossing_time(tr.rows, 450)
    slow_from = next(r["time"] for r in tr.rows if r["time"] > stop and r["speed_kmh"] < 3)
    assert tx[0].at_ms == slow_from + 10 * MINUTE_MS
    assert tx[0].severity is Severity.INFO and "停車中" in tx[0].message
    moving = next(r["time"] for r in tr.rows if r["time"] > slow_from and r["speed_kmh"] >= 3)
    assert tx[1].at_ms == moving


def test_a_short_stop_and_parking_at_the_depot_are_not_idle() -> None:
    run = Run().steps(_idle_track(8).rows)
    assert transitions(run.rule("plow.idle")) == []
    tr = Track("P1", T0).stand(30 * 60)
    run = Run().steps(tr.rows)
    assert transitions(run.rule("plow.idle")) == []


def test_idle_spanning_many_feeds_fires_once() -> None:
    run = Run().steps(_idle_track(25).rows, step_ms=30 * SEC)
    assert [f.active for f in transitions(run.rule("plow.idle"))] == [True, False]


def test_silent_plow_during_a_dispatch_fires_and_resolves() -> None:
    tr = Track("P1", T0)
    tr.fix(0.1, False)
    tr.drive(450, 30, False)
    lost = tr.t
    tr.gap(25 * 60, to_x=500).fix(10, False)
    back = tr.t
    tr.drive(0, 30, False).stand(60)
    run = Run().steps(tr.rows)
    tx = transitions(run.rule("plow.silent"))
    assert [f.active for f in tx] == [True, False]
    assert tx[0].at_ms == lost + PlowParams().silent_min * MINUTE_MS
    assert tx[0].severity is Severity.WARNING
    assert tx[1].at_ms == back


def test_silence_in_the_depot_is_not_an_alert() -> None:
    run = Run().steps(night().rows, extra_ms=3 * HOUR_MS)
    assert transitions(run.rule("plow.silent")) == []


# --------------------------------------------------------------------------- plow_work


def test_plow_work_per_hour() -> None:
    tr = night()
    run = Run().steps(tr.rows)
    work = [p for p in run.points if p.measurement == PLOW_WORK]
    last: dict[int, Point] = {}
    for p in work:
        last[p.time_ms] = p  # the newest point of an hour overwrites the older ones
    assert all(h % HOUR_MS == 0 for h in last)
    total = {k: sum(p.fields[k] for p in last.values()) for k in ("blade_km", "travel_km")}
    assert total["blade_km"] == pytest.approx(1.0, abs=0.05)  # R1 + R2
    assert total["travel_km"] == pytest.approx(2.4, abs=0.1)  # out 1.2, back 1.2
    assert all(p.fields["dispatch_id"] == "20260115-0200" for p in last.values())
    assert {p.tags["contractor"] for p in last.values()} == {"朝日建設"}


# --------------------------------------------------------------------------- scoring


def test_scorer_counts_agreement_and_idle(tmp_path: Path) -> None:
    tr = _idle_track(14, x=1200)
    run = Run().steps(tr.rows)

    def iso(ms: int) -> str:
        return pd.Timestamp(ms, unit="ms", tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ")

    stop = crossing_time(tr.rows, 1200)
    truth = {
        "dispatches": [{"at": iso(T0)}],
        "trips": [
            {
                "plow": "P1",
                "dispatched_at": iso(T0),
                "leave_depot": iso(T0),
                "back_at_depot": iso(tr.t),
                "segments": ["R1", "R2"],
                "idle": [{"start": iso(stop), "end": iso(stop + 14 * MINUTE_MS)}],
            }
        ],
    }
    (tmp_path / "truth.json").write_text(json.dumps(truth))
    (tmp_path / "faults.csv").write_text("device,kind,fault,start,end,source,detail\n")
    # the truth says R1 was plowed, R2 was not: we (blade up) plowed neither
    (tmp_path / "plow_segments.csv").write_text(
        "plow,segment_id,start,end,direction,length_m\n"
        f"P1,R1,{iso(T0 + MINUTE_MS)},{iso(T0 + 3 * MINUTE_MS)},forward,500\n"
    )
    tx = [(f.at_ms, _transition(f)) for f in transitions(run.findings)]
    rows = {s.rule: s for s in score(tmp_path, tx, run.points)}
    seg = rows["plow.segment"]
    assert (seg.true_positives, seg.false_positives, seg.missed) == (0, 0, 1)
    assert "agreement 50.0% (1/2)" in seg.note
    assert rows["plow.idle"].true_positives == 1 and rows["plow.idle"].false_positives == 0


def _transition(f: Finding) -> Transition:
    return Transition(
        key=make_key(f.rule, f.subject),
        rule=f.rule,
        category=f.category,
        subject=f.subject,
        subject_kind=f.subject_kind,
        severity=f.severity,
        status=Status.FIRING if f.active else Status.RESOLVED,
        event_time=pd.Timestamp(f.at_ms, unit="ms", tz="UTC").to_pydatetime(),
        detected_at=pd.Timestamp(f.at_ms, unit="ms", tz="UTC").to_pydatetime(),
        values=dict(f.values),
        message=f.message,
    )


def test_fix_filter_keeps_honest_fast_fixes_and_numpy_types_are_plain() -> None:
    """50 km/h at 1 Hz with GPS noise is not a jump; derived fields are plain types."""
    rng = np.random.default_rng(3)
    tr = Track("P1", T0)
    tr.fix(0.1, False)
    tr.drive(1200, 50, False, step_s=1)
    for r in tr.rows:
        r["lat"] += float(rng.normal(0, 3e-5))
    tr.drive(0, 30, False).stand(60)
    run = Run().steps(tr.rows)
    work = [p for p in run.points if p.measurement == PLOW_WORK]
    assert sum(p.fields["travel_km"] for p in {p.time_ms: p for p in work}.values()) > 2.3
    for p in run.points:
        for v in p.fields.values():
            assert type(v) in (int, float, str, bool)
