"""Scoring the water family against a scenario's ground truth (scenarios/README.md,
"Ground truth": ``leaks.csv``, ``faults.csv``, ``truth.json``).

Each truth interval (a leak, a burst, an injected meter fault) expects a firing of one
rule for that meter, with an event time from shortly before the interval's start to
``MATCH_SLACK_H`` after its end (a daily uploader's data comes a day late; a stuck
meter is only recognised after days). A firing that matches nothing is a false
positive; firings after the scenario's end (the backtest runs a day past it, and every
meter then looks stale) are not counted. Delay = detection (evaluation step) − start.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from rules.model import Point
from rules.scoring import Score
from rules.transitions import Status, Transition

HOUR_MS = 3_600_000
MATCH_SLACK_H = 30.0
EARLY_H = 1.0
LEAK_TARGET_LPH = 12.5
NIGHT_LEAK_MIN_H = 4 * 24.0  # the detection target (docs/domain.md#continuous-flow-leak)

FAULT_RULE = {
    "reverse": "water.reverse",
    "stuck": "water.stuck",
    "offline": "water.stale",
    "supply_cut": "water.flag_dry",
    "swap": "water.swap",
}
RULES = (
    "water.leak_continuous",
    "water.night_flow",
    "water.burst",
    "water.reverse",
    "water.swap",
    "water.stuck",
    "water.stale",
    "water.watch_no_use",
    "water.watch_continuous",
    "water.flag_leak",
    "water.flag_burst",
    "water.flag_reverse",
    "water.flag_tamper",
    "water.flag_dry",
    "water.flag_low_battery",
)


@dataclass
class _Truth:
    rule: str
    meter: str
    start_ms: int
    end_ms: int
    note: str = ""


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def _truths(truth_dir: Path) -> tuple[list[_Truth], int]:
    info = json.loads((truth_dir / "truth.json").read_text(encoding="utf-8"))
    end_ms = _ms(info["scenario"]["end"]) if "end" in info.get("scenario", {}) else 2**62
    meters = info.get("meters", {})
    out: list[_Truth] = []
    with (truth_dir / "leaks.csv").open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            start = _ms(row["start"])
            end = _ms(row["end"]) if row["end"] else end_ms
            rate = float(row["rate_lph"])
            if row["kind"] == "burst":
                out.append(_Truth("water.burst", row["meter"], start, end))
            else:
                note = "" if rate >= LEAK_TARGET_LPH else "below target"
                out.append(_Truth("water.leak_continuous", row["meter"], start, end, note))
                # three nights running, evaluated at 07:00: only a leak that lasts that
                # long inside the scenario can be expected to raise it
                if min(end, end_ms) - start >= NIGHT_LEAK_MIN_H * HOUR_MS:
                    out.append(_Truth("water.night_flow", row["meter"], start, end, note))
    with (truth_dir / "faults.csv").open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row["kind"] != "water" or row["source"] != "scenario":
                continue
            start = _ms(row["start"])
            end = _ms(row["end"]) if row["end"] else end_ms
            fault = row["fault"]
            rule = FAULT_RULE.get(fault)
            if fault == "flag":
                rule = "water.flag_" + row["detail"].partition("=")[2]
            elif fault == "silent" and meters.get(row["device"], {}).get("watched"):
                rule = "water.watch_no_use"
            if rule is not None:
                out.append(_Truth(rule, row["device"], start, end))
    return out, end_ms


def _explained(t: Transition, truths: list[_Truth]) -> bool:
    ev = int(t.event_time.timestamp() * 1000)
    return any(
        x.meter == t.subject
        and x.start_ms - EARLY_H * HOUR_MS <= ev <= x.end_ms + MATCH_SLACK_H * HOUR_MS
        for x in truths
    )


def score(
    truth_dir: Path, transitions: list[tuple[int, Transition]], derived: list[Point]
) -> list[Score]:
    truths, end_ms = _truths(truth_dir)
    firings = [
        (step, t)
        for step, t in transitions
        if t.category == "water"
        and t.status is Status.FIRING
        and int(t.event_time.timestamp() * 1000) <= end_ms
    ]
    rows: list[Score] = []
    for rule in RULES:
        mine = [x for x in truths if x.rule == rule]
        fired = [(s, t) for s, t in firings if t.rule == rule]
        used: set[int] = set()
        sc = Score(rule)
        notes = []
        for tr in mine:
            hit = None
            for k, (_step, t) in enumerate(fired):
                ev = int(t.event_time.timestamp() * 1000)
                if (
                    k not in used
                    and t.subject == tr.meter
                    and tr.start_ms - EARLY_H * HOUR_MS <= ev <= tr.end_ms + MATCH_SLACK_H * HOUR_MS
                ):
                    hit = k
                    break
            if hit is None:
                sc.missed += 1
                notes.append(f"missed {tr.meter}{' (' + tr.note + ')' if tr.note else ''}")
                continue
            used.add(hit)
            # Later firings for the same truth interval (a flapping alert) are not FPs
            # of another event, but are not hidden either: they count as FP below.
            sc.true_positives += 1
            sc.delays_h.append((fired[hit][0] - tr.start_ms) / HOUR_MS)
        # A device flag or a second rule firing on a meter inside another truth event of
        # that meter (the meter's own reverse alarm during reverse flow) is explained.
        fps = [t for k, (_s, t) in enumerate(fired) if k not in used and not _explained(t, truths)]
        sc.false_positives = len(fps)
        if fps:
            notes.append("FP " + ",".join(sorted({t.subject for t in fps})))
        if not mine and not fired:
            continue
        sc.note = "; ".join(notes)
        rows.append(sc)
    return rows


__all__ = ["score"]
