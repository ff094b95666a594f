"""Scoring the snow family against a scenario's ground truth (scenarios/README.md).

* ``snow.dispatch``: the true crossings are computed from ``snow_hourly.csv``
  (``new_snow_cm``, JMA on the true depth) exactly as the rule does: new snow since the
  last plowing (the end of the latest truth plow trip of a dispatch), at most
  ``window_h`` hours back, reaching ``dispatch_cm`` at ``dispatch_stations`` stations,
  at the end of the hour that decided it. A firing within ``MATCH_H`` of a true
  crossing (before or after) is a true positive; its delay is detection time (the
  evaluation step that emitted it) − the crossing. Other firings are false positives,
  but for the near-misses (the truth's second station at ``NEAR_MISS_CM`` or more
  within 3 h of the call: docs/detection.md#dispatch), named apart in the note.
* station faults (``faults.csv``, kind ``snow``): each fault expects its rule
  (spike/spikes → snow.spike, frozen, dropout → snow.offline, poor_quality →
  snow.poor_echo, battery_drain → snow.low_battery) to fire for that station within
  its interval (plus ``FAULT_SLACK_H``). Dropouts shorter than the offline limit are
  not expected. A firing that matches no fault of its station is a false positive —
  except snow.offline at the end of the data (the scenario simply stops).
"""

from __future__ import annotations

import csv
import json
from bisect import bisect_right
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from pathlib import Path

from rules.model import HOUR_MS, Point, dt_to_ms, floor_hour
from rules.params import SnowParams
from rules.scoring import Score
from rules.transitions import Transition

MATCH_H = 3.0  # a firing this close to a true crossing is about it (late or early, not false)
# A call about no crossing when the truth's second station peaked at this much within
# 3 h of it: a near-miss, not a false call — 10 cm cannot be told from 8–9.9 cm through
# ±3 cm sensors (docs/detection.md#dispatch)
NEAR_MISS_CM = 8.0
FAULT_SLACK_H = 1.0  # detections may come this long after a fault's interval
RULE_OF_FAULT = {
    "spike": "snow.spike",
    "spikes": "snow.spike",
    "frozen": "snow.frozen",
    "dropout": "snow.offline",
    "poor_quality": "snow.poor_echo",
    "battery_drain": "snow.low_battery",
}


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


@dataclass
class SnowTruth:
    """The truth's hourly new snow per station and the ends of its plowing."""

    hourly: dict[int, dict[str, float]]  # hour start (ms) → station → new snow (cm)
    # each dispatch from its first plow leaving to its last one back (ms), sorted
    dispatches: list[tuple[int, int]] = field(default_factory=list)
    _hours: list[int] = field(default_factory=list, repr=False)

    @cached_property
    def plowing_ends(self) -> list[int]:
        """The end of each dispatch (the last plow back), ms, sorted."""
        return sorted(end for _, end in self.dispatches)

    @classmethod
    def load(cls, truth_dir: Path) -> SnowTruth:
        hourly: dict[int, dict[str, float]] = defaultdict(dict)
        with (truth_dir / "snow_hourly.csv").open() as fh:
            for row in csv.DictReader(fh):
                hourly[_ms(row["hour_start"])][row["station"]] = float(row["new_snow_cm"])
        truth = json.loads((truth_dir / "truth.json").read_text())
        return cls(dict(hourly), sorted(_dispatch_spans(truth)))

    def reset_ms(self, end_ms: int, p: SnowParams) -> int:
        """Start of the accumulation that hours ending at ``end_ms`` belong to."""
        last = max((e for e in self.plowing_ends if e <= end_ms), default=None)
        start = end_ms - p.window_h * HOUR_MS
        return start if last is None else max(start, last)

    def totals(self, start_ms: int, end_ms: int) -> dict[str, float]:
        """New snow per station of the hours that end in ``(start_ms, end_ms]``."""
        hours = self._sorted()
        out: dict[str, float] = defaultdict(float)
        for i in range(bisect_right(hours, start_ms - HOUR_MS), len(hours)):
            h = hours[i]
            if h + HOUR_MS > end_ms:
                break
            for st, v in self.hourly[h].items():
                out[st] += v
        return dict(out)

    def _sorted(self) -> list[int]:
        if len(self._hours) != len(self.hourly):
            self._hours = sorted(self.hourly)
        return self._hours

    def crossings(self, p: SnowParams) -> list[int]:
        """One per accumulation: the condition turning true after it was false (a
        plowing since the last crossing, or the window sliding past the snow)."""
        crossings: list[int] = []
        was = False
        for h in sorted(self.hourly):
            end = h + HOUR_MS
            hit = self.hit(end, p)
            last = max((e for e in self.plowing_ends if e <= end), default=None)
            if crossings and last is not None and last > crossings[-1]:
                was = False  # plowed since the last crossing: a new accumulation
            if hit and not was:
                crossings.append(end)
            was = hit
        return crossings

    def hit(self, end_ms: int, p: SnowParams) -> bool:
        totals = self.totals(self.reset_ms(end_ms, p), end_ms)
        return sum(1 for v in totals.values() if v >= p.dispatch_cm) >= p.dispatch_stations

    def peak_after(self, at_ms: int, p: SnowParams) -> float:
        """The truth's second station's highest figure at ``at_ms`` and the 3 hours
        after it: a call about no crossing is a near-miss when it is ``NEAR_MISS_CM``
        or more."""
        return max(self.second_highest(at_ms + k * HOUR_MS, p) for k in range(4))

    def plows_out(self, at_ms: int) -> bool:
        """Whether a dispatch was under way at ``at_ms``: a plow had left for it and
        not every plow was back."""
        return any(a <= at_ms < b for a, b in self.dispatches)

    def about(self, crossing_ms: int, call_ms: int, since_ms: int | None) -> bool:
        """Whether a call can be about a crossing: it came after the plowing that opened
        the crossing's accumulation, and it counts from before the plowing that closed
        it (a call that states a window from a later plowing is about the snow since
        then; docs/detection.md#dispatch). ``since_ms``: the window the call states,
        None for a call that states none."""
        ends = self.plowing_ends
        i = bisect_right(ends, crossing_ms)  # ends[i - 1] opened it, ends[i] closed it
        if i > 0 and call_ms < ends[i - 1]:
            return False
        return not (i < len(ends) and since_ms is not None and since_ms >= floor_hour(ends[i]))

    def crossing_peak(self, crossing_ms: int, p: SnowParams) -> float:
        """The second station's highest figure in the accumulation a crossing opened,
        until the next plowing or 12 h on (docs/detection.md#dispatch, Marginal)."""
        nxt = min((e for e in self.plowing_ends if e > crossing_ms), default=2**62)
        ends = [crossing_ms + k * HOUR_MS for k in range(13)]
        return max(self.second_highest(e, p) for e in ends if e == crossing_ms or e < nxt)

    def second_highest(self, end_ms: int, p: SnowParams) -> float:
        """The second station's new snow of the accumulation at ``end_ms`` (the figure
        that decides a 2-station call)."""
        totals = sorted(self.totals(self.reset_ms(end_ms, p), end_ms).values(), reverse=True)
        k = p.dispatch_stations - 1
        return totals[k] if len(totals) > k else 0.0


def true_crossings(truth_dir: Path, p: SnowParams | None = None) -> list[int]:
    """End-of-hour times (ms) at which the truth's new snow since the last plowing
    reached the dispatch threshold at enough stations (one per accumulation)."""
    return SnowTruth.load(truth_dir).crossings(p or SnowParams())


def since_of(t: Transition) -> int | None:
    """The start of the window a call states (``since_ms``), if it states one."""
    since = t.values.get("since_ms")
    return since if isinstance(since, int) else None


def figure_ok(figure: float, truth_cm: float) -> bool:
    """A call's station figure is right within max(2 cm, 20 %) of the truth's."""
    return abs(figure - truth_cm) <= figure_tolerance(truth_cm)


def figure_tolerance(truth_cm: float) -> float:
    return max(2.0, 0.2 * truth_cm)


def _dispatch_spans(truth: dict[str, object]) -> list[tuple[int, int]]:
    """Each dispatch from its first truth plow trip leaving the depot to its last one
    back (the trips dispatched at the same time); the end is the plowing's end."""
    by_dispatch: dict[str, tuple[int, int]] = {}
    trips = truth.get("trips") or []
    assert isinstance(trips, list)
    for trip in trips:
        at = str(trip.get("dispatched_at") or trip.get("leave_depot"))
        back = trip.get("back_at_depot")
        if back:
            left = _ms(str(trip.get("leave_depot") or at))
            a, b = by_dispatch.get(at, (left, 0))
            by_dispatch[at] = (min(a, left), max(b, _ms(str(back))))
    return list(by_dispatch.values())


def score(
    truth_dir: Path, transitions: list[tuple[int, Transition]], derived: list[Point]
) -> list[Score]:
    firings = [(d, t) for d, t in transitions if t.firing and t.category == "snow"]
    return [_score_dispatch(truth_dir, firings), *_score_faults(truth_dir, firings)]


def _score_dispatch(truth_dir: Path, firings: list[tuple[int, Transition]]) -> Score:
    s = Score("snow.dispatch")
    p = SnowParams()
    truth = SnowTruth.load(truth_dir)
    crossings = truth.crossings(p)
    fired = [(d, t) for d, t in firings if t.rule == "snow.dispatch"]
    used: set[int] = set()
    for c in crossings:
        match = next(
            (
                d
                for d, t in fired
                if d not in used
                and abs(d - c) <= MATCH_H * HOUR_MS
                and truth.about(c, d, since_of(t))
            ),
            None,
        )
        if match is None:
            s.missed += 1
        else:
            used.add(match)
            s.true_positives += 1
            s.delays_h.append(round((match - c) / HOUR_MS, 2))
    unmatched = [t for d, t in fired if d not in used]
    near = sum(1 for t in unmatched if truth.peak_after(dt_to_ms(t.event_time), p) >= NEAR_MISS_CM)
    s.false_positives = len(unmatched) - near
    s.note = f"{len(crossings)} true crossing(s); target delay ≤ 1 h"
    if near:
        s.note += f"; {near} near-miss(es), not counted false (truth ≥ {NEAR_MISS_CM:g} cm)"
    return s


def _score_faults(truth_dir: Path, firings: list[tuple[int, Transition]]) -> list[Score]:
    p = SnowParams()
    faults = []
    with (truth_dir / "faults.csv").open() as fh:
        for row in csv.DictReader(fh):
            if row["kind"] != "snow" or row["fault"] not in RULE_OF_FAULT:
                continue
            start, end = _ms(row["start"]), _ms(row["end"])
            if row["fault"] == "dropout" and end - start < p.offline_min * 60_000:
                continue
            faults.append((RULE_OF_FAULT[row["fault"]], row["device"], start, end))
    scenario = json.loads((truth_dir / "truth.json").read_text()).get("scenario", {})
    data_end = _ms(scenario["end"]) if scenario.get("end") else 2**62
    scores = {r: Score(r) for r in sorted(set(RULE_OF_FAULT.values()))}
    for rule, dev, start, end in faults:
        s = scores[rule]
        found = [
            (t.event_time.timestamp() * 1000, d)
            for d, t in firings
            if t.rule == rule
            and t.subject == dev
            and start - HOUR_MS <= t.event_time.timestamp() * 1000
            and t.event_time.timestamp() * 1000 <= end + FAULT_SLACK_H * HOUR_MS
        ]
        if found:
            s.true_positives += 1
            s.delays_h.append(round(max(0.0, (min(d for _, d in found) - start) / HOUR_MS), 2))
        else:
            s.missed += 1
    for _d, t in firings:
        sc = scores.get(t.rule)
        if sc is None:
            continue
        at = t.event_time.timestamp() * 1000
        explained = any(
            dev == t.subject and start - HOUR_MS <= at <= end + FAULT_SLACK_H * HOUR_MS
            for _r, dev, start, end in faults
        )
        if not explained and not (t.rule == "snow.offline" and at >= data_end - 2 * HOUR_MS):
            sc.false_positives += 1
    return list(scores.values())
