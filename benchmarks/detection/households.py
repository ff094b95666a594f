"""The households family of the detection battery: generated household-months.

Each scenario is a month of a made-up street of meters (``METERS`` per scenario, from
the sample town's kinds: 13/20/25 mm, L and m³ registers of 5–8 digits, hourly senders
and daily LPWA uploaders). What happens to each meter is drawn from the seed:

* leaks of 5–100 L/h (log-uniform) from a random start, until the end or for days;
* bursts, reverse flow, meter swaps, stuck registers;
* away periods (the household uses nothing for days), half of them registered in
  ``[rules.away]``, half of those written without an offset (read as JST);
* watched (見守り) households living an ordinary life (an elderly household's day:
  an afternoon nap, now and then a day out or a hospital visit, each a daytime
  silence), some with a true silence of more than 24 h.

Every message goes through ingest's :class:`~ingest.pipeline.Processor` (received at
its send time); the stored lines are read back in memory, as a RecordedSource, and the
rules backtest replays the month at a 10-minute step. Scores follow
docs/rules-water.md#battery-scoring.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import pandas as pd

from benchmarks.detection.common import (
    FamilyResult,
    family_main,
    scenario_seed,
)
from core.message import Message
from ingest.pipeline import Limits, Processor
from rules import backtest
from rules.config import RulesConfig
from rules.engine import ReplayResult
from rules.sources import RecordedSource
from rules.transitions import Status, Transition
from rules.water import WaterFamily
from sensors.registry import Meter, Registry
from simulators.scenario import Scenario, parse_scenario
from simulators.stream import Simulation

JST = timezone(timedelta(hours=9))
HOUR = 3600
DAY = 86_400
HOUR_MS = 3_600_000
STEP_S = 600
DAYS = 30
METERS = 40  # per scenario
SCENARIOS_FULL = 10  # 400 household-months
SCENARIOS_QUICK = 4  # 160 household-months
LEAK_TARGET_LPH = 12.5
HOURLY_LEAK_DEADLINE_H = 26.0
DAILY_LEAK_GRACE_H = 1.0
WATCH_SILENCE_H = 24.0
# A firing of a rule on a meter whose true event it belongs to may come from the
# event's start minus this to its end plus ``EXPLAIN_AFTER_H`` (a daily upload is late).
EXPLAIN_BEFORE_H = 1.0
EXPLAIN_AFTER_H = 30.0

DISTRICTS = ("本町", "中町", "上町", "下町", "新町", "東町")
KINDS = (  # diameter, q3 m³/h, digits, unit: the sample town's meters
    (13, 2.5, 5, "m3"),
    (13, 2.5, 6, "m3"),
    (13, 2.5, 7, "L"),
    (13, 2.5, 8, "L"),
    (20, 4.0, 6, "m3"),
    (25, 6.3, 7, "L"),
)
LEAK_RULES = ("water.leak_continuous", "water.night_flow")
WATCH_RULE = "water.watch_no_use"
FIELDS = (
    "register_l",
    "flow_lph",
    *(f"alarm_{f}" for f in ("leak", "burst", "reverse", "tamper", "dry", "low_battery")),
)


@dataclass
class Truth:
    """One true event: ``kind`` is leak, burst, reverse, swap, stuck, away (unregistered),
    away_registered, silence (a watched household's true silence), or an ordinary
    daytime absence of a watched household (nap, day_out, hospital)."""

    kind: str
    meter: str
    start: int  # Unix s
    end: int
    rate_lph: float = 0.0
    daily: bool = False


@dataclass
class Plan:
    scenario: Scenario
    registry: Registry
    away: dict[str, list[tuple[str, str]]]
    truths: list[Truth]
    watched: list[str]
    start: int
    end: int


# ------------------------------------------------------------------ generator


def _iso(t: int, naive: bool = False) -> str:
    d = datetime.fromtimestamp(t, JST)
    return d.replace(tzinfo=None).isoformat() if naive else d.isoformat()


def _hours(a: int, b: int) -> float:
    return (b - a) / HOUR


def generate(seed: int, meters: int = METERS) -> Plan:
    """One household-month scenario from ``seed`` (deterministic)."""
    rng = random.Random(seed)
    day0 = datetime(2026, 11, 1, tzinfo=JST) + timedelta(days=rng.randrange(150))
    start = int(day0.timestamp())
    end = start + DAYS * DAY
    reg_meters: dict[str, Meter] = {}
    events: list[dict[str, Any]] = []
    settings: dict[str, dict[str, Any]] = {}
    truths: list[Truth] = []
    away: dict[str, list[tuple[str, str]]] = {}
    watched: list[str] = []
    drawn = _Drawn(truths, events, away)

    def ev_time(t: int) -> datetime:
        return datetime.fromtimestamp(t, JST)

    def silent(mid: str, a: int, b: int) -> None:
        events.append(
            {
                "type": "fault",
                "device": mid,
                "fault": "silent",
                "start": ev_time(a),
                "duration_h": _hours(a, b),
            }
        )

    for k in range(meters):
        mid = f"M{k + 1:03d}"
        is_watched = rng.random() < 0.35
        if is_watched:
            diameter, q3, digits, unit = KINDS[rng.randrange(4)]
            daily = False
        else:
            diameter, q3, digits, unit = KINDS[rng.randrange(len(KINDS))]
            daily = rng.random() < 0.4
        eui = f"70B3D5E4{rng.getrandbits(32):08X}" if daily else None
        reg_meters[mid] = Meter(
            mid,
            DISTRICTS[k % len(DISTRICTS)],
            38.38,
            140.20,
            diameter,
            q3,
            digits,
            unit,  # type: ignore[arg-type]
            is_watched,
            eui,
        )
        if is_watched:
            watched.append(mid)
            settings[mid] = {"profile": "elderly", "residents": 1}
            _watched_life(rng, mid, start, end, drawn, silent)
            continue
        if diameter >= 20:
            settings[mid] = {"profile": "facility"}
        else:
            settings[mid] = {"profile": "household", "residents": rng.choice((1, 2, 2, 3, 4, 5))}
        _household_events(rng, mid, reg_meters[mid], start, end, daily, drawn)
    for t in truths:
        t.daily = reg_meters[t.meter].dev_eui is not None
    events += _radio_losses(seed, reg_meters, start, end)
    scenario = parse_scenario(
        {
            "name": f"households-{seed}",
            "seed": seed % 2**62,
            "start": ev_time(start),
            "end": ev_time(end),
            "devices": {"stations": "none", "plows": "none", "meters": "all"},
            "meter_settings": settings,
            "events": events,
        },
        f"households-{seed}",
    )
    registry = Registry({}, reg_meters, {}, {})
    return Plan(scenario, registry, away, truths, watched, start, end)


@dataclass(frozen=True, slots=True)
class _Drawn:
    """What the draws add to: the truths, the scenario's events, the away periods."""

    truths: list[Truth]
    events: list[dict[str, Any]]
    away: dict[str, list[tuple[str, str]]]


def _household_events(  # noqa: PLR0917 - one meter's draw
    rng: random.Random,
    mid: str,
    meter: Meter,
    start: int,
    end: int,
    daily: bool,
    drawn: _Drawn,
) -> None:
    truths, events, away = drawn.truths, drawn.events, drawn.away

    def at(t: int) -> datetime:
        return datetime.fromtimestamp(t, JST)

    main = rng.random()
    if main < 0.4:  # a leak
        rate = round(math.exp(rng.uniform(math.log(5.0), math.log(100.0))), 1)
        s = start + rng.randrange(DAY, (DAYS - 3) * DAY, 60)
        e = end if rng.random() < 0.6 else min(end, s + rng.randrange(3 * DAY, 12 * DAY, 60))
        events.append(
            {
                "type": "leak",
                "meter": mid,
                "start": at(s),
                "duration_h": _hours(s, e),
                "rate_lph": rate,
            }
        )
        truths.append(Truth("leak", mid, s, e, rate))
    elif main < 0.55:  # away: nobody uses water for days
        s = start + rng.randrange(2 * DAY, (DAYS - 5) * DAY, 3600)
        e = min(end, s + rng.randrange(3 * DAY, 10 * DAY, 3600))
        events.append(
            {
                "type": "fault",
                "device": mid,
                "fault": "silent",
                "start": at(s),
                "duration_h": _hours(s, e),
            }
        )
        if rng.random() < 0.5:
            naive = rng.random() < 0.5
            away[mid] = [(_iso(s - 2 * HOUR, naive), _iso(e + 2 * HOUR, naive))]
            truths.append(Truth("away_registered", mid, s, e))
        else:
            truths.append(Truth("away", mid, s, e))
    elif main < 0.62:  # the register stops turning
        s = start + rng.randrange(2 * DAY, (DAYS - 5) * DAY, 60)
        e = min(end, s + rng.randrange(4 * DAY, 12 * DAY, 3600))
        events.append(
            {
                "type": "fault",
                "device": mid,
                "fault": "stuck",
                "start": at(s),
                "duration_h": _hours(s, e),
            }
        )
        truths.append(Truth("stuck", mid, s, e))
    if rng.random() < 0.1:  # a burst pipe: well above 20 % of Q3
        s = start + rng.randrange(DAY, (DAYS - 2) * DAY, 60)
        e = s + rng.randrange(int(1.5 * HOUR), 6 * HOUR, 60)
        rate = round(rng.uniform(1.5, 4.0) * 0.2 * meter.q3_m3h * 1000.0)
        events.append(
            {
                "type": "burst",
                "meter": mid,
                "start": at(s),
                "duration_h": _hours(s, e),
                "rate_lph": rate,
            }
        )
        truths.append(Truth("burst", mid, s, e, rate))
    if rng.random() < 0.08:  # backflow
        s = start + rng.randrange(DAY, (DAYS - 2) * DAY, 60)
        e = s + rng.randrange(2 * HOUR, 8 * HOUR, 60)
        rate = round(rng.uniform(5.0, 60.0), 1)
        events.append(
            {
                "type": "fault",
                "device": mid,
                "fault": "reverse",
                "start": at(s),
                "duration_h": _hours(s, e),
                "rate_lph": rate,
            }
        )
        truths.append(Truth("reverse", mid, s, e, rate))
    if rng.random() < 0.08:  # a new meter
        s = start + rng.randrange(DAY, (DAYS - 2) * DAY, 60)
        after = round(rng.uniform(0.0, 30.0), 1)
        events.append(
            {
                "type": "fault",
                "device": mid,
                "fault": "swap",
                "start": at(s),
                "register_after_l": after,
            }
        )
        truths.append(Truth("swap", mid, s, s))


def _radio_losses(
    seed: int, meters: dict[str, Meter], start: int, end: int
) -> list[dict[str, Any]]:
    """Half of the hourly senders lose single readings on the radio (0.5–3 % of them):
    an ``offline`` hour around the reading. A daily uploader's backlog is re-sent, so
    only hourly senders lose data. Drawn from their own stream, so the rest of the
    scenario does not depend on them."""
    rng = random.Random(seed ^ 0x5EED_1055)
    out: list[dict[str, Any]] = []
    for mid, meter in meters.items():
        if meter.dev_eui is not None or rng.random() < 0.5:
            continue
        loss = rng.uniform(0.005, 0.03)
        for k in range(1, (end - start) // HOUR):
            if rng.random() < loss:
                out.append(
                    {
                        "type": "fault",
                        "device": mid,
                        "fault": "offline",
                        "start": datetime.fromtimestamp(start + k * HOUR - 600, JST),
                        "duration_h": 1200 / HOUR,
                    }
                )
    return out


def _watched_life(  # noqa: PLR0917 - one watched household's month
    rng: random.Random,
    mid: str,
    start: int,
    end: int,
    drawn: _Drawn,
    silent: Any,
) -> None:
    """An elderly household's ordinary month, and perhaps a true silence."""
    truths, events, away = drawn.truths, drawn.events, drawn.away
    quiet: tuple[int, int] | None = None
    r = rng.random()
    if r < 0.4:  # a true silence of more than a day (a fall, a sudden illness)
        s = start + rng.randrange(2 * DAY, (DAYS - 3) * DAY, 60)
        e = min(end, s + rng.randrange(24 * HOUR, 96 * HOUR, 60))
        silent(mid, s, e)
        truths.append(Truth("silence", mid, s, e))
        quiet = (s - DAY, e + DAY)
    elif r < 0.5:  # a stay with family, registered as away
        s = start + rng.randrange(2 * DAY, (DAYS - 5) * DAY, 3600)
        e = s + rng.randrange(2 * DAY, 5 * DAY, 3600)
        silent(mid, s, e)
        away[mid] = [(_iso(s - HOUR), _iso(e + HOUR))]
        truths.append(Truth("away_registered", mid, s, e))
        quiet = (s - DAY, e + DAY)
    elif r < 0.6:  # a small leak in a watched household
        rate = round(math.exp(rng.uniform(math.log(5.0), math.log(60.0))), 1)
        s = start + rng.randrange(DAY, (DAYS - 3) * DAY, 60)
        events.append(
            {
                "type": "leak",
                "meter": mid,
                "start": datetime.fromtimestamp(s, JST),
                "duration_h": _hours(s, end),
                "rate_lph": rate,
            }
        )
        truths.append(Truth("leak", mid, s, end, rate))
    for d in range(DAYS):
        midnight = start + d * DAY
        if quiet is not None and quiet[0] <= midnight <= quiet[1]:
            continue
        x = rng.random()
        if x < 0.12:  # a day out: leaves in the morning, back in the evening
            a = midnight + rng.randrange(int(7.5 * HOUR), 10 * HOUR, 60)
            b = a + rng.randrange(7 * HOUR, 12 * HOUR, 60)
            kind = "day_out"
        elif x < 0.17:  # a hospital visit: a morning or an afternoon
            a = midnight + rng.randrange(8 * HOUR, 14 * HOUR, 60)
            b = a + rng.randrange(3 * HOUR, 6 * HOUR, 60)
            kind = "hospital"
        elif x < 0.75:  # an afternoon nap
            a = midnight + rng.randrange(12 * HOUR, 14 * HOUR, 60)
            b = a + rng.randrange(90 * 60, 3 * HOUR, 60)
            kind = "nap"
        else:
            continue
        b = min(b, end)
        if a < b:
            silent(mid, a, b)
            truths.append(Truth(kind, mid, a, b))


# ------------------------------------------------------------------ running


def _parse_line(line: str) -> tuple[str, dict[str, float], int] | None:
    """A ``water_meter`` line from the Processor → (device, numeric fields, time ms)."""
    head, _, rest = line.partition(" ")
    if not head.startswith("water_meter,"):
        return None
    fields_s, _, ts = rest.rpartition(" ")
    tags = dict(kv.split("=", 1) for kv in head.split(",")[1:])
    vals: dict[str, float] = {}
    for kv in fields_s.split(","):
        k, _, v = kv.partition("=")
        if v in ("true", "false"):
            vals[k] = 1.0 if v == "true" else 0.0
        else:
            vals[k] = float(v.rstrip("i"))
    return tags["device"], vals, int(ts)


def stored_frame(plan: Plan) -> tuple[pd.DataFrame, int]:
    """Every message through ingest's Processor; the stored points as the rules read them
    (``rules.sources.normalise``'s shape). Returns the frame and the dead letters."""
    sim = Simulation(plan.scenario, plan.registry)
    proc = Processor(plan.registry, Limits())
    rows: dict[str, list[Any]] = {c: [] for c in ("time", "arrival", "device", *FIELDS)}
    dead = 0
    for msg in sim.messages():
        res = proc.process(Message(msg.topic, msg.payload, msg.time))
        if res.reason is not None:
            dead += 1
        for line in res.lines:
            parsed = _parse_line(line)
            if parsed is None:
                continue
            dev, vals, t = parsed
            rows["time"].append(t)
            rows["arrival"].append(t + int(vals.get("lag_s", 0.0) * 1000))
            rows["device"].append(dev)
            for f in FIELDS:
                rows[f].append(vals.get(f, math.nan))
    df = pd.DataFrame(rows)
    df["time"] = df["time"].astype("int64")
    df["arrival"] = df["arrival"].astype("int64")
    return df, dead


def replay(plan: Plan, df: pd.DataFrame, rcfg: RulesConfig) -> ReplayResult:
    return backtest.run(
        plan.registry,
        rcfg,
        RecordedSource({"water_meter": df}),
        backtest.Steps(plan.start * 1000, (plan.end + DAY) * 1000, STEP_S * 1000),
        families=[WaterFamily],
    )


def rules_config(plan: Plan) -> RulesConfig:
    return RulesConfig.model_validate(
        {"away": {m: [list(x) for x in v] for m, v in plan.away.items()}}
    )


# ------------------------------------------------------------------ scoring


@dataclass
class _Firing:
    rule: str
    meter: str
    event_ms: int
    detected_ms: int
    message: str
    message_en: str


@dataclass
class Tally:
    """What the battery counts, over all scenarios."""

    home_months: float = 0.0
    watched_months: float = 0.0
    scenarios: int = 0
    dead: int = 0
    # rule label → hits, misses, delays (h), false firings
    hit: dict[str, int] = field(default_factory=dict)
    miss: dict[str, int] = field(default_factory=dict)
    false: dict[str, int] = field(default_factory=dict)
    delays: dict[str, list[float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, label: str, ok: bool, delay_h: float | None = None) -> None:
        d = self.hit if ok else self.miss
        d[label] = d.get(label, 0) + 1
        if ok and delay_h is not None:
            self.delays.setdefault(label, []).append(delay_h)

    def add_false(self, label: str, n: int = 1) -> None:
        self.false[label] = self.false.get(label, 0) + n


def _firings(result: ReplayResult, end_s: int) -> list[_Firing]:
    out = []
    for step, t in result.transitions:
        if t.status is not Status.FIRING or t.category != "water":
            continue
        ev = _ms(t)
        if ev > end_s * 1000:
            continue  # after the month (every meter looks stale then)
        out.append(_Firing(t.rule, t.subject, ev, step, t.message, t.message_en or ""))
    return out


def _ms(t: Transition) -> int:
    return int(t.event_time.timestamp() * 1000)


def _leak_deadline_ms(tr: Truth, arrivals: dict[str, dict[int, int]]) -> int | None:
    """docs/rules-water.md#battery-scoring: hourly senders 26 h after the start; daily
    uploaders 1 h after the upload that holds 24 whole hours of the leak."""
    if not tr.daily:
        return int((tr.start + HOURLY_LEAK_DEADLINE_H * HOUR) * 1000)
    first_full = -(-tr.start // HOUR) * HOUR
    t24 = (first_full + 24 * HOUR) * 1000
    arr = arrivals.get(tr.meter, {}).get(t24)
    if arr is None:
        return None  # never uploaded inside the run: not scored
    return arr + int(DAILY_LEAK_GRACE_H * HOUR_MS)


def score(plan: Plan, result: ReplayResult, df: pd.DataFrame, tally: Tally) -> None:  # noqa: PLR0912, PLR0915 - one pass over the truth
    fired = _firings(result, plan.end)
    used: set[int] = set()
    arrivals: dict[str, dict[int, int]] = {}
    for dev, g in df.groupby("device"):
        arrivals[str(dev)] = dict(zip(g["time"].tolist(), g["arrival"].tolist(), strict=True))

    def find(rules: tuple[str, ...], tr: Truth, until_ms: int | None) -> _Firing | None:
        lo = (tr.start - EXPLAIN_BEFORE_H * HOUR) * 1000
        hi = until_ms if until_ms is not None else (tr.end + EXPLAIN_AFTER_H * HOUR) * 1000
        for k, f in enumerate(fired):
            if f.rule in rules and f.meter == tr.meter and f.event_ms >= lo and f.detected_ms <= hi:
                used.add(k)
                return f
        return None

    def explain(rules: tuple[str, ...], tr: Truth) -> None:
        lo = (tr.start - EXPLAIN_BEFORE_H * HOUR) * 1000
        hi = (tr.end + EXPLAIN_AFTER_H * HOUR) * 1000
        for k, f in enumerate(fired):
            if f.rule in rules and f.meter == tr.meter and lo <= f.event_ms <= hi:
                used.add(k)

    for tr in plan.truths:
        if tr.kind == "leak":
            deadline = _leak_deadline_ms(tr, arrivals)
            label = "leak ≥ 12.5 L/h" if tr.rate_lph >= LEAK_TARGET_LPH else "leak < 12.5 L/h"
            label += " (daily)" if tr.daily else " (hourly)"
            if (
                deadline is None
                or deadline > (tr.end + HOUR) * 1000 + (DAY if tr.daily else 0) * 1000
            ):
                explain((*LEAK_RULES, "water.flag_leak"), tr)
                continue  # the leak ended (or the run did) before it could be called
            f = find(LEAK_RULES, tr, deadline)
            tally.add(
                label,
                f is not None,
                None if f is None else (f.detected_ms / 1000 - tr.start) / HOUR,
            )
            if f is None and tr.rate_lph >= LEAK_TARGET_LPH:
                tally.notes.append(
                    f"missed leak {plan.scenario.name}/{tr.meter} {tr.rate_lph} L/h "
                    f"{'daily' if tr.daily else 'hourly'} from {_iso(tr.start)}"
                )
            explain((*LEAK_RULES, "water.flag_leak"), tr)
        elif tr.kind == "burst":
            f = find(("water.burst",), tr, None)
            tally.add(
                "burst",
                f is not None,
                None if f is None else (f.detected_ms / 1000 - tr.start) / HOUR,
            )
            explain(("water.burst", "water.flag_burst", "water.leak_continuous"), tr)
        elif tr.kind == "reverse":
            # Backflow smaller than the hour's use leaves the register moving forwards:
            # the register rule cannot see it, the meter's own alarm can.
            f = find(("water.reverse",), tr, None)
            tally.add(
                "reverse flow (register: water.reverse)",
                f is not None,
                None if f is None else (f.detected_ms / 1000 - tr.start) / HOUR,
            )
            either = f or find(("water.flag_reverse",), tr, None)
            tally.add(
                "reverse flow (register or meter alarm)",
                either is not None,
                None if either is None else (either.detected_ms / 1000 - tr.start) / HOUR,
            )
            explain(("water.reverse", "water.flag_reverse"), tr)
        elif tr.kind == "swap":
            f = find(("water.swap",), tr, None)
            tally.add(
                "meter swap",
                f is not None,
                None if f is None else (f.detected_ms / 1000 - tr.start) / HOUR,
            )
        elif tr.kind in ("stuck", "away"):
            label = "stuck meter" if tr.kind == "stuck" else "away, not registered"
            if tr.end - tr.start < 3 * DAY + 2 * HOUR:
                explain(("water.stuck",), tr)
                continue
            f = find(("water.stuck",), tr, None)
            tally.add(
                label,
                f is not None,
                None if f is None else (f.detected_ms / 1000 - tr.start) / HOUR,
            )
            if f is not None and tr.kind == "away":
                both = "不在" in f.message and ("停止" in f.message or "固着" in f.message)
                tally.add("no-use notice names away and stopped", both)
            explain(("water.stuck",), tr)
        elif tr.kind == "away_registered":
            lo, hi = tr.start * 1000, (tr.end + HOUR) * 1000
            n = 0
            for k, f in enumerate(fired):
                if (
                    f.meter == tr.meter
                    and f.rule in ("water.stuck", WATCH_RULE)
                    and lo <= f.detected_ms <= hi
                ):
                    used.add(k)
                    n += 1
                    # false for its rule too: watch-over's rate counts it
                    tally.add_false("watch" if f.rule == WATCH_RULE else f.rule)
            tally.add("registered away: quiet", n == 0)
            if n:
                tally.add_false("registered away (any rule)", n)
        elif tr.kind == "silence":
            long_enough = tr.end - tr.start >= WATCH_SILENCE_H * HOUR
            f = find((WATCH_RULE,), tr, tr.end * 1000) if long_enough else None
            if long_enough:
                tally.add(
                    "watch: 24 h silence",
                    f is not None,
                    None if f is None else (f.detected_ms / 1000 - tr.start) / HOUR,
                )
                if f is None:
                    tally.notes.append(
                        f"missed silence {plan.scenario.name}/{tr.meter} {_iso(tr.start)} "
                        f"for {_hours(tr.start, tr.end):.0f} h"
                    )
            explain((WATCH_RULE, "water.stuck"), tr)
    # what no truth explains
    causes = [t for t in plan.truths if t.kind in ("day_out", "hospital", "nap")]
    for k, f in enumerate(fired):
        if k in used:
            continue
        if f.rule in LEAK_RULES:
            tally.add_false("leak")
        elif f.rule == WATCH_RULE:
            tally.add_false("watch")
            why = [
                c.kind
                for c in causes
                if c.meter == f.meter
                and c.start * 1000 - 12 * HOUR_MS <= f.event_ms <= c.end * 1000 + 12 * HOUR_MS
            ]
            tally.add_false("watch: near " + (",".join(sorted(set(why))) or "an ordinary day"))
        else:
            tally.add_false(f.rule)


# ------------------------------------------------------------------ the family


def _pct(a: int, b: int) -> float:
    return 100.0 * a / b if b else 100.0


def _dist(d: list[float]) -> str:
    if not d:
        return "–"
    s = sorted(d)
    p90 = s[min(len(s) - 1, math.ceil(0.9 * len(s)) - 1)]
    return f"median {statistics.median(s):.1f} h, p90 {p90:.1f} h, max {s[-1]:.1f} h"


def scenarios(base_seed: int, quick: bool) -> Iterator[Plan]:
    for i in range(SCENARIOS_QUICK if quick else SCENARIOS_FULL):
        yield generate(scenario_seed(base_seed, "households", i))


def run(base_seed: int, *, quick: bool) -> FamilyResult:
    tally = Tally()
    for plan in scenarios(base_seed, quick):
        df, dead = stored_frame(plan)
        result = replay(plan, df, rules_config(plan))
        score(plan, result, df, tally)
        tally.scenarios += 1
        tally.dead += dead
        tally.home_months += len(plan.registry.meters) * DAYS / 30.0
        tally.watched_months += len(plan.watched) * DAYS / 30.0
    return _result(tally)


def _rule_of(label: str) -> str | None:
    """The rule (or rule group: leak, watch) a tally label scores."""
    if label.startswith("leak"):
        return "leak"
    return {
        "burst": "water.burst",
        "meter swap": "water.swap",
        "reverse flow (register: water.reverse)": "water.reverse",
        "stuck meter": "water.stuck",
        "away, not registered": "water.stuck",
        "watch: 24 h silence": "watch",
    }.get(label)


def _result(t: Tally) -> FamilyResult:
    lines = [
        f"households: {t.scenarios} scenarios, {t.home_months:.0f} home-months "
        f"({t.watched_months:.0f} watched), {t.dead} dead letters",
        f"  {'event':<40} {'found':>6} {'of':>4} {'recall':>7}  delay",
    ]
    labels = sorted(set(t.hit) | set(t.miss))
    for lab in labels:
        h, m = t.hit.get(lab, 0), t.miss.get(lab, 0)
        lines.append(
            f"  {lab:<40} {h:>6} {h + m:>4} {_pct(h, h + m):>6.0f}%  {_dist(t.delays.get(lab, []))}"
        )
    # precision per rule: its true firings against its true + false ones
    true_by_rule: dict[str, int] = {}
    for lab, n in t.hit.items():
        rule = _rule_of(lab)
        if rule is not None:
            true_by_rule[rule] = true_by_rule.get(rule, 0) + n
    causes = {r for r in t.false if r.startswith(("watch:", "registered away"))}
    for rule in sorted(set(true_by_rule) | (set(t.false) - causes)):
        tp, fp = true_by_rule.get(rule, 0), t.false.get(rule, 0)
        lines.append(f"  {rule:<40} precision {_pct(tp, tp + fp):>5.0f}% ({tp} true, {fp} false)")
    for rule in sorted(causes):
        lines.append(f"  false {rule:<34} {t.false[rule]:>4}")
    leak_hit = sum(v for k, v in t.hit.items() if k.startswith("leak ≥"))
    leak_all = leak_hit + sum(v for k, v in t.miss.items() if k.startswith("leak ≥"))
    watch_hit = t.hit.get("watch: 24 h silence", 0)
    watch_all = watch_hit + t.miss.get("watch: 24 h silence", 0)
    summary = {
        "leak_recall_pct": _pct(leak_hit, leak_all),
        "leak_false_per_30": t.false.get("leak", 0) / t.home_months * 30.0
        if t.home_months
        else 0.0,
        "watch_recall_pct": _pct(watch_hit, watch_all),
        "watch_false_per_30": t.false.get("watch", 0) / t.watched_months * 30.0
        if t.watched_months
        else 0.0,
    }
    for key, label in (
        ("stuck_recall_pct", "stuck meter"),
        ("away_notice_pct", "away, not registered"),
        ("away_names_both_pct", "no-use notice names away and stopped"),
        ("away_registered_quiet_pct", "registered away: quiet"),
    ):
        h, m = t.hit.get(label, 0), t.miss.get(label, 0)
        summary[key] = _pct(h, h + m)
    lines.append(
        f"  households: leak {summary['leak_recall_pct']:.0f}% ({leak_hit}/{leak_all}), "
        f"{summary['leak_false_per_30']:.1f} false per 30 home-months; watch "
        f"{summary['watch_recall_pct']:.0f}% ({watch_hit}/{watch_all}), "
        f"{summary['watch_false_per_30']:.1f} false per 30 watched home-months"
    )
    return FamilyResult(lines, summary, t.scenarios, notes=[f"  {n}" for n in t.notes[:20]])


def main(argv: list[str] | None = None) -> int:
    """This family alone: ``python -m benchmarks.detection.households [--quick] [--tune]``."""
    return family_main("households", run, argv)


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["Plan", "Tally", "generate", "replay", "rules_config", "run", "score", "stored_frame"]
