"""検針 (meter reading) for the billing system: one row per meter and reading date.

The register at 00:00 JST of the reading date and of the previous reading date, both
truncated to whole m³, and their difference: the use billing counts. Read from the raw
``water_meter`` series (the register the meter showed), not from ``water_hourly``: the
derived hourly use leaves a swap's hour out, billing must not.

Per meter, the register readings form a *chain*: consecutive readings are joined by
a normal step (the register moved forwards, or backwards by what could have flowed
back — 逆流), a rollover (the register wrapped at ``meter.rollover_l``: the step plus
the capacity is a plausible use) or a swap (anything else: a new meter, whose figure
starts a new link of the chain). Use across a swap is the old meter's last register −
the previous reading + the new meter's register (docs/reports.md#use-as-billing-counts-it).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt
import pandas as pd

from core.away import AwaySpans, away_ms
from core.influxql import InfluxQuery
from reports.config import MeterReadingConfig, Schedule, add_months
from rules.schema import ALERT_TRANSITION
from sensors.registry import Meter, Registry
from sensors.schema import WATER

JST = ZoneInfo("Asia/Tokyo")
HOUR_MS = 3_600_000
LEAK_RULES = ("water.leak_continuous", "water.night_flow")
STUCK_RULES = ("water.stuck",)

READ = "検針"
ESTIMATED = "推定"
MISSING = "欠測"
F_LEAK = "漏水疑い"
F_REVERSE = "逆流"
# The register alone cannot tell a household away (travel, hospital) from a meter that
# stopped: the flag says both, so the clerk checks before billing (docs/reports.md, "Flags").
F_STUCK = "指針不動(不在またはメーター停止)"
# The standstill falls inside a period the household registered as away ([rules.away]):
# no use is what was announced, not a meter to check (docs/reports.md, "Flags").
F_AWAY = "不在届あり(使用なし)"
F_CHANGE_PREV = "前回比±{pct}%超"
F_CHANGE_YEAR = "前年同期比±{pct}%超"
# The flags in English (docs/reports.md, "Flags"; the office file is Japanese).
FLAG_EN = {
    F_LEAK: "suspected leak",
    F_REVERSE: "reverse flow",
    F_STUCK: "register still (household away, or the meter stopped)",
    F_AWAY: "away registered (no use)",
    F_CHANGE_PREV: "use changed by more than ±{pct}% against the previous period",
    F_CHANGE_YEAR: "use changed by more than ±{pct}% against the same period last year",
}

# (column header, what it holds) — the layout docs/reports.md documents
COLUMNS: tuple[tuple[str, str], ...] = (
    ("水栓番号", "meter id"),
    ("地区", "district"),
    ("検針日", "reading date (register at 00:00 JST)"),
    ("前回検針日", "previous reading date"),
    ("今回指針", "register at the reading date, whole m³ (truncated)"),
    ("前回指針", "register at the previous reading date, whole m³ (truncated)"),
    ("使用水量", "billed use, whole m³"),
    ("状態", "検針 | 推定 | 欠測 (worst of the two readings)"),
    ("推定間隔h", "推定: hours between the readings interpolated across"),
    ("前回使用水量", "use of the previous period, m³ (empty: unknown)"),
    ("前回比%", "change of the daily use against the previous period"),
    ("前年同期使用水量", "use of the same period last year, m³ (empty: unknown)"),
    ("前年同期比%", "change of the daily use against the same period last year"),
    ("確認事項", "flags for the checker, separated by ・"),
    ("備考", "rollovers, swaps, estimates: what the figures rest on"),
    ("今回指針L", "register at the reading date in litres (traceability)"),
    ("前回指針L", "register at the previous reading date in litres"),
)


def midnight_ms(day: dt.date) -> int:
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=JST).timestamp() * 1000)


def _hhmm(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, JST).strftime("%Y-%m-%d %H:%M")


@dataclass
class Chain:
    """One meter's register readings, unwrapped: ``link`` numbers the physical meter
    (a swap starts the next), ``unwrapped`` adds the capacity for every rollover."""

    t: npt.NDArray[np.int64]
    raw: npt.NDArray[np.float64]
    link: npt.NDArray[np.int64]
    unwrapped: npt.NDArray[np.float64]
    events: list[tuple[int, str]] = field(default_factory=list)  # (ms, note)
    reverse_ms: list[int] = field(default_factory=list)

    @classmethod
    def build(cls, meter: Meter, t: npt.NDArray[np.int64], raw: npt.NDArray[np.float64]) -> Chain:
        cap = float(meter.rollover_l)
        n = len(t)
        link = np.zeros(n, dtype=np.int64)
        unwrapped = raw.astype(np.float64).copy()
        chain = cls(t, raw, link, unwrapped)
        offset = 0.0
        for i in range(1, n):
            hours = max((t[i] - t[i - 1]) / HOUR_MS, 1.0)
            # twice the permanent flow rate (JIS B 8570) for the whole gap: more than
            # any meter can register, so a bigger step is not water
            plausible = meter.q3_m3h * 1000.0 * hours * 2.0
            step = raw[i] - raw[i - 1]
            link[i] = link[i - 1]
            if step < 0 and step + cap <= plausible:
                offset += cap
                chain.events.append((int(t[i]), f"桁あふれ {_hhmm(int(t[i]))}"))
            elif step < 0 and -step <= plausible:
                chain.reverse_ms.append(int(t[i]))
            elif step < 0 or step > plausible:
                link[i] += 1
                offset = 0.0
                chain.events.append(
                    (
                        int(t[i]),
                        f"メーター交換 {_hhmm(int(t[i]))} 頃"
                        f"(旧指針 {math.floor(unwrapped[i - 1] % cap / 1000)} m3)",
                    )
                )
            unwrapped[i] = raw[i] + offset
        return chain

    def at(self, when: int, max_gap_ms: float) -> Reading:
        """The register at ``when``: read, interpolated (推定) or missing (欠測)."""
        i = int(np.searchsorted(self.t, when))
        if i < len(self.t) and self.t[i] == when:
            return Reading(READ, int(self.link[i]), float(self.unwrapped[i]), float(self.raw[i]))
        if i == 0 or i == len(self.t):
            return Reading(MISSING)
        a, b = i - 1, i
        gap = int(self.t[b] - self.t[a])
        if gap > max_gap_ms or self.link[a] != self.link[b]:
            return Reading(MISSING, gap_h=gap / HOUR_MS)
        w = (when - self.t[a]) / gap
        u = float(self.unwrapped[a] + w * (self.unwrapped[b] - self.unwrapped[a]))
        raw = u - (self.unwrapped[a] - self.raw[a])
        return Reading(ESTIMATED, int(self.link[a]), u, raw, gap / HOUR_MS)

    def last_of(self, link: int) -> float:
        return float(self.unwrapped[self.link == link][-1])

    def billed_m3(self, start: Reading, end: Reading) -> int | None:
        """Whole m³ between two readings as billing counts them (registers truncated)."""
        if start.link is None or end.link is None or start.u is None or end.u is None:
            return None
        if start.link == end.link:
            return math.floor(end.u / 1000) - math.floor(start.u / 1000)
        use = math.floor(self.last_of(start.link) / 1000) - math.floor(start.u / 1000)
        for k in range(start.link + 1, end.link):
            use += math.floor(self.last_of(k) / 1000)
        return use + math.floor(end.u / 1000)

    def still_runs(self, start: int, end: int) -> tuple[list[tuple[int, int]], bool]:
        """The runs (first, last reading time) in which the register stood still within
        [start, end], and whether it moved at all in it (a household away uses nothing)."""
        sel = (self.t >= start) & (self.t <= end)
        t, u, link = self.t[sel], self.unwrapped[sel], self.link[sel]
        if len(t) < 2:
            return [], False
        moved = (np.diff(u) != 0) | (np.diff(link) != 0)
        runs: list[tuple[int, int]] = []
        first: int | None = None
        for k in range(len(moved)):
            if moved[k]:
                first = None
                continue
            if first is None:
                first = int(t[k])
                runs.append((first, int(t[k + 1])))
            else:
                runs[-1] = (first, int(t[k + 1]))
        return runs, bool(moved.any())


@dataclass(frozen=True)
class Reading:
    status: str
    link: int | None = None
    u: float | None = None  # unwrapped litres within the link
    raw: float | None = None  # the register as the meter shows it, litres
    gap_h: float | None = None


@dataclass
class MeterRow:
    meter: str
    district: str
    date: dt.date
    previous: dt.date
    register_l: float | None
    previous_l: float | None
    use_m3: int | None
    status: str
    gap_h: float | None
    previous_use_m3: int | None
    change_prev_pct: float | None
    last_year_use_m3: int | None
    change_year_pct: float | None
    flags: list[str]
    notes: list[str]

    def values(self) -> list[object]:
        return [
            self.meter,
            self.district,
            self.date,  # a date cell: ISO text in the CSV, an Excel date in the XLSX
            self.previous,
            None if self.register_l is None else math.floor(self.register_l / 1000),
            None if self.previous_l is None else math.floor(self.previous_l / 1000),
            self.use_m3,
            self.status,
            _num(self.gap_h),
            self.previous_use_m3,
            None if self.change_prev_pct is None else round(self.change_prev_pct),
            self.last_year_use_m3,
            None if self.change_year_pct is None else round(self.change_year_pct),
            "・".join(self.flags),
            "・".join(self.notes),
            _num(self.register_l),
            _num(self.previous_l),
        ]


def _num(value: float | None) -> float | int | None:
    """A whole number as an int (registers count litres), others to one decimal: the
    CSV and the XLSX then show the same text."""
    if value is None:
        return None
    return int(value) if float(value).is_integer() else round(value, 1)


def _q_time(start_ms: int, end_ms: int) -> str:
    return f"time >= {start_ms}ms AND time <= {end_ms}ms"


def load_chains(
    q: InfluxQuery, meters: Sequence[Meter], start_ms: int, end_ms: int
) -> dict[str, Chain]:
    df = q.frame(
        f'SELECT register_l, "device" FROM {WATER} WHERE {_q_time(start_ms, end_ms)}',
        str_columns=("device",),
    )
    out: dict[str, Chain] = {}
    groups = dict(tuple(df.groupby("device"))) if len(df) else {}
    for m in meters:
        g = groups.get(m.id)
        if g is None:
            g = pd.DataFrame({"time": [], "register_l": []})
        # a duplicate time (a re-sent upload) is one reading
        g = g.dropna(subset=["register_l"]).drop_duplicates("time").sort_values("time")
        out[m.id] = Chain.build(
            m, g["time"].to_numpy(np.int64), g["register_l"].to_numpy(np.float64)
        )
    return out


def _active(q: InfluxQuery, rules: Iterable[str], start_ms: int, end_ms: int) -> set[str]:
    """Subjects with one of ``rules`` active at some time in [start, end): a firing
    transition inside it, or one before it that was not resolved by its start (a leak
    that fired months ago and still runs).

    Bounded by the period, not by all history: the transitions inside [start, end),
    and before ``start`` only each (subject, rule, status) series' last point, which
    InfluxDB finds without returning the series (``last()`` per ``GROUP BY`` tag set).
    A rule is active at the start when its last firing came after its last resolution."""
    cond = " OR ".join(f"\"rule\" = '{r}'" for r in rules)
    inside = q.rows(
        f'SELECT last("key") FROM {ALERT_TRANSITION} '
        f"WHERE time >= {start_ms}ms AND time < {end_ms}ms AND \"status\" = 'firing' "
        f'AND ({cond}) GROUP BY "subject"'
    )
    out = {str(r["subject"]) for r in inside if r.get("subject")}
    last = q.rows(
        f'SELECT last("key") FROM {ALERT_TRANSITION} WHERE time < {start_ms}ms '
        f'AND ({cond}) GROUP BY "subject", "rule", "status"'
    )
    latest: dict[tuple[str, str], dict[str, int]] = {}
    for r in last:
        if r.get("subject"):
            key = (str(r["subject"]), str(r["rule"]))
            latest.setdefault(key, {})[str(r["status"])] = int(r["time"])
    for (subject, _rule), times in latest.items():
        if times.get("firing", -1) > times.get("resolved", -1):
            out.add(subject)
    return out


def _alarmed(q: InfluxQuery, flag: str, start_ms: int, end_ms: int) -> set[str]:
    df = q.frame(
        f'SELECT alarm_{flag}, "device" FROM {WATER} WHERE time > {start_ms}ms '
        f"AND time <= {end_ms}ms AND alarm_{flag} = true",
        str_columns=("device",),
    )
    return set(df["device"]) if len(df) else set()


def _per_day_change(use: int | None, days: int, other: int | None, other_days: int) -> float | None:
    if use is None or other is None or other <= 0:
        return None
    return (use / days) / (other / other_days) * 100.0 - 100.0


@dataclass
class Period:
    start: dt.date
    end: dt.date

    @property
    def days(self) -> int:
        return (self.end - self.start).days


class MeterReading:
    """Builds the 検針 rows for one reading date."""

    def __init__(
        self,
        q: InfluxQuery,
        registry: Registry,
        cfg: MeterReadingConfig,
        away: AwaySpans | None = None,
    ) -> None:
        self.q = q
        self.registry = registry
        self.cfg = cfg
        # [rules.away] (core.away.load_away): the periods households said they were away
        self.away: AwaySpans = away or {}

    def meters(self, day: dt.date, district: str | None, forced: bool) -> list[Meter]:
        """The meters read on ``day``: their district's schedule says so (or forced)."""
        out = []
        for m in sorted(self.registry.meters.values(), key=lambda m: m.id):
            if district is not None and m.district != district:
                continue
            if forced or self.cfg.for_district(m.district).is_reading_date(day):
                out.append(m)
        return out

    def rows(
        self, day: dt.date, district: str | None = None, previous: dt.date | None = None
    ) -> list[MeterRow]:
        meters = self.meters(day, district, previous is not None)
        if not meters:
            return []
        schedules = {m.id: self.cfg.for_district(m.district) for m in meters}
        periods = {m.id: self._period(schedules[m.id], day, previous) for m in meters}
        earliest = min(p.start for p in periods.values())
        before = min(schedules[m.id].previous(periods[m.id].start) for m in meters)
        pad = int(self.cfg.estimate_max_gap_h * HOUR_MS)
        chains = load_chains(self.q, meters, midnight_ms(before) - pad, midnight_ms(day) + pad)
        year_ago = load_chains(
            self.q,
            meters,
            midnight_ms(add_months(earliest, -12)) - pad,
            midnight_ms(add_months(day, -12)) + pad,
        )
        start_ms, end_ms = midnight_ms(earliest), midnight_ms(day)
        leak = _active(self.q, LEAK_RULES, start_ms, end_ms) | _alarmed(
            self.q, "leak", start_ms, end_ms
        )
        stuck = _active(self.q, STUCK_RULES, start_ms, end_ms)
        reverse = _alarmed(self.q, "reverse", start_ms, end_ms)
        out = []
        for m in meters:
            p = periods[m.id]
            row = self._row(m, p, chains[m.id], year_ago[m.id], schedules[m.id])
            flags = set(row.flags)
            if m.id in leak:
                flags.add(F_LEAK)
            if m.id in reverse:
                flags.add(F_REVERSE)
            if m.id in stuck and F_AWAY not in flags:
                # a no-use notice, unless the register's standstill in the period is
                # all inside registered away periods (the notice came before the
                # household registered, or the rules ran without the period)
                flags.add(F_STUCK)
            row.flags = sorted(flags, key=_FLAG_ORDER)
            out.append(row)
        return out

    @staticmethod
    def _period(schedule: Schedule, day: dt.date, previous: dt.date | None) -> Period:
        return Period(previous if previous is not None else schedule.previous(day), day)

    def _use(self, chain: Chain, p: Period) -> tuple[Reading, Reading, int | None]:
        gap = self.cfg.estimate_max_gap_h * HOUR_MS
        a = chain.at(midnight_ms(p.start), gap)
        b = chain.at(midnight_ms(p.end), gap)
        return a, b, chain.billed_m3(a, b)

    def _row(
        self, m: Meter, p: Period, chain: Chain, year_chain: Chain, schedule: Schedule
    ) -> MeterRow:
        a, b, use = self._use(chain, p)
        prev_p = Period(schedule.previous(p.start), p.start)
        _, _, prev_use = self._use(chain, prev_p)
        year_p = Period(add_months(p.start, -12), add_months(p.end, -12))
        _, _, year_use = self._use(year_chain, year_p)
        statuses = {a.status, b.status}
        status = MISSING if MISSING in statuses else ESTIMATED if ESTIMATED in statuses else READ
        gaps = [r.gap_h for r in (a, b) if r.status == ESTIMATED and r.gap_h is not None]
        row = MeterRow(
            meter=m.id,
            district=m.district,
            date=p.end,
            previous=p.start,
            register_l=b.raw,
            previous_l=a.raw,
            use_m3=use,
            status=status,
            gap_h=max(gaps) if gaps else None,
            previous_use_m3=prev_use,
            change_prev_pct=_per_day_change(use, p.days, prev_use, prev_p.days),
            last_year_use_m3=year_use,
            change_year_pct=_per_day_change(use, p.days, year_use, year_p.days),
            flags=[],
            notes=[],
        )
        self._annotate(row, a, b, chain, p)
        return row

    def _annotate(self, row: MeterRow, a: Reading, b: Reading, chain: Chain, p: Period) -> None:
        start_ms, end_ms = midnight_ms(p.start), midnight_ms(p.end)
        for which, r in (("前回", a), ("今回", b)):
            if r.status == ESTIMATED:
                row.notes.append(f"{which}指針は推定(前後の読み {r.gap_h:.0f} 時間間隔を補間)")
            elif r.status == MISSING:
                why = f"前後の読み {r.gap_h:.0f} 時間間隔" if r.gap_h is not None else "読みなし"
                row.notes.append(f"{which}指針 欠測({why})")
        row.notes.extend(note for ms, note in chain.events if start_ms < ms <= end_ms)
        if any(start_ms < ms <= end_ms for ms in chain.reverse_ms):
            row.flags.append(F_REVERSE)
        self._standstill(row, chain, start_ms, end_ms)
        pct = f"{self.cfg.change_limit_pct:g}"
        if row.change_prev_pct is not None and abs(row.change_prev_pct) > self.cfg.change_limit_pct:
            row.flags.append(F_CHANGE_PREV.format(pct=pct))
        if row.change_year_pct is not None and abs(row.change_year_pct) > self.cfg.change_limit_pct:
            row.flags.append(F_CHANGE_YEAR.format(pct=pct))

    def _standstill(self, row: MeterRow, chain: Chain, start_ms: int, end_ms: int) -> None:
        """指針不動 or 不在届あり: a standstill of ``stuck_hours`` or more. Hours inside a
        registered away period do not count (as in the rules' no-use notice): a
        standstill that is long only with them is the announced absence."""
        runs, moved = chain.still_runs(start_ms, end_ms)
        limit = self.cfg.stuck_hours
        spans = away_ms(self.away, row.meter)
        unexplained = explained = 0.0
        covering: list[tuple[int, int]] = []
        for a, b in runs:
            hours = (b - a) / HOUR_MS
            if hours < limit:
                continue
            inside = [(max(a, x), min(b, y)) for x, y in spans if x < b and y > a]
            outside = hours - sum(y - x for x, y in inside) / HOUR_MS
            if outside >= limit:
                unexplained = max(unexplained, hours)
            else:
                explained = max(explained, hours)
                covering += [(x, y) for x, y in spans if x < b and y > a]
        if moved and unexplained:
            row.flags.append(F_STUCK)
            row.notes.append(
                f"指針 {unexplained:.0f} 時間不動: 不在(旅行・入院など)かメーター停止か、"
                "指針だけでは区別できません"
            )
        elif explained:
            row.flags.append(F_AWAY)
            when = "・".join(f"{_hhmm(x)}–{_hhmm(y)}" for x, y in sorted(set(covering)))
            row.notes.append(f"指針 {explained:.0f} 時間不動: 不在届の期間 ({when})")


def _FLAG_ORDER(flag: str) -> int:
    order = (F_LEAK, F_REVERSE, F_STUCK, F_AWAY)
    return order.index(flag) if flag in order else len(order)


__all__ = ["COLUMNS", "FLAG_EN", "MeterReading", "MeterRow", "midnight_ms"]
