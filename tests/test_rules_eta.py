"""Plow ETA (rules/eta.py through the plow family): hand-built tracks in a small town with
two work zones, and the estimator on its own for GPS gaps, silence, a vehicle back at
the depot, passed-over segments and bands too wide to show.

The town: a depot at the origin; zone Z1 (P1) is R1 (200–700 m east) then R2
(700–1200 m east); zone Z2 (P2) is R3, 500 m north of R1.
"""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from rules import eta
from rules.config import RulesConfig
from rules.model import MINUTE_MS, Point
from rules.plows import PlowFamily
from rules.schema import FIELDS, SEGMENT_ETA, TAGS, ZONE_ETA
from sensors.registry import Plow, Registry, RouteSegment
from sensors.zones import RoadGraph, WorkZone
from tests.test_rules_plow import LAT0, LON0, SEC, T0, Run, Track, frame, lonlat


def town() -> Registry:
    routes = {
        "R1": RouteSegment("R1", "本町通り", 1, (lonlat(200, 0), lonlat(700, 0)), "Z1", 1),
        "R2": RouteSegment("R2", "沢口線", 2, (lonlat(700, 0), lonlat(1200, 0)), "Z1", 2),
        "R3": RouteSegment("R3", "上野線", 2, (lonlat(200, 500), lonlat(700, 500)), "Z2", 1),
    }
    plows = {
        "P1": Plow("P1", "除雪1号車", "町直営", None),
        "P2": Plow("P2", "除雪2号車", "朝日建設", None),
    }
    zones = {
        "Z1": WorkZone("Z1", "第1工区", "町直営", ("P1",), ("R1", "R2"), True),
        "Z2": WorkZone("Z2", "第2工区", "朝日建設", ("P2",), ("R3",), True),
    }
    return Registry({}, {}, plows, routes, depot=(LON0, LAT0), zones=zones)


class ZoneRun(Run):
    def __init__(self) -> None:
        super().__init__()
        self.family = PlowFamily(town(), RulesConfig(), self.shared)

    def run(self, rows: list[dict[str, Any]], extra_ms: int = 30 * MINUTE_MS) -> ZoneRun:
        self.steps(rows, extra_ms=extra_ms)
        return self

    def eta(self, segment: str) -> list[Point]:
        return [
            p for p in self.points if p.measurement == SEGMENT_ETA and p.tags["segment"] == segment
        ]


def trip() -> Track:
    """P1: out of the depot, R1 and R2 blade down at 6 km/h, back, parked."""
    tr = Track("P1", T0)
    tr.fix(0.1, False)
    tr.drive(200, 30, False).drive(700, 6, True).drive(1200, 6, True)
    return tr.drive(0, 30, False).stand(60)


def plowed_at(run: ZoneRun, segment: str) -> int:
    (p,) = [s for s in run.status() if s.tags["segment"] == segment]
    return p.time_ms


def test_eta_during_a_dispatch_brackets_the_true_plowing() -> None:
    run = ZoneRun().run(trip().rows)
    r2_done = plowed_at(run, "R2")
    before = [p for p in run.eta("R2") if p.fields["state"] == "eta"]
    assert before, "R2 had an ETA before it was plowed"
    for p in before:
        assert p.time_ms < r2_done
        assert p.fields["plow"] == "P1" and p.tags["zone"] == "Z1"
        f = p.fields
        assert f["early_s"] <= f["eta_s"] <= f["late_s"]
        assert f["early_s"] * SEC <= r2_done <= f["late_s"] * SEC, p
        assert abs(f["eta_s"] * SEC - r2_done) <= 6 * MINUTE_MS
    states = [p.fields["state"] for p in run.eta("R2")]
    assert states[-2:] == ["done", "done"]  # plowed, then the dispatch ended
    # P2 never left: its zone reads 見込み不明 (no vehicle), then the dispatch ends
    r3 = run.eta("R3")
    assert {(p.fields["state"], p.fields["reason"]) for p in r3[:-1]} == {("unknown", "no_vehicle")}
    assert r3[-1].fields["state"] == "ended"
    assert all(p.fields["eta_s"] == 0 for p in r3)
    zones = [p for p in run.points if p.measurement == ZONE_ETA and p.tags["zone"] == "Z1"]
    assert zones[0].fields["remaining_segments"] == 2
    assert zones[-1].fields["remaining_segments"] == 0
    assert zones[0].fields["finish_s"] > 0
    assert zones[0].tags["contractor"] == "町直営"


def test_eta_points_follow_the_schema() -> None:
    run = ZoneRun().run(trip().rows)
    points = [p for p in run.points if p.measurement in (SEGMENT_ETA, ZONE_ETA)]
    assert points
    types: dict[str, Any] = {"int": int, "float": float, "str": str, "bool": bool}
    for p in points:
        assert tuple(p.tags) == TAGS[p.measurement]
        assert set(p.fields) == set(FIELDS[p.measurement])
        for k, v in p.fields.items():
            assert type(v) is types[FIELDS[p.measurement][k]], (p.measurement, k, v)


def test_silent_vehicle_reads_unknown() -> None:
    tr = Track("P1", T0)
    tr.fix(0.1, False)
    tr.drive(200, 30, False).drive(700, 6, True)
    silent_from = tr.t
    # P2 keeps working in its zone for 40 min, so the dispatch goes on
    other = Track("P2", T0)
    other.fix(0.1, False)
    other.drive(200, 30, False, to_y=500)
    for _ in range(3):
        other.drive(700, 3, True, to_y=500).drive(200, 3, True, to_y=500)
    run = ZoneRun().run(tr.rows + other.rows, extra_ms=5 * MINUTE_MS)
    r2 = run.eta("R2")
    late = [p for p in r2 if p.time_ms >= silent_from + 16 * MINUTE_MS]
    assert late
    assert {(p.fields["state"], p.fields["reason"]) for p in late} == {("unknown", "silent")}
    early = [p for p in r2 if p.time_ms <= silent_from]
    assert early and all(p.fields["state"] == "eta" for p in early)


def test_restart_keeps_what_the_eta_learned() -> None:
    rows = trip().rows
    whole = ZoneRun().steps(rows)
    half = len(rows) // 2
    first = ZoneRun()
    df = frame(rows)
    cut = int(df["time"].iloc[half])
    step = 60 * SEC
    start = int(df["time"].min()) - int(df["time"].min()) % step
    now = start
    while now <= cut:
        first.feed(df[(df["time"] > now - step) & (df["time"] <= now)].reset_index(drop=True), now)
        now += step
    again = ZoneRun()
    again.family = pickle.loads(pickle.dumps(first.family))
    again.family.rebind(town(), RulesConfig(), again.shared)
    again.points = list(first.points)
    end = int(df["time"].max()) + 30 * MINUTE_MS
    while now <= end + step:
        again.feed(df[(df["time"] > now - step) & (df["time"] <= now)].reset_index(drop=True), now)
        now += step
    mine = [p for p in again.points if p.measurement in (SEGMENT_ETA, ZONE_ETA)]
    theirs = [p for p in whole.points if p.measurement in (SEGMENT_ETA, ZONE_ETA)]
    assert mine == theirs


# --------------------------------------------------------------------------- estimator

NOW = T0 + 30 * MINUTE_MS


def vehicle(
    x: float, *, age_min: float = 0.0, away: bool = True, back: bool = False
) -> eta.Vehicle:
    lon, lat = lonlat(x, 0)
    return eta.Vehicle(int(NOW - age_min * MINUTE_MS), lon, lat, away, back, None)


def estimate(v: eta.Vehicle, plowed: dict[str, int] | None = None, **kw: Any) -> dict[str, Any]:
    reg = town()
    state = kw.pop("state", eta.EtaState())
    segs, _ = eta.estimate(
        reg,
        RoadGraph(reg.routes),
        state,
        eta.Progress(
            now_ms=NOW,
            dispatch_start_ms=T0,
            plowed=plowed or {},
            covered=kw.pop("covered", {}),
            vehicles={"P1": v},
            silent_ms={"P1": 15 * MINUTE_MS},
        ),
    )
    return {e.segment: e for e in segs}


def test_a_gps_gap_widens_the_band_and_the_estimate_moves_on() -> None:
    fresh = estimate(vehicle(200))["R2"]
    gap = estimate(vehicle(200, age_min=5))["R2"]
    assert fresh.state == gap.state == "eta"
    # it moves on as if the plow kept working; the late end is where it would be had
    # the plow stood still through the gap; the band contains the fresh one
    assert gap.eta_ms == fresh.eta_ms - 5 * MINUTE_MS
    assert gap.late_ms == fresh.late_ms
    assert gap.early_ms < fresh.early_ms
    assert gap.early_ms == NOW  # never before now
    silent = estimate(vehicle(200, age_min=15))["R2"]
    assert (silent.state, silent.reason, silent.eta_ms) == ("unknown", "silent", 0)


def test_order_and_prior_speeds() -> None:
    """From the depot: 200 m blade up, R1 then R2 blade down at the 10 km/h prior, plus
    the expected standing."""
    est = estimate(vehicle(0))
    r1, r2 = est["R1"], est["R2"]
    transit = 200 / (eta.TRANSIT_PRIOR_KMH / 3.6)
    blade = 500 / (eta.BLADE_PRIOR_KMH / 3.6)
    work = 1 + eta.IDLE_SHARE
    assert r1.eta_ms == pytest.approx(NOW + (transit + blade) * work * SEC, abs=3 * SEC)
    assert r2.eta_ms == pytest.approx(NOW + (transit + 2 * blade) * work * SEC, abs=3 * SEC)
    # learned slower this trip: later, and the more driving seen, the more it counts
    state = eta.EtaState()
    state.start("d1")
    state.learn("P1", blade_m=5000, blade_s=3600, transit_m=0, transit_s=0)  # 5 km/h
    slow = estimate(vehicle(0), state=state)["R2"]
    assert slow.eta_ms > r2.eta_ms + 3 * MINUTE_MS


def test_partly_plowed_segment_counts_only_what_is_left() -> None:
    on_r1 = estimate(vehicle(450), covered={"R1": 0.5})
    blade = 250 / (eta.BLADE_PRIOR_KMH / 3.6) * (1 + eta.IDLE_SHARE)
    assert on_r1["R1"].eta_ms == pytest.approx(NOW + blade * SEC, abs=3 * SEC)


def test_a_standing_plow_goes_on_after_the_rest_of_a_typical_stop() -> None:
    lon, lat = lonlat(0, 0)
    moving = estimate(eta.Vehicle(NOW, lon, lat, True, False, None))["R2"]
    stopped = estimate(eta.Vehicle(NOW, lon, lat, True, False, NOW - 2 * MINUTE_MS))["R2"]
    long_stop = estimate(eta.Vehicle(NOW, lon, lat, True, False, NOW - 30 * MINUTE_MS))["R2"]
    # 2 min stood of a 4–20 min stop: ~10 more; after 30 min, a couple of minutes
    assert stopped.eta_ms - moving.eta_ms == 10 * MINUTE_MS
    assert long_stop.eta_ms - moving.eta_ms == 2 * MINUTE_MS


def test_back_at_the_depot_and_passed_over() -> None:
    back = estimate(vehicle(0, away=False, back=True))
    assert (back["R1"].state, back["R1"].reason) == ("unknown", "returned")
    state = eta.EtaState()
    state.start("d1")
    state.plowed_by["R2"] = "P1"
    passed = estimate(vehicle(1200), plowed={"R2": NOW - MINUTE_MS}, state=state)
    assert (passed["R1"].state, passed["R1"].reason) == ("unknown", "skipped")
    assert passed["R2"].state == "done"


def test_too_wide_a_band_reads_unknown() -> None:
    state = eta.EtaState()
    state.start("d1")
    state.learn("P1", blade_m=1000, blade_s=200_000, transit_m=0, transit_s=0)  # crawling
    est = estimate(vehicle(0), state=state)
    assert (est["R2"].state, est["R2"].reason) == ("unknown", "too_wide")
