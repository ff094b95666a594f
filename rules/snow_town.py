"""Snow family, town-wide: the plow dispatch call, the staged call-outs, the town-wide
depth alert and the dispatch uncertainty warning, decided on the stations' finalised
hours (docs/rules-snow.md#snowdispatch, docs/rules-snow.md#snowdispatch_uncertain).

The dispatch rules sum hourly new snow since the last plowing (``Shared``), at most
``window_h`` hours, over healthy stations, plus the rise not yet counted; when stations
that could decide the call cannot see during snowfall, ``snow.dispatch_uncertain``
warns at once. The per-station cleaning chain is :mod:`rules.snow_station`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple

from rules.model import (
    HOUR_MS,
    MINUTE_MS,
    Finding,
    Output,
    floor_hour,
    fmt_num,
    hhmm,
    jst,
)
from rules.params import SnowParams
from rules.snow_station import (
    FAULT_TEXT,
    SnowStations,
    _Hour,
    _Station,
    stated_noise_cm,
    track_predicted_cov,
)
from rules.transitions import Severity, Value

__all__ = ["TOWN", "SnowTown"]

# A rising air temperature is read from the latest hour; older figures say nothing.
TOWN = "town"


RATE_SPAN_H = 2
# The snow began (「降り始め」) with the rise that brought a station's figure to
# SNOW_BEGAN_CM (the JMA's smallest snowfall depth), its hours each rising by more than
# RISE_CM; an uncounted rise of a few millimetres that falls back is noise.
SNOW_BEGAN_CM = 1.0
RISE_CM = 0.2


def _rate(figures: list[tuple[int, float]], end: int) -> float:
    """The station's current hourly rate: the figure's rise over the last
    ``RATE_SPAN_H`` hours, per hour. One hour alone overstates it whenever the
    hysteresis releases a held rise (the demo's 毎時 12 cm for a true 6.6 cm)."""
    if not figures:
        return 0.0
    since = end - RATE_SPAN_H * HOUR_MS
    before = [f for t, f in figures if t <= since]
    if before:
        return max(0.0, (figures[-1][1] - before[-1]) / RATE_SPAN_H)
    # Snow began within the span: the rise since the first figure's hour began.
    span_h = max(1.0, (end - (figures[0][0] - HOUR_MS)) / HOUR_MS)
    return max(0.0, figures[-1][1] / min(span_h, RATE_SPAN_H))


class _Row(NamedTuple):
    """One station as the town rules see it at an hour end."""

    sid: str
    st: _Station
    p: SnowParams
    total: float  # the dispatch figure: new snow since plowing plus the uncounted rise
    first: int  # start of the first hour with snow in the accumulation (-1: none)
    end: int  # end of the newest hour
    crossed: dict[float, int]  # level → end of the hour the figure first reached it
    thr: float  # the station's dispatch threshold (priority or not)
    last: _Hour  # the newest hour
    hours: Sequence[_Hour]  # the hours counted (closed by the evaluation time)
    rate: float  # the figure's current hourly rate
    # the figure is carried on at the rate last seen since this hour end (-1: measured)
    blind_since: int = -1
    began: int = -1  # start of the hour the snow began in (-1: none; SNOW_BEGAN_CM)


class _Hit(NamedTuple):
    """A station counted by a dispatch rule or call-out stage."""

    at: int  # when it reached the level (hour end)
    sid: str
    st: _Station
    total: float
    first: int
    end: int
    last: _Hour
    rate: float
    blind_since: int = -1
    began: int = -1


def _hit(r: _Row, at: int) -> _Hit:
    return _Hit(at, r.sid, r.st, r.total, r.first, r.end, r.last, r.rate, r.blind_since, r.began)


class SnowTown(SnowStations):
    """The town-wide half of the snow family, on the stations' finalised hours."""

    # town rules → (active, event time) as last reported
    town_status: dict[str, tuple[bool, int]]
    # newest hour end the town rules were evaluated at (class default: older state)
    town_hours_until: int = -1
    # stations the active uncertainty warning names; when the last one ended (class
    # defaults: older state)
    uncertain_sids: tuple[str, ...] = ()
    uncertain_ended_ms: int = -1
    # town rule → the stations its active (or last) call counted (class default: older
    # state; replaced, never changed in place)
    call_sids: Mapping[str, tuple[str, ...]] = MappingProxyType({})
    # the last town rows and what they were computed from (never pickled: derived)
    _rows_cache: tuple[tuple[Any, ...], list[_Row]] | None = None

    def _dispatch_hours(self, now_ms: int, out: Output) -> None:
        """Evaluate the town rules at every hour end that closed since the last tick, in
        order (a late bulk of readings must decide each hour as it would have been
        decided then), and at ``now``."""
        new: set[int] = set()
        for st in self.stations.values():
            for h in reversed(st.hours):  # newest first: stop at the evaluated ones
                if h.start + HOUR_MS <= self.town_hours_until:
                    break
                new.add(h.start + HOUR_MS)
        ends = sorted(new)
        for end in ends[:-1]:
            self._dispatch(end, out, upto_ms=end)
        if ends:
            self.town_hours_until = ends[-1]
        self._dispatch(now_ms, out)

    def _rows(self, tp: SnowParams, upto_ms: int | None) -> list[_Row]:
        """Per station with a closed hour: its figure and what the rules ask of it.
        The same closed hours and plowings give the same rows: a step that closed no
        hour (five in six) reuses the last ones instead of summing every station's
        accumulation again."""
        key = (
            upto_ms,
            id(self.config),
            id(self.registry),
            tuple((sid, st.open_hour) for sid, st in self.stations.items()),  # hours closed
            tuple(self.shared.plowing_ends_ms),
            self.shared.plows_back_ms,
        )
        if self._rows_cache is None or self._rows_cache[0] != key:
            self._rows_cache = (key, self._compute_rows(tp, upto_ms))
        return self._rows_cache[1]

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.pop("_rows_cache", None)
        return state

    def _compute_rows(self, tp: SnowParams, upto_ms: int | None) -> list[_Row]:
        rows = []
        for sid, st in self.stations.items():
            hours = (
                st.hours
                if upto_ms is None
                else [h for h in st.hours if h.start + HOUR_MS <= upto_ms]
            )
            if not hours:
                continue
            p = self._p(sid)
            last = hours[-1]
            end = last.start + HOUR_MS
            start = self._reset_ms(end)
            thr = p.priority_dispatch_cm if p.priority_station else p.dispatch_cm
            fig = _station_figure(hours, start, tp, thr)
            rate = _rate(fig.figures, end)
            rows.append(
                _Row(
                    sid,
                    st,
                    p,
                    fig.total,
                    fig.first,
                    end,
                    fig.crossed,
                    thr,
                    last,
                    hours,
                    rate,
                    fig.blind_since,
                    fig.began,
                )
            )
        return rows

    def _dispatch(self, now_ms: int, out: Output, upto_ms: int | None = None) -> None:
        """snow.dispatch, the staged call-outs and the town-wide alert, on closed hours
        (those ending by ``upto_ms`` when given)."""
        tp = self._town()
        rows = self._rows(tp, upto_ms)
        # --- dispatch and stages: each counts stations that reached their figure
        rules: list[tuple[str, float | None]] = [("dispatch", None)]
        rules += [(f"callout_{int(s)}", s) for s in tp.stages_cm if s > tp.dispatch_cm]
        for rule, stage in rules:
            hits = []
            for r in rows:
                level = r.thr if stage is None else stage
                if level in r.crossed:
                    at = r.crossed[level]
                    hits.append(_hit(r, at))
            was = self.town_status.get(rule, (False, 0))
            if was[0]:
                self._hold(rows, hits, stage=stage, was=was, now_ms=upto_ms or now_ms, tp=tp)
            healthy = [x for x in hits if tp.blind_trend_h > 0 or self._healthy(x.st)]
            pool = hits if was[0] else healthy  # faults only keep a call from starting
            pool.sort(key=lambda x: (x.at, x.sid))
            ok = len(pool) >= tp.dispatch_stations
            if ok and not was[0] and rule in self.town_status:
                # A call that ended starts again only on stations it did not count, or
                # that reached the threshold in the hour it ended or since: a figure
                # read again from a later start (the 24 h window sliding over the quiet
                # hours before the storm) may reach it again at the old hour, on the
                # snow the call was about (docs/rules-snow.md#snowdispatch).
                called = self.call_sids.get(rule, ())
                new = [x for x in pool if x.sid not in called or x.at >= was[1]]
                ok = len(new) >= tp.dispatch_stations
            if ok:
                counted = self.call_sids.get(rule, ()) if was[0] else ()
                sids = tuple(sorted({*counted, *(x.sid for x in pool)}))
                self.call_sids = {**self.call_sids, rule: sids}
            at = pool[tp.dispatch_stations - 1].at if ok else self._clear_at(rows, was, now_ms)
            self._town_finding(rule, stage=stage, ok=ok, at=at, pool=pool, tp=tp, out=out)
            if stage is None and upto_ms is None:
                self._uncertain(rows, active=ok, now_ms=now_ms, tp=tp, out=out)
        # --- town-wide alert on total depth
        was = self.town_status.get("town_alert", (False, 0))
        deep = []
        for r in rows:
            # The newest measured depth (an hour without readings keeps the last one).
            depth = next((h.depth_cm for h in reversed(r.hours) if h.depth_cm >= 0), -1.0)
            if depth >= tp.town_alert_depth_cm and (was[0] or self._healthy(r.st)):
                deep.append((r.last.start + HOUR_MS, r.sid, depth))
        ok = len(deep) >= tp.town_alert_stations
        deep.sort()
        at = deep[tp.town_alert_stations - 1][0] if ok else self._clear_at(rows, was, now_ms)
        names = "、".join(f"{sid} {fmt_num(d)} cm" for _, sid, d in deep[:6])
        self._emit_town(
            "town_alert",
            active=ok,
            at=at,
            values={
                "stations": ",".join(s for _, s, _ in deep),
                "depth_cm": tp.town_alert_depth_cm,
            },
            msg=f"全町警戒: 積雪 {names}。基準 {fmt_num(tp.town_alert_depth_cm)} cm・"
            f"{tp.town_alert_stations} 地点。"
            if ok
            else "全町警戒 解除: 積雪が基準を下回りました。",
            msg_en=f"Town-wide alert: snow depth {names.replace('、', ', ')}; "
            f"limit {fmt_num(tp.town_alert_depth_cm)} cm at {tp.town_alert_stations} stations."
            if ok
            else "Town-wide alert cleared: depth below the limit.",
            out=out,
        )

    def _hold(
        self,
        rows: list[_Row],
        hits: list[_Hit],
        *,
        stage: float | None,
        was: tuple[bool, int],
        now_ms: int,
        tp: SnowParams,
    ) -> None:
        """One call per accumulation: until plowing resets it, an active call also counts
        the stations whose figure is within ``resolve_margin_cm`` below the threshold, so
        a figure dipping with the noise (or the 24 h window sliding over a storm's first
        hours) does not end the call only for it to start again."""
        plowed = self.shared.last_plowing_before(now_ms)
        if plowed is not None and plowed > was[1]:
            return
        if tp.resolve_hold_h > 0 and now_ms - was[1] > tp.resolve_hold_h * HOUR_MS:
            return
        seen = {x.sid for x in hits}
        for r in rows:
            level = r.thr if stage is None else stage
            if r.sid not in seen and r.total >= level - tp.resolve_margin_cm:
                hits.append(_hit(r, r.end))

    def _blind(
        self, sid: str, st: _Station, p: SnowParams, now_ms: int, *, share: float | None = None
    ) -> str | None:
        """Why a station cannot see now, or None: at least ``share`` (default
        ``blind_poor_share``) of the last hour's echoes poor, no reading for
        ``blind_min``, or a frozen sensor."""
        if st.status.get("frozen", (False, 0))[0]:
            return "frozen"
        if st.last_t >= 0 and now_ms - st.last_t >= p.blind_min * MINUTE_MS:
            return "offline"
        recent = [x for t, x in st.echo if t > now_ms - HOUR_MS]
        limit = p.blind_poor_share if share is None else share
        if len(recent) >= 3 and sum(recent) / len(recent) >= limit:
            poor = [x for x in st.poor_points if x[0] > now_ms - HOUR_MS]
            if self.poor_usable(sid, st, p, poor, []):
                return None  # weak echoes that still measure as well as good ones
            return "poor_echo"
        return None

    def _uncertain(
        self, rows: list[_Row], *, active: bool, now_ms: int, tp: SnowParams, out: Output
    ) -> None:
        """snow.dispatch_uncertain: it is snowing, no call yet, and stations that could
        decide one cannot see, so the outcome is open: the seeing stations have not
        decided it, and the blind ones could, at a plausible rate since they were last
        seen (docs/rules-snow.md#snowdispatch_uncertain). Held while a named station is
        still blind (it sees again only below ``blind_clear_share``), so a flickering
        echo does not make the warning flap."""
        was = self.town_status.get("dispatch_uncertain", (False, 0))[0]
        since = now_ms - 3 * HOUR_MS
        snowing = any(
            r.rate > 0
            or any(h.start + HOUR_MS > since and h.new_cm > 0 for h in list(r.hours)[-4:])
            for r in rows
        )
        # A plausible rate: the fastest figure of the last hour in town (the same storm
        # falls on the blind station), or the station's own fastest of the last three.
        town_rate = max((r.rate for r in rows), default=0.0)
        blind: list[tuple[str, str, _Station, float]] = []
        hits = 0
        for r in rows:
            sid, st, p, total, thr = r.sid, r.st, r.p, r.total, r.thr
            held = was and sid in self.uncertain_sids
            if thr in r.crossed or total >= thr:
                hits += 1  # counted (seen or not): its blindness no longer holds the call
                continue
            why = self._blind(sid, st, p, now_ms, share=p.blind_clear_share if held else None)
            if why is None:
                continue
            if not held:
                own = [h.new_cm for h in list(r.hours)[-3:] if math.isfinite(h.new_cm)]
                rate = max([town_rate, *own, 0.0])
                last = st.last_good_t if st.last_good_t >= 0 else st.last_t
                blind_h = min(3.0, max(0.0, (now_ms - last) / HOUR_MS))
                # Its figure may be off by the sensor's stated error (docs/domain.md#
                # sensor-noise), and snow falls unseen for as long as it is blind and
                # the next hour: can it reach the threshold?
                err = stated_noise_cm(self.registry, sid, p)
                if total + err + rate * (blind_h + p.uncertain_lookahead_h) < thr:
                    continue  # it cannot reach its threshold unseen: the call is not open
            blind.append((sid, why, st, total))
        need = tp.dispatch_stations - hits
        ok = snowing and not active and need > 0 and len(blind) >= need
        if ok and not was and self.uncertain_ended_ms >= 0:
            # A new warning only after a quiet spell: a blind spell is warned about once.
            ok = now_ms - self.uncertain_ended_ms >= tp.uncertain_refire_min * MINUTE_MS
        if ok:
            self.uncertain_sids = tuple(sorted(b[0] for b in blind))
        elif was:
            self.uncertain_sids = ()
            self.uncertain_ended_ms = now_ms
        parts_ja, parts_en = [], []
        for sid, why, st, total in sorted(blind, key=lambda x: (-x[3], x[0]))[:6]:
            station = self.registry.stations.get(sid)
            name = f"{station.name} {sid}" if station else sid
            ja, en = FAULT_TEXT.get(why, (why, why))
            good = (
                f"最終良好 {hhmm(st.last_good_t)} 積雪 {fmt_num(st.acc_d)} cm"
                if st.last_good_t >= 0
                else "良好な値なし"
            )
            good_en = (
                f"last good {hhmm(st.last_good_t)} depth {fmt_num(st.acc_d)} cm"
                if st.last_good_t >= 0
                else "no good reading"
            )
            parts_ja.append(f"{name} ({ja}、{good}、新雪 {fmt_num(total)} cm)")
            parts_en.append(f"{sid} ({en}, {good_en}, new snow {fmt_num(total)} cm)")
        values: dict[str, Value] = {"stations": ",".join(sorted(b[0] for b in blind))}
        if ok:
            msg = (
                f"除雪出動判断が不確か: 降雪中に観測できない地点 {'、'.join(parts_ja)}。"
                "残る地点と弱いエコーで判定を続けます。巡回で確認してください。"
            )
            msg_en = (
                f"Dispatch judgement uncertain: stations blind in snowfall: "
                f"{'; '.join(parts_en)}. Judging on with the rest and the weak echoes; "
                "send a patrol to check."
            )
        else:
            msg = "除雪出動判断の不確かさ 解消。"
            msg_en = "Dispatch judgement no longer uncertain."
        self._emit_town(
            "dispatch_uncertain",
            active=ok,
            at=now_ms,
            values=values,
            msg=msg,
            msg_en=msg_en,
            out=out,
        )

    def _clear_at(self, rows: list[_Row], was: tuple[bool, int], now_ms: int) -> int:
        """Event time of a town rule found inactive: the plowing that reset the
        accumulation, else the end of the newest closed hour."""
        last_plow = self.shared.last_plowing_before(now_ms)
        if was[0] and last_plow is not None and last_plow > was[1]:
            return last_plow
        ends = [r.end for r in rows]
        return max(ends) if ends else now_ms

    def _town_finding(
        self,
        rule: str,
        *,
        stage: float | None,
        ok: bool,
        at: int,
        pool: list[_Hit],
        tp: SnowParams,
        out: Output,
    ) -> None:
        parts_ja, parts_en = [], []
        temps = []
        shown = sorted(pool, key=lambda x: (-x.total, x.sid))[:6]
        end = max((x.end for x in shown), default=0)
        # The window stated is the window counted: the hours that end after the last
        # plowing (from the hour it ended in), else from the first hour with snow.
        plowed = self.shared.last_plowing_before(end) if shown else None
        if plowed is not None and plowed > end - tp.window_h * HOUR_MS:
            since = floor_hour(plowed)
            from_ja, from_en = (
                f"除雪 {hhmm(plowed)} 終了から",
                f"since plowing ended {hhmm(plowed)}",
            )
        else:
            since = min((x.first for x in shown if x.first >= 0), default=end)
            from_ja, from_en = "降り始めから", "since it began"
            began = min((x.began for x in shown if x.began >= 0), default=since)
            if began - since > HOUR_MS:
                # The figures count from the first hour above the reference; say when
                # the snow itself began (docs/rules-snow.md#snowdispatch).
                from_ja, from_en = (
                    f"降り始め {hhmm(began)} 頃",
                    f"snow began about {hhmm(began)}",
                )
        for i, x in enumerate(shown):
            station = self.registry.stations.get(x.sid)
            ja, en = _figure_text(x, f"{station.name} " if station and i == 0 else "")
            parts_ja.append(ja)
            parts_en.append(en)
            if math.isfinite(x.last.air_temp_c):
                temps.append(x.last.air_temp_c)
        level = tp.dispatch_cm if stage is None else stage
        title_ja = "除雪出動基準に達しました" if stage is None else f"段階出動 {fmt_num(stage)} cm"
        title_en = "Dispatch threshold reached" if stage is None else f"Call-out stage {stage:g} cm"
        basis_ja = f"基準 {fmt_num(level)} cm・{tp.dispatch_stations} 地点"
        basis_en = f"limit {fmt_num(level)} cm at {tp.dispatch_stations} stations"
        if stage is None:
            basis_ja += f" (重点 {fmt_num(tp.priority_dispatch_cm)} cm)"
            basis_en += f" (priority {fmt_num(tp.priority_dispatch_cm)} cm)"
        values: dict[str, Value] = {
            "stations": ",".join(sorted(x.sid for x in pool)),
            "threshold_cm": level,
            "max_cm": round(max((x.total for x in pool), default=0.0), 1),
        }
        if ok:
            values["since_ms"] = since
            values["figures"] = ",".join(f"{x.sid}={x.total:.1f}" for x in shown)
            values["rates"] = ",".join(f"{x.sid}={x.rate:.1f}" for x in shown)
            if any(x.blind_since >= 0 for x in shown):
                values["estimated"] = ",".join(x.sid for x in shown if x.blind_since >= 0)
            span = _span(since, end)
            span_ja = f"新雪 {span} ({from_ja})"
            span_en = f"new snow {span} ({from_en})"
            msg = f"{title_ja}: {span_ja} {'、'.join(parts_ja)}。{basis_ja}。"
            msg_en = f"{title_en}: {span_en}: {', '.join(parts_en)}; {basis_en}."
            warm = max(temps) if temps else math.nan
            if math.isfinite(warm) and warm > tp.holdback_temp_c:
                values["air_temp_c"] = round(warm, 1)
                msg += (
                    f" 気温 {warm:+.1f} °C: 雨・融雪の可能性、出動見合わせを検討"
                    f" (基準 +{fmt_num(tp.holdback_temp_c)} °C)。"
                )
                msg_en += (
                    f" Air {warm:+.1f} °C: rain or melt likely, consider holding back"
                    f" (above +{tp.holdback_temp_c:g} °C)."
                )
        else:
            msg = f"{title_ja.replace('に達しました', '')} 解除: 除雪または新雪が基準未満。"
            msg_en = (
                f"{title_en.replace(' reached', '')} cleared: plowed, or new snow below the limit."
            )
        self._emit_town(rule, active=ok, at=at, values=values, msg=msg, msg_en=msg_en, out=out)

    def _emit_town(
        self,
        rule: str,
        *,
        active: bool,
        at: int,
        values: dict[str, Value],
        msg: str,
        msg_en: str,
        out: Output,
    ) -> None:
        """Report a town rule at every evaluation (few findings; the engine dedups)."""
        was, was_at = self.town_status.get(rule, (False, 0))
        if active == was:
            at = was_at if was or rule in self.town_status else at
        else:
            at = max(at, was_at)
            self.town_status[rule] = (active, at)
        out.finding(
            Finding(
                rule=f"snow.{rule}",
                category="snow",
                subject=TOWN,
                subject_kind="town",
                active=active,
                at_ms=at,
                # The depth alert informs the department's management (豪雪体制);
                # the calls that send plows out are the ones that wake people.
                severity=Severity.WARNING
                if rule in ("town_alert", "dispatch_uncertain")
                else Severity.CRITICAL,
                values=values,
                message=msg,
                message_en=msg_en,
            )
        )


@dataclass
class _Figure:
    """A station's dispatch figure over the hours of an accumulation."""

    total: float = 0.0
    first: int = -1  # start of the first hour with snow (-1: none)
    crossed: dict[float, int] = field(default_factory=dict)  # level → hour end reached
    figures: list[tuple[int, float]] = field(default_factory=list)  # (hour end, figure)
    blind_since: int = -1  # the figure is carried on a trend since this hour end
    began: int = -1  # start of the hour the snow began in (-1: none; SNOW_BEGAN_CM)

    def note_start(self, hour_start: int) -> None:
        """After the figure of the hour starting at ``hour_start``: where the window
        starts (the first hour above the reference) and when the snow began."""
        if self.first < 0 and self.total > 0:
            self.first = hour_start
        if self.total < SNOW_BEGAN_CM:
            self.began = -1  # an uncounted rise that fell back: noise, not the snow
        elif self.began < 0:
            self.began = _rise_began(self.figures)


def _station_figure(hours: Sequence[_Hour], start: int, tp: SnowParams, thr: float) -> _Figure:
    """The figure of the hours that end after ``start``: what the hysteresis counted,
    plus the rise it has not yet counted, less what had risen before the accumulation
    began (counted late, it fell before; docs/rules-snow.md#snowdispatch); an hour the
    station cannot see carries it on at the rate last seen (#blind-stations)."""
    f = _Figure()
    counted = 0.0
    carry = 0.0  # rise before the accumulation began, not yet counted then
    seen = (-1, 0.0, 0.0)  # (hour end, figure, rate) of the newest hour it saw
    # Re-read only after a plowing (the accumulation starts later than the 24 h window):
    # at the window's edge the starting depth is a day old and quiet, and re-reading it
    # there added calls (docs/rules-snow.md).
    plowed = bool(hours) and start > hours[-1].start + HOUR_MS - tp.window_h * HOUR_MS
    shift = _baseline_shift(hours, start, tp) if plowed and tp.baseline_smooth_h > 0 else 0.0
    for h in hours:
        if h.start + HOUR_MS <= start:
            if math.isfinite(h.new_cm):
                carry = h.rise_cm
            continue
        if h.new_cm > 0:
            counted += h.new_cm
        hend = h.start + HOUR_MS
        if math.isfinite(h.new_cm):
            raw = max(0.0, counted + h.pending_cm - carry)
            # A baseline found too high adds only once the snow has climbed past it:
            # before that the level is still settling or still noise.
            f.total = max(0.0, raw + shift) if raw > 0 or shift < 0 else 0.0
            f.blind_since = -1
        elif tp.blind_trend_h > 0 and seen[0] >= 0:
            # No level this hour: the snow goes on falling at the rate it last saw.
            gone = min(tp.blind_trend_h, (hend - seen[0]) / HOUR_MS)
            f.total = max(f.total, seen[1] + tp.blind_trend_factor * seen[2] * gone)
            f.blind_since = seen[0]
        else:
            continue  # no level this hour: the last figure stands
        f.figures.append((hend, f.total))
        if f.blind_since < 0:
            seen = (hend, f.total, _rate(f.figures, hend))
        f.note_start(h.start)
        for level in (thr, *tp.stages_cm):
            if f.total >= level and level not in f.crossed:
                f.crossed[level] = hend
    return f


def _rise_began(figures: Sequence[tuple[int, float]]) -> int:
    """Start of the first hour of the rise that brought the figure to where it is: the
    newest hours that each rose by more than ``RISE_CM``."""
    i = len(figures) - 1
    while i > 0:
        before = figures[i - 2][1] if i >= 2 else 0.0
        if figures[i - 1][1] - before <= RISE_CM:
            break
        i -= 1
    return figures[i][0] - HOUR_MS


def _baseline_shift(hours: Sequence[_Hour], start: int, tp: SnowParams) -> float:
    """How much higher the accumulation's figures should be for the depth it started
    from, seen with the hours after it (docs/rules-snow.md#new-snow).

    The figures count from the level the station had when the accumulation began: the
    reference, or the level if it stood above it. That level was the track's estimate
    then, from the readings before it; a station half blind in the storm before a
    plowing lags the surface, and its catch-up after the plowing would count as new
    snow (or noise at that hour would hold the next snow back). The readings of the
    ``baseline_smooth_h`` hours after it tell the level at that hour better: a
    Rauch–Tung–Striebel pass of the depth-and-rate track back over those hours. A
    station blind from before the accumulation began until after it has its starting
    depth between the smoothed depths of the hours either side of the gap."""
    # the last hour with a level before the accumulation: the one it counts from
    base = max(
        (i for i, h in enumerate(hours) if h.start + HOUR_MS <= start and math.isfinite(h.new_cm)),
        default=-1,
    )
    b = hours[base] if base >= 0 else None
    if b is None or len(b.kf) < 6 or not math.isfinite(b.ref_cm):
        return 0.0
    # The accumulation counts the hours that end after ``start``: it starts from the
    # depth at the end of the last whole hour before it. A station that saw nothing in
    # between (blind before the plowing) has it between its baseline hour and the next.
    at, b_end = floor_hour(start), b.start + HOUR_MS
    chain = [b]
    for h in list(hours)[base + 1 :]:
        if h.start + HOUR_MS - max(at, b_end) > tp.baseline_smooth_h * HOUR_MS:
            break
        if len(h.kf) < 6 or h.kf[5] != b.kf[5]:
            if len(h.kf) >= 6:
                break  # the track restarted: the hours after it say nothing of before
            continue
        chain.append(h)
    if len(chain) < 2:
        return 0.0
    nxt = chain[-1]
    sl, sr = nxt.kf[0], nxt.kf[1]  # smoothed depth and rate at the newest hour
    after = sl  # … and the smoothed depth at the hour after the baseline hour
    for h in reversed(chain[:-1]):
        dt = (nxt.start - h.start) / HOUR_MS
        lv, rt, p00, p01, p11 = h.kf[:5]
        # the prediction from this hour to the next one's, and its covariance
        a00, a01, a11 = track_predicted_cov(p00, p01, p11, dt, tp)
        det = a00 * a11 - a01 * a01
        if det <= 0:
            return 0.0
        # the smoother's gain C = P F' A⁻¹, F = [[1, dt], [0, 1]]
        c00 = ((p00 + dt * p01) * a11 - p01 * a01) / det
        c01 = (p01 * a00 - (p00 + dt * p01) * a01) / det
        c10 = ((p01 + dt * p11) * a11 - p11 * a01) / det
        c11 = (p11 * a00 - (p01 + dt * p11) * a01) / det
        e0, e1 = sl - (lv + dt * rt), sr - rt
        after = sl
        sl, sr = lv + c00 * e0 + c01 * e1, rt + c10 * e0 + c11 * e1
        nxt = h
    if at > b_end:
        c_end = chain[1].start + HOUR_MS
        sl += (after - sl) * min(1.0, (at - b_end) / (c_end - b_end))
    started = max(b.ref_cm, b.depth_cm)  # what the figures count from
    return started - sl


def _figure_text(x: _Hit, name: str) -> tuple[str, str]:
    """A station's figure in a call (Japanese, English)."""
    total, rate = fmt_num(x.total), fmt_num(x.rate)
    if x.blind_since < 0:
        return f"{name}{x.sid} {total} cm (毎時 {rate} cm)", f"{x.sid} {total} cm ({rate} cm/h)"
    # Carried on at the rate it last saw (docs/rules-snow.md#blind-stations).
    since = hhmm(x.blind_since)
    return (
        f"{name}{x.sid} 約 {total} cm (推定: {since} から観測不能、毎時 {rate} cm で延長)",
        f"{x.sid} ~{total} cm (estimated: blind since {since}, carried on at {rate} cm/h)",
    )


def _span(since: int, end: int) -> str:
    """「20:00–02:00」; with dates when it spans more than half a day (a 24 h window
    would read 「03:00–03:00」)."""
    if end - since <= 12 * HOUR_MS:
        return f"{hhmm(since)}–{hhmm(end)}"
    a, b = jst(since), jst(end)
    return f"{a.month}/{a.day} {a:%H:%M}–{b.month}/{b.day} {b:%H:%M}"
