"""Plow family against the truth: segments plowed, idle stops, silences, work time.

Truth files (scenarios/README.md "Ground truth"): ``plow_segments.csv`` (blade-down
passes), ``truth.json`` (dispatches; trips with their planned segments and idle stops),
``faults.csv`` (gps_gap, invalid_fix). All times UTC, intervals ``[start, end)``.

* ``plow.segment``: per truth dispatch and segment (planned, passed or reported), the
  segment agrees when we reported it plowed exactly when the truth has a blade-down
  pass, and at a time inside the passes (first start … last end + 5 min). TP = both
  plowed, FP = reported without a pass, missed = a pass not reported (or at the wrong
  time). The note gives the agreement share (target ≥ 95 %).
* ``plow.idle``: truth idle stops longer than ``idle_min`` must fire during the stop;
  a firing outside every truth stop (of any length) is a false positive.
* ``plow.silent``: GPS gaps of at least ``silent_min`` during a trip must fire.
* ``plow.work_time``: 除雪作業時間 per dispatch (start → last priority-1 segment
  plowed) from our ``dispatch`` points against the truth's passes; within 10 min
  counts as a TP. Segment priorities come from our ``segment_status`` tags.
"""

from __future__ import annotations

import csv
import json
from datetime import datetime
from pathlib import Path
from typing import Any

from rules.model import Point
from rules.params import PlowParams
from rules.schema import DISPATCH, SEGMENT_STATUS
from rules.scoring import Score
from rules.transitions import Status, Transition

_TIME_SLACK_MS = 5 * 60_000  # reported a little after the pass's last fix: chunking, steps
_WORK_TOLERANCE_S = 600
_MATCH_SLACK_MS = 2 * 60_000


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def _windows(truth: dict[str, Any]) -> list[tuple[int, int, set[str]]]:
    """(start, end, planned segments) per truth dispatch; end = the last plow back."""
    out = []
    for d in truth.get("dispatches", []):
        at = _ms(d["at"])
        trips = [t for t in truth.get("trips", []) if _ms(t["dispatched_at"]) == at]
        end = max((_ms(t["back_at_depot"]) for t in trips), default=at + 12 * 3_600_000)
        planned = {s for t in trips for s in t.get("segments", [])}
        out.append((at, end, planned))
    return sorted(out)


def score(
    truth_dir: Path, transitions: list[tuple[int, Transition]], derived: list[Point]
) -> list[Score]:
    truth = json.loads((truth_dir / "truth.json").read_text(encoding="utf-8"))
    p = PlowParams()
    with (truth_dir / "plow_segments.csv").open(encoding="utf-8") as f:
        passes = [(r["segment_id"], _ms(r["start"]), _ms(r["end"])) for r in csv.DictReader(f)]
    with (truth_dir / "faults.csv").open(encoding="utf-8") as f:
        faults = [r for r in csv.DictReader(f) if r["kind"] == "plow"]
    status = [pt for pt in derived if pt.measurement == SEGMENT_STATUS]
    priority = {pt.tags["segment"]: pt.tags.get("priority", "") for pt in status}
    windows = _windows(truth)
    return [
        _segments(windows, passes, status),
        _idle(truth, transitions, p.idle_min),
        _silent(truth, faults, transitions, p.silent_min),
        _work_time(windows, passes, derived, priority),
    ]


def _segments(
    windows: list[tuple[int, int, set[str]]],
    passes: list[tuple[str, int, int]],
    status: list[Point],
) -> Score:
    s = Score("plow.segment")
    agree = total = wrong_time = 0
    for i, (start, end, planned) in enumerate(windows):
        # a window reaches to the next dispatch (late reports still belong to it)
        upto = windows[i + 1][0] if i + 1 < len(windows) else end + 6 * 3_600_000
        ours: dict[str, list[int]] = {}
        for pt in status:
            if start <= pt.time_ms < upto:
                ours.setdefault(pt.tags["segment"], []).append(pt.time_ms)
        theirs: dict[str, list[tuple[int, int]]] = {}
        for seg, a, b in passes:
            if start <= a < upto:
                theirs.setdefault(seg, []).append((a, b))
        for seg in sorted(planned | set(ours) | set(theirs)):
            total += 1
            t_pass, o_times = theirs.get(seg), ours.get(seg)
            if t_pass and o_times:
                lo = min(a for a, _ in t_pass)
                hi = max(b for _, b in t_pass) + _TIME_SLACK_MS
                if any(lo <= t <= hi for t in o_times):
                    agree += 1
                    s.true_positives += 1
                    s.delays_h.append((min(o_times) - max(b for _, b in t_pass)) / 3.6e6)
                else:
                    wrong_time += 1
                    s.missed += 1
            elif t_pass:
                s.missed += 1
            elif o_times:
                s.false_positives += 1
            else:
                agree += 1  # planned, neither plowed
    share = agree / total if total else 1.0
    s.note = f"agreement {share:.1%} ({agree}/{total})" + (
        f", {wrong_time} at the wrong time" if wrong_time else ""
    )
    return s


def _firings(transitions: list[tuple[int, Transition]], rule: str) -> list[tuple[int, str, int]]:
    """(detected at, subject, event time) of a rule's firings."""
    return [
        (now, t.subject, int(t.event_time.timestamp() * 1000))
        for now, t in transitions
        if t.rule == rule and t.status is Status.FIRING
    ]


def _idle(truth: dict[str, Any], transitions: list[tuple[int, Transition]], idle_min: int) -> Score:
    s = Score("plow.idle")
    stops = [
        (trip["plow"], _ms(i["start"]), _ms(i["end"]))
        for trip in truth.get("trips", [])
        for i in trip.get("idle", [])
    ]
    fired = _firings(transitions, "plow.idle")
    used: set[int] = set()
    for plow, a, b in stops:
        hits = [
            k
            for k, (_now, subj, ev) in enumerate(fired)
            if subj == plow and a <= ev <= b + _MATCH_SLACK_MS
        ]
        if hits:
            used.update(hits)
            if b - a > idle_min * 60_000:
                s.true_positives += 1
                s.delays_h.append((fired[hits[0]][0] - a) / 3.6e6)
        elif b - a > idle_min * 60_000 + _MATCH_SLACK_MS:
            s.missed += 1
    s.false_positives = len(fired) - len(used)
    short = sum(1 for _p, a, b in stops if b - a <= idle_min * 60_000)
    s.note = f"{len(stops)} stops in the truth, {short} not longer than {idle_min} min"
    return s


def _silent(
    truth: dict[str, Any],
    faults: list[dict[str, str]],
    transitions: list[tuple[int, Transition]],
    silent_min: int,
) -> Score:
    s = Score("plow.silent")
    trips = [
        (t["plow"], _ms(t["leave_depot"]), _ms(t["back_at_depot"])) for t in truth.get("trips", [])
    ]
    gaps = [
        (f["device"], _ms(f["start"]), _ms(f["end"]))
        for f in faults
        if f["fault"] == "gps_gap"
        and any(p == f["device"] and a <= _ms(f["start"]) < b for p, a, b in trips)
    ]
    fired = _firings(transitions, "plow.silent")
    used: set[int] = set()
    for plow, a, b in gaps:
        hits = [
            k
            for k, (_now, subj, ev) in enumerate(fired)
            if subj == plow and a <= ev <= b + _MATCH_SLACK_MS
        ]
        used.update(hits)
        if b - a >= silent_min * 60_000:
            if hits:
                s.true_positives += 1
                s.delays_h.append((fired[hits[0]][0] - a) / 3.6e6)
            else:
                s.missed += 1
    s.false_positives = len(fired) - len(used)
    s.note = f"{len(gaps)} GPS gaps during trips"
    return s


def _work_time(
    windows: list[tuple[int, int, set[str]]],
    passes: list[tuple[str, int, int]],
    derived: list[Point],
    priority: dict[str, str],
) -> Score:
    s = Score("plow.work_time")
    dispatch = sorted(
        (pt for pt in derived if pt.measurement == DISPATCH), key=lambda pt: pt.time_ms
    )
    notes = []
    for i, (start, end, _planned) in enumerate(windows):
        upto = windows[i + 1][0] if i + 1 < len(windows) else end + 6 * 3_600_000
        prio_ends = [b for seg, a, b in passes if start <= a < upto and priority.get(seg) == "1"]
        ours = [pt for pt in dispatch if start - 600_000 <= pt.fields["started_s"] * 1000 < upto]
        if not prio_ends:
            continue
        true_s = (max(prio_ends) - start) / 1000
        if not ours:
            s.missed += 1
            notes.append(f"{true_s / 60:.0f}/– min")
            continue
        got = ours[-1].fields["work_time_s"]
        # our dispatch starts when the first plow leaves the depot, the truth's at the
        # call: compare both from the truth's call time
        got_from_call = got + ours[-1].fields["started_s"] - start / 1000
        ok = abs(got_from_call - true_s) <= _WORK_TOLERANCE_S
        s.true_positives += ok
        s.missed += not ok
        notes.append(f"{true_s / 60:.0f}/{got_from_call / 60:.0f} min")
    s.note = "truth/ours: " + ", ".join(notes) if notes else "no priority passes"
    return s
