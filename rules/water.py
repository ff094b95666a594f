"""Water rules: leaks, night flow, bursts, reverse flow, device flags, stale and stuck
meters, and watch-over (見守り) for flagged households (docs/rules-water.md).

Meters report a cumulative register on the hour (docs/domain.md#cumulative-registers).
Every feed turns the new readings of all meters into meter-hours at once with numpy
(register differences; rollover, swap and reverse flow told apart), then evaluates
each rule's condition per row with vectorised run-length and latch helpers that carry
each meter's state from the previous feed. Python loops run only over the rows where a
condition *changes* and over the meters in the feed, never over all points: 10,000
meters × 24 values must stay well under a few seconds.

State lives in plain numpy arrays indexed by a meter's slot (``self.slot``), so the
pickled family stays compact (a few dozen floats per meter plus 30 nights of night
flow).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import pandas as pd

from rules.model import DAY_MS, HOUR_MS, Family, Finding, Output, Point, fmt_num, jst
from rules.params import WaterParams
from rules.schema import WATER_HOURLY, WATER_NIGHT, WATER_STATE
from rules.transitions import Category, Severity
from sensors.registry import Meter

F = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]
I = npt.NDArray[np.int64]  # noqa: E741

FLAGS: tuple[str, ...] = ("leak", "burst", "reverse", "tamper", "dry", "low_battery")
FLAG_SEVERITY: dict[str, Severity] = {
    "leak": Severity.WARNING,
    "burst": Severity.CRITICAL,
    "reverse": Severity.WARNING,
    "tamper": Severity.WARNING,
    "dry": Severity.WARNING,
    "low_battery": Severity.INFO,
}
FLAG_JA = {
    "leak": "漏水",
    "burst": "過大流量",
    "reverse": "逆流",
    "tamper": "不正操作",
    "dry": "空管(断水)",
    "low_battery": "電池残量低下",
}

# rule → (state name, code) for water_state (rules/schema.py): the worst wins.
STATE_OF: dict[str, tuple[str, int]] = {
    "water.stale": ("stale", 1),
    "water.stuck": ("stuck", 1),
    "water.flag_low_battery": ("low_battery", 1),
    "water.swap": ("swap", 1),
    "water.leak_continuous": ("leak", 2),
    "water.night_flow": ("leak", 2),
    "water.flag_leak": ("leak", 2),
    "water.reverse": ("reverse", 2),
    "water.flag_reverse": ("reverse", 2),
    "water.flag_tamper": ("tamper", 2),
    "water.flag_dry": ("dry", 2),
    "water.watch_no_use": ("watch", 2),
    "water.watch_continuous": ("watch", 2),
    "water.burst": ("burst", 3),
    "water.flag_burst": ("burst", 3),
}

# The "normal use" of a meter (for water.stuck) is an exponentially decayed mean over
# about a month (docs/domain.md#stuck-meter: "a site that normally uses water").
USE_TAU_MS = 30 * DAY_MS
# A batch uploader: the oldest reading of the newest upload is this late (hourly
# senders send seconds after the hour).
BATCH_LAG_MS = 30 * 60_000
# Readings that arrive within this of the newest one belong to the same upload (LoRaWAN
# sends one uplink per value, seconds apart).
UPLOAD_SPREAD_MS = 10 * 60_000
# A register cannot plausibly move faster than this many times Q3 (ISO 4064: the
# overload flow Q4 is 1.25 × Q3); a larger step is a swap or a data error, not use.
MAX_Q3_FACTOR = 2.0

# docs/domain.md#minimum-night-flow: the meter's own median needs some nights first
MIN_MEDIAN_NIGHTS = 7

PARAM_ARRAYS: tuple[str, ...] = (
    "leak_window_h",
    "leak_zero_hour_l",
    "leak_min_lph",
    "leak_bridge_gap_h",
    "leak_warning_lph",
    "burst_q3_share",
    "reverse_min_l",
    "swap_min_drop_share",
    "stuck_days",
    "stuck_normal_lpd",
    "watch_no_use_h",
    "watch_continuous_h",
    "watch_continuous_min_lph",
)

# per-meter state columns (float64; NaN = unknown)
COLS: tuple[str, ...] = (
    "last_time",
    "last_reg",
    "last_arrival",
    "daily",
    "leak_run",
    "leak_min",
    "leak_act",
    "burst_act",
    "burst_hi",
    "rev_act",
    "swap_act",
    "zero_run",
    "stuck_act",
    "use_s",
    "use_h",
    "wn_run",
    "wn_last_use",
    "wn_act",
    "wc_run",
    "wc_act",
    "stale_act",
    *(f"flag_{f}" for f in FLAGS),
)
ZERO_INIT = {"leak_run", "leak_act", "burst_act", "burst_hi", "rev_act", "swap_act", "zero_run"} | {
    "stuck_act",
    "use_s",
    "use_h",
    "wn_run",
    "wn_act",
    "wc_run",
    "wc_act",
    "stale_act",
    "daily",
}


# --------------------------------------------------------------- vectorised helpers


def _prev(x: F, starts: I, carry: F) -> F:
    """x shifted by one row within each meter; a meter's first row gets its carry."""
    p = np.empty_like(x)
    p[1:] = x[:-1]
    p[starts] = carry
    return p


def _ffill_from(defined: B, values: F) -> F:
    """Forward fill ``values`` from the rows where ``defined`` (row 0 must be defined)."""
    idx = np.where(defined, np.arange(len(values)), 0)
    np.maximum.accumulate(idx, out=idx)
    out: F = values[idx]
    return out


def _run(cont: B, w: F, isstart: B, carry_g: F, grp: I) -> F:
    """Per row: the sum of ``w`` over the current run of rows with ``cont``, ending at
    the row (0 where not ``cont``); a meter's run continues from ``carry_g``."""
    w2 = np.where(cont, w, 0.0)
    c = np.cumsum(w2)
    base = np.full(len(c), np.nan)
    base[isstart] = (c - w2 - carry_g[grp])[isstart]
    reset = ~cont
    base[reset] = c[reset]
    defined = reset | isstart
    run: F = c - _ffill_from(defined, base)
    return run


def _latch(fire: B, clear: B, isstart: B, carry_g: F, grp: I) -> F:
    """Set on ``fire``, reset on ``clear`` (fire wins), else keep: 0/1 per row."""
    v = np.full(len(fire), np.nan)
    start_undecided = isstart & ~fire & ~clear
    v[start_undecided] = carry_g[grp][start_undecided]
    v[clear] = 0.0
    v[fire] = 1.0
    out: F = np.nan_to_num(_ffill_from(~np.isnan(v), v))
    return out


def _segmin(val: F, reset: B, isstart: B, carry_g: F, grp: I) -> F:
    """Running minimum of ``val`` since the last ``reset`` row (continuing the carry)."""
    v = val.copy()
    cont_start = isstart & ~reset
    v[cont_start] = np.fmin(v[cont_start], carry_g[grp][cont_start])
    v[reset] = np.inf
    seg = np.cumsum(reset | isstart)
    out: F = np.asarray(pd.Series(v).groupby(seg).cummin(), dtype=np.float64)
    return out


def _changes(act: F, starts: I, carry_g: F) -> I:
    """Rows where a 0/1 series differs from the row before (or the carried state)."""
    prev = _prev(act, starts, np.nan_to_num(carry_g))
    out: I = np.flatnonzero(act != prev)
    return out


def _transitions(  # noqa: PLR0917 - the row arrays of one feed (or its watched subset)
    act: F, starts: I, carry_g: F, grp: I, udev: list[str], t: I
) -> Iterator[tuple[int, str, int, bool]]:
    """:func:`_changes` as the findings need them: (row, meter, time, now active)."""
    for i in _changes(act, starts, carry_g):
        yield int(i), udev[int(grp[i])], int(t[i]), bool(act[i])


def _hm(ms: int) -> str:
    return jst(ms).strftime("%m-%d %H:%M")


class WaterFamily(Family):
    name: ClassVar[str] = "water"
    category: ClassVar[Category] = "water"
    inputs: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "water_meter": ("register_l", "flow_lph", *(f"alarm_{f}" for f in FLAGS)),
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.slot: dict[str, int] = {}
        self.s: dict[str, F] = {c: np.zeros(0) for c in COLS}
        # night flow: meter → [night start ms, min L/h, hours]; history of night minima
        self.night_acc: dict[str, list[float]] = {}
        self.night_hist: dict[str, list[float]] = {}
        self.night_consec: dict[str, int] = {}
        self.night_pending: list[tuple[int, int, str, float]] = []  # eval, night, meter, min
        # meter → rule → event time of the active finding (for water_state)
        self.active: dict[str, dict[str, int]] = {}
        self.state_code: dict[str, tuple[str, int]] = {}
        self.next_stale_ms: float = math.inf
        self._events: list[tuple[int, str, str, bool]] = []

    # ------------------------------------------------------------------ helpers
    @property
    def p(self) -> WaterParams:
        params: WaterParams = self.config.water
        return params

    def _meter(self, dev: str) -> Meter | None:
        return self.registry.meters.get(dev)

    def _district(self, dev: str) -> str | None:
        m = self._meter(dev)
        return m.district if m is not None else None

    def _label(self, dev: str) -> str:
        d = self._district(dev)
        return f"{dev} ({d})" if d else dev

    def _has_overrides(self) -> bool:
        ov = self.config.overrides
        return any(
            "water" in fams
            for scope in ("meter", "district")
            for fams in ov.get(scope, {}).values()
        )

    def _params_for(self, dev: str) -> WaterParams:
        """Global parameters, then the district's, then the meter's overrides.

        Merged here rather than through ``Family.params``: RulesConfig holds dicts and
        is not hashable, so ``rules.config._merged``'s cache cannot take it.
        """
        base = self.p
        district = self._district(dev)
        ov = self.config.overrides
        layers = []
        if district is not None:
            layers.append(ov.get("district", {}).get(district, {}).get("water", {}))
        layers.append(ov.get("meter", {}).get(dev, {}).get("water", {}))
        layers = [x for x in layers if x]
        if not layers:
            return base
        data = base.model_dump()
        for layer in layers:
            data.update(layer)
        return WaterParams.model_validate(data)

    def param_arrays(self, udev: list[str], names: tuple[str, ...]) -> dict[str, F]:
        n = len(udev)
        if not self._has_overrides():
            p = self.p
            return {k: np.full(n, float(getattr(p, k))) for k in names}
        plist = [self._params_for(d) for d in udev]
        return {k: np.array([float(getattr(p, k)) for p in plist]) for k in names}

    def slots(self, udev: list[str]) -> I:
        new = [d for d in udev if d not in self.slot]
        if new:
            base = len(self.slot)
            for i, d in enumerate(new):
                self.slot[d] = base + i
            grow = len(new)
            for c in COLS:
                fill = 0.0 if c in ZERO_INIT else np.nan
                self.s[c] = np.concatenate([self.s[c], np.full(grow, fill)])
        return np.array([self.slot[d] for d in udev], dtype=np.int64)

    def _away(self, dev: str) -> list[tuple[int, int]]:
        """The meter's ``[rules.away]`` periods in epoch ms (validated, offset-aware times:
        rules/config.py reads a time without an offset as JST)."""
        return [
            (int(a.timestamp() * 1000), int(b.timestamp() * 1000))
            for a, b in self.config.away.get(dev, [])
        ]

    def away_rows(self, udev: list[str], grp: I, t: I) -> B:
        """Rows (readings at time ``t``) inside one of their meter's away periods."""
        away = np.zeros(len(t), dtype=bool)
        if not self.config.away:
            return away
        for g, dev in enumerate(udev):
            spans = self._away(dev)
            if spans:
                rows = grp == g
                for a, b in spans:
                    away |= rows & (t > a) & (t <= b)
        return away

    def _emit(  # noqa: PLR0917 - one call shape for every rule's finding
        self,
        out: Output,
        rule: str,
        dev: str,
        active: bool,
        at_ms: int,
        severity: Severity,
        values: dict[str, Any],
        ja: str,
        en: str,
    ) -> None:
        out.finding(
            Finding(
                rule=rule,
                category="water",
                subject=dev,
                subject_kind="meter",
                active=active,
                at_ms=int(at_ms),
                severity=severity,
                district=self._district(dev),
                values=values,
                message=ja,
                message_en=en,
            )
        )
        self._events.append((int(at_ms), dev, rule, active))

    def _flush_state(self, out: Output) -> None:
        """water_state points: the meter's worst active finding after each change."""
        for at, dev, rule, active in sorted(self._events):
            rules = self.active.setdefault(dev, {})
            if active:
                rules[rule] = at
            else:
                rules.pop(rule, None)
            worst = max(
                (STATE_OF.get(r, ("other", 1)) for r in rules),
                key=lambda x: x[1],
                default=("ok", 0),
            )
            if self.state_code.get(dev) != worst:
                self.state_code[dev] = worst
                out.point(
                    WATER_STATE,
                    {"device": dev, "district": self._district(dev) or ""},
                    {"state": worst[0], "code": worst[1]},
                    at,
                )
        self._events = []

    # ------------------------------------------------------------------ feed
    def feed(self, measurement: str, frame: pd.DataFrame, out: Output) -> None:
        meters = self.registry.meters
        known = frame["device"].isin(list(meters)) & frame["register_l"].notna()
        df = frame[known]
        if df.empty:
            return
        self._feed(df, out)
        self._flush_state(out)

    def _feed(self, df: pd.DataFrame, out: Output) -> None:
        r = _Rows(df, self)
        self._hourly_points(r, out)
        self._leak(r, out)
        self._burst(r, out)
        self._reverse(r, out)
        self._swap(r, out)
        self._stuck(r, out)
        self._watch_rows(r, out)
        self._flags(r, out)
        self._uploads(r, out)
        self._night_collect(r)
        # the carried state: each rule put its per-meter values in r.new
        for col, v in r.new.items():
            self.s[col][r.ix] = v
        self._update_next_stale()

    def _hourly_points(self, r: _Rows, out: Output) -> None:
        """water_hourly: one point per interval between readings."""
        grp, udev, prev_t, has_prev, use, reg, rev_l = (
            r.grp,
            r.udev,
            r.prev_t,
            r.has_prev,
            r.use,
            r.reg,
            r.rev_l,
        )
        hv = np.flatnonzero(has_prev)
        dist_g = [self._district(x) or "" for x in udev]
        hp_t = prev_t[hv].astype(np.int64).tolist()
        hp_use = np.nan_to_num(use[hv]).tolist()
        hp_rev = rev_l[hv].tolist()
        hp_reg = reg[hv].tolist()
        hp_g = grp[hv].tolist()
        out.points.extend(
            Point(
                WATER_HOURLY,
                {"device": udev[g], "district": dist_g[g]},
                {"use_l": u, "reverse_l": r, "register_l": rg},
                tm,
            )
            for g, tm, u, r, rg in zip(hp_g, hp_t, hp_use, hp_rev, hp_reg, strict=True)
        )

    def _leak(self, r: _Rows, out: Output) -> None:
        """docs/domain.md#continuous-flow-leak."""
        grp, ends, isstart, S, pa = r.grp, r.ends, r.isstart, r.S, r.pa
        span_h, use, rate, valid = r.span_h, r.use, r.rate, r.valid
        # --- continuous-flow leak (docs/domain.md#continuous-flow-leak): every hour of
        # the window above leak_min_lph; clears after an hour at most leak_zero_hour_l.
        # A gap of up to leak_bridge_gap_h (readings lost on the radio) whose mean flow
        # is above leak_min_lph continues the run: with hourly senders losing 1–3 % of
        # readings, restarting the 24 h at every loss missed the 26 h deadline. A longer
        # gap may hide a zero hour among many, so it breaks the run.
        leaky = (
            valid
            & (span_h <= pa["leak_bridge_gap_h"][grp])
            & (np.nan_to_num(rate, nan=-1.0) > pa["leak_min_lph"][grp])
        )
        leak_run = _run(leaky, np.nan_to_num(span_h), isstart, S["leak_run"], grp)
        leak_min = _segmin(np.where(leaky, rate, np.inf), ~leaky, isstart, S["leak_min"], grp)
        zero = valid & (use <= pa["leak_zero_hour_l"][grp] * np.fmax(span_h, 1.0))
        fire = leaky & (leak_run >= pa["leak_window_h"][grp])
        leak_act = _latch(fire, zero, isstart, S["leak_act"], grp)
        warn_lph = pa["leak_warning_lph"][grp]
        for i, m, at, on in r.changes(leak_act, S["leak_act"]):
            if on:
                mn = float(leak_min[i])
                sev = Severity.WARNING if mn >= warn_lph[i] else Severity.INFO
                hours = float(leak_run[i])
                since = at - int(hours * HOUR_MS)
                self._emit(
                    out,
                    "water.leak_continuous",
                    m,
                    True,
                    at,
                    sev,
                    {"min_lph": round(mn, 1), "hours": round(hours, 1)},
                    f"{self._label(m)}: {fmt_num(hours)} 時間、使用ゼロの時間がありません"
                    f" ({_hm(since)}–{_hm(at)}、最小 {fmt_num(mn, 1)} L/h)。漏水の疑い。",
                    f"{m}: no zero-use hour for {fmt_num(hours)} h ({_hm(since)}–{_hm(at)} JST, "
                    f"lowest {fmt_num(mn, 1)} L/h): suspected leak.",
                )
            else:
                self._emit(
                    out,
                    "water.leak_continuous",
                    m,
                    False,
                    at,
                    Severity.INFO,
                    {"use_l": round(float(use[i]), 1)},
                    f"{self._label(m)}: {_hm(at - HOUR_MS)} からの 1 時間は使用ゼロ。"
                    "漏水の疑いは解消。",
                    f"{m}: a zero-use hour ending {_hm(at)} JST: leak cleared.",
                )

        r.new.update(leak_run=leak_run[ends], leak_min=leak_min[ends], leak_act=leak_act[ends])

    def _burst(self, r: _Rows, out: Output) -> None:
        """docs/domain.md#burst."""
        grp, starts, ends, isstart, S, pa = r.grp, r.starts, r.ends, r.isstart, r.S, r.pa
        rate, valid = r.rate, r.valid
        # --- burst (docs/domain.md#burst): 20 % of Q3 for 30 min. Hourly registers cannot
        # show 30 minutes, and a household can use 500 L in one hour (a bath and the
        # laundry), so the hourly equivalent is an hour at twice the limit (the limit
        # held for the whole hour and more) or two hours running above it.
        thr = pa["burst_q3_share"][grp] * r.q3_lph
        hi = valid & (np.nan_to_num(rate) >= thr)
        strong = valid & (np.nan_to_num(rate) >= 2.0 * thr)
        prev_hi = _prev(hi.astype(np.float64), starts, S["burst_hi"])
        burst_cond = strong | (hi & (prev_hi == 1.0))
        burst_act = _latch(burst_cond, valid & ~hi, isstart, S["burst_act"], grp)
        for i, m, at, on in r.changes(burst_act, S["burst_act"]):
            fl = float(np.nan_to_num(rate[i]))
            self._emit(
                out,
                "water.burst",
                m,
                on,
                at,
                Severity.CRITICAL,
                {"flow_lph": round(fl), "limit_lph": round(float(thr[i]))},
                (
                    f"{self._label(m)}: 過大流量 {fmt_num(fl)} L/h "
                    f"({_hm(at - HOUR_MS)}–{_hm(at)})、"
                    f"基準 {fmt_num(float(thr[i]))} L/h "
                    f"(Q3 の {fmt_num(float(pa['burst_q3_share'][grp][i]) * 100)} %)。破裂の疑い。"
                    if on
                    else f"{self._label(m)}: 流量 {fmt_num(fl)} L/h に低下。過大流量は解消。"
                ),
                (
                    f"{m}: flow {fmt_num(fl)} L/h in the hour to {_hm(at)} JST, limit "
                    f"{fmt_num(float(thr[i]))} L/h: suspected burst."
                    if on
                    else f"{m}: flow down to {fmt_num(fl)} L/h: burst cleared."
                ),
            )

        r.new.update(burst_act=burst_act[ends], burst_hi=hi[ends].astype(np.float64))

    def _reverse(self, r: _Rows, out: Output) -> None:
        """docs/domain.md#reverse-flow."""
        grp, ends, isstart, S, pa = r.grp, r.ends, r.isstart, r.S, r.pa
        prev_t, has_prev, valid, rev_l = r.prev_t, r.has_prev, r.valid, r.rev_l
        # --- reverse flow (docs/domain.md#reverse-flow): a small backwards step
        rev_cond = has_prev & (rev_l >= pa["reverse_min_l"][grp])
        rev_act = _latch(rev_cond, valid & ~rev_cond, isstart, S["rev_act"], grp)
        for i, m, at, on in r.changes(rev_act, S["rev_act"]):
            self._emit(
                out,
                "water.reverse",
                m,
                on,
                at,
                Severity.WARNING,
                {"reverse_l": round(float(rev_l[i]), 1)},
                f"{self._label(m)}: 逆流 {fmt_num(float(rev_l[i]))} L "
                f"({_hm(int(prev_t[i]))}–{_hm(at)})。"
                if on
                else f"{self._label(m)}: 逆流は止まりました ({_hm(at)})。",
                f"{m}: register ran backwards by {fmt_num(float(rev_l[i]))} L (to {_hm(at)} JST)."
                if on
                else f"{m}: reverse flow stopped ({_hm(at)} JST).",
            )

        r.new["rev_act"] = rev_act[ends]

    def _swap(self, r: _Rows, out: Output) -> None:
        """docs/domain.md#meter-swap."""
        prev_reg, reg = r.prev_reg, r.reg
        # --- meter swap (docs/domain.md#meter-swap): info, cleared by the next reading
        swap = r.swap
        swap_act = swap.astype(np.float64)
        for i, m, at, on in r.changes(swap_act, r.S["swap_act"]):
            self._emit(
                out,
                "water.swap",
                m,
                on,
                at,
                Severity.INFO,
                {"register_before_l": float(prev_reg[i]), "register_after_l": float(reg[i])},
                f"{self._label(m)}: メーター交換を検出 (指針 {fmt_num(float(prev_reg[i]))} L → "
                f"{fmt_num(float(reg[i]))} L)。使用量・逆流には数えません。"
                if on
                else f"{self._label(m)}: 交換後の新メーターから受信。",
                f"{m}: meter swap detected (register {fmt_num(float(prev_reg[i]))} L → "
                f"{fmt_num(float(reg[i]))} L); not counted as use."
                if on
                else f"{m}: new meter reporting after the swap.",
            )

        r.new["swap_act"] = swap_act[r.ends]

    def _stuck(self, r: _Rows, out: Output) -> None:
        """docs/domain.md#stuck-meter."""
        t, grp, ends, isstart, udev, S, pa = r.t, r.grp, r.ends, r.isstart, r.udev, r.S, r.pa
        span_h, use, valid = r.span_h, r.use, r.valid
        # --- normal use (decayed mean L/h) and the stuck meter (docs/domain.md#stuck-meter)
        t_end_g = t[ends].astype(np.float64)
        last_known = np.where(np.isnan(S["last_time"]), t_end_g, S["last_time"])
        decay_g = np.exp(-(t_end_g - last_known) / USE_TAU_MS)
        w = np.exp(-(t_end_g[grp] - t) / USE_TAU_MS)
        new_s = S["use_s"] * decay_g + np.bincount(grp, np.where(valid, use, 0.0) * w, len(udev))
        new_h = S["use_h"] * decay_g + np.bincount(grp, np.where(valid, span_h, 0.0) * w, len(udev))
        with np.errstate(invalid="ignore", divide="ignore"):
            lpd_g = 24.0 * np.fmax(S["use_s"] / S["use_h"], new_s / new_h)
        zero_use = valid & (use <= 0.0)
        # [rules.away]: the household said it is away, so no use is expected. Away hours
        # neither count nor break the run, and the notice clears (docs/rules-water.md).
        away = r.away
        zero_run = _run(
            zero_use, np.where(away, 0.0, np.nan_to_num(span_h)), isstart, S["zero_run"], grp
        )
        normal = np.nan_to_num(lpd_g[grp]) > pa["stuck_normal_lpd"][grp]
        stuck_fire = zero_use & (zero_run >= pa["stuck_days"][grp] * 24) & normal & ~away
        stuck_act = _latch(
            stuck_fire, (valid & (use > 0)) | (away & ~stuck_fire), isstart, S["stuck_act"], grp
        )
        for i, m, at, on in r.changes(stuck_act, S["stuck_act"]):
            g = int(grp[i])
            self._emit(
                out,
                "water.stuck",
                m,
                on,
                at,
                Severity.INFO,
                {"zero_h": round(float(zero_run[i])), "normal_lpd": round(float(lpd_g[g]))},
                f"{self._label(m)}: {fmt_num(float(zero_run[i]) / 24, 1)} 日間、使用量ゼロ "
                f"(通常 {fmt_num(float(lpd_g[g]))} L/日)。不在 (旅行・入院など) か"
                "メーター停止か、指針だけでは区別できません。不在の届出がなければ確認を。"
                if on
                else (
                    f"{self._label(m)}: 不在の届出あり ({_hm(at)})。使用ゼロの通知を止めます。"
                    if away[i]
                    else f"{self._label(m)}: 使用を再開 ({_hm(at)})。"
                ),
                f"{m}: zero use for {fmt_num(float(zero_run[i]) / 24, 1)} days "
                f"(normally {fmt_num(float(lpd_g[g]))} L/day): the household may be away, or "
                "the meter may have stopped; the register alone cannot tell. Check unless "
                "the household reported being away."
                if on
                else (
                    f"{m}: away period registered ({_hm(at)} JST): no-use notice withdrawn."
                    if away[i]
                    else f"{m}: use resumed ({_hm(at)} JST)."
                ),
            )

        r.new.update(use_s=new_s, use_h=new_h, zero_run=zero_run[ends], stuck_act=stuck_act[ends])

    def _watch_rows(self, r: _Rows, out: Output) -> None:
        """docs/domain.md#watch-over."""
        t, grp, udev, S, pa = r.t, r.grp, r.udev, r.S, r.pa
        prev_t, has_prev, span_h, use, rate, valid = (
            r.prev_t,
            r.has_prev,
            r.span_h,
            r.use,
            r.rate,
            r.valid,
        )
        # --- watch-over (docs/domain.md#watch-over), watched households only
        wrow = r.watched_g[grp] & has_prev
        new_wn_run = S["wn_run"].copy()
        new_wn_act = S["wn_act"].copy()
        new_wn_last = S["wn_last_use"].copy()
        new_wc_run = S["wc_run"].copy()
        new_wc_act = S["wc_act"].copy()
        if wrow.any():
            sel = np.flatnonzero(wrow)
            self._watch(
                out, sel, grp, udev, t, prev_t, span_h, use, rate, valid, pa,
                S, new_wn_run, new_wn_act, new_wn_last, new_wc_run, new_wc_act,
            )  # fmt: skip

        r.new.update(wn_run=new_wn_run, wn_act=new_wn_act, wn_last_use=new_wn_last)
        r.new.update(wc_run=new_wc_run, wc_act=new_wc_act)

    def _flags(self, r: _Rows, out: Output) -> None:
        """docs/domain.md#device-flags."""
        # --- device flags, passed through (docs/domain.md#device-flags)
        new_flags: dict[str, F] = {}
        for f in FLAGS:
            raw = pd.to_numeric(r.df[f"alarm_{f}"], errors="coerce").to_numpy(dtype=np.float64)
            col = f"flag_{f}"
            act = _latch(raw == 1.0, raw == 0.0, r.isstart, r.S[col], r.grp)
            new_flags[col] = act[r.ends]
            rule = f"water.flag_{f}"
            for _i, m, at, on in r.changes(act, r.S[col]):
                self._emit(
                    out,
                    rule,
                    m,
                    on,
                    at,
                    FLAG_SEVERITY[f],
                    {"flag": f},
                    f"{self._label(m)}: メーターの警報「{FLAG_JA[f]}」({_hm(at)})。"
                    if on
                    else f"{self._label(m)}: メーターの警報「{FLAG_JA[f]}」は解除 ({_hm(at)})。",
                    f"{m}: meter alarm '{f}' ({_hm(at)} JST)."
                    if on
                    else f"{m}: meter alarm '{f}' cleared ({_hm(at)} JST).",
                )

        r.new.update(new_flags)

    def _uploads(self, r: _Rows, out: Output) -> None:
        """docs/domain.md#stale-meter: upload pattern, stale resolution."""
        t, grp, starts, ends, udev, S = r.t, r.grp, r.starts, r.ends, r.udev, r.S
        # --- upload pattern and stale resolution (docs/domain.md#stale-meter)
        arrival = r.arrival
        arr_max_g = np.maximum.reduceat(arrival, starts)
        in_last = arrival >= arr_max_g[grp] - UPLOAD_SPREAD_MS
        lag = np.where(in_last, arrival - t, 0)
        lag_g = np.maximum.reduceat(lag, starts)
        # several readings in one upload, or its oldest reading hours old: a batch sender
        upload_n_g = np.add.reduceat(in_last.astype(np.int64), starts)
        arr_min_g = np.minimum.reduceat(arrival, starts)
        for gi in np.flatnonzero(S["stale_act"] > 0):
            m = udev[int(gi)]
            at = int(arr_min_g[gi])
            self._emit(
                out,
                "water.stale",
                m,
                False,
                at,
                Severity.INFO,
                {},
                f"{self._label(m)}: 受信を再開 ({_hm(at)})。",
                f"{m}: uploads resumed ({_hm(at)} JST).",
            )

        r.new["last_time"] = t[ends].astype(np.float64)
        r.new["last_reg"] = r.reg[ends]
        r.new["last_arrival"] = np.fmax(S["last_arrival"], arr_max_g)
        r.new["daily"] = ((lag_g >= BATCH_LAG_MS) | (upload_n_g >= 2)).astype(np.float64)
        r.new["stale_act"] = np.zeros(len(udev))

    def _watch(  # noqa: PLR0917 - the feed's row arrays, passed through
        self,
        out: Output,
        sel: I,
        grp: I,
        udev: list[str],
        t: I,
        prev_t: F,
        span_h: F,
        use: F,
        rate: F,
        valid: B,
        pa: dict[str, F],
        S: dict[str, F],
        new_wn_run: F,
        new_wn_act: F,
        new_wn_last: F,
        new_wc_run: F,
        new_wc_act: F,
    ) -> None:
        """見守り on the watched meters' rows only (``sel``), same helpers as above."""
        g_sel = grp[sel]
        ug, local = np.unique(g_sel, return_inverse=True)
        n = len(sel)
        isstart = np.ones(n, dtype=bool)
        isstart[1:] = g_sel[1:] != g_sel[:-1]
        starts = np.flatnonzero(isstart)
        ends = np.append(starts[1:] - 1, n - 1)
        tt, sp, us, rt, ok = t[sel], span_h[sel], use[sel], rate[sel], valid[sel]
        zl = pa["leak_zero_hour_l"][g_sel]
        nouse = ok & (us <= zl * np.fmax(sp, 1.0))
        used = ok & ~nouse
        last_use = _ffill_from(
            used | isstart,
            np.where(
                used, tt.astype(np.float64), np.where(isstart, S["wn_last_use"][ug][local], np.nan)
            ),
        )
        away = self.away_rows([udev[int(g)] for g in ug], local, tt)
        # Every hour without use counts, night hours too: a silence of 24 h is what
        # matters (docs/rules-water.md#battery-scoring), and an ordinary day out plus
        # the night after it stays well under watch_no_use_h.
        run = _run(
            nouse | ~ok,
            np.where(nouse & ~away, np.nan_to_num(sp), 0.0),
            isstart,
            S["wn_run"][ug],
            local,
        )
        fire = (run >= pa["watch_no_use_h"][g_sel]) & ~away
        act = _latch(fire, used | away, isstart, S["wn_act"][ug], local)
        for i, m, at, on in _transitions(act, starts, S["wn_act"][ug], g_sel, udev, tt):
            lu = last_use[i]
            since = _hm(int(lu)) if not np.isnan(lu) else "–"
            self._emit(
                out,
                "water.watch_no_use",
                m,
                on,
                at,
                Severity.WARNING,
                {"no_use_h": round(float(run[i])), "last_use": since},
                f"見守り {self._label(m)}: {fmt_num(float(run[i]))} 時間、"
                f"水の使用がありません (最後の使用 {since})。"
                if on
                else (
                    f"見守り {self._label(m)}: 不在期間のため見守り警報を停止。"
                    if away[i]
                    else f"見守り {self._label(m)}: {_hm(at)} までに水の使用あり。安心です。"
                ),
                f"Watch-over {m}: no water use for {fmt_num(float(run[i]))} hours "
                f"(last use {since} JST)."
                if on
                else f"Watch-over {m}: water used again by {_hm(at)} JST.",
            )
        # continuous use: every hour above watch_continuous_min_lph for N hours
        heavy = ok & (np.nan_to_num(rt) >= pa["watch_continuous_min_lph"][g_sel])
        crun = _run(heavy, np.nan_to_num(sp), isstart, S["wc_run"][ug], local)
        cfire = heavy & (crun >= pa["watch_continuous_h"][g_sel]) & ~away
        cact = _latch(cfire, ~cfire & (ok | away), isstart, S["wc_act"][ug], local)
        for i, m, at, on in _transitions(cact, starts, S["wc_act"][ug], g_sel, udev, tt):
            self._emit(
                out,
                "water.watch_continuous",
                m,
                on,
                at,
                Severity.WARNING,
                {"hours": round(float(crun[i])), "flow_lph": round(float(np.nan_to_num(rt[i])))},
                f"見守り {self._label(m)}: {fmt_num(float(crun[i]))} 時間、水が出続けています "
                f"(直近 {fmt_num(float(np.nan_to_num(rt[i])))} L/h)。"
                if on
                else f"見守り {self._label(m)}: 連続使用は止まりました ({_hm(at)})。",
                f"Watch-over {m}: water running for {fmt_num(float(crun[i]))} h "
                f"(last hour {fmt_num(float(np.nan_to_num(rt[i])))} L/h)."
                if on
                else f"Watch-over {m}: continuous use stopped ({_hm(at)} JST).",
            )
        new_wn_run[ug] = run[ends]
        new_wn_act[ug] = act[ends]
        new_wn_last[ug] = last_use[ends]
        new_wc_run[ug] = crun[ends]
        new_wc_act[ug] = cact[ends]

    # ------------------------------------------------------------------ night flow
    def _night_collect(self, r: _Rows) -> None:
        """Night minima per meter (docs/domain.md#minimum-night-flow), evaluated in tick."""
        udev, grp, t, ends = r.udev, r.grp, r.t, r.ends
        prev_t, span_h, rate, valid, hour_jst = r.prev_t, r.span_h, r.rate, r.valid, r.hour_jst
        p = self.p
        ns, ne = p.night_start_hour, p.night_end_hour
        mask = valid & (span_h == 1.0) & (hour_jst >= ns) & (hour_jst < ne)
        last_t = t[ends]
        if mask.any():
            rows = np.flatnonzero(mask)
            night = prev_t[rows].astype(np.int64) - (hour_jst[rows] - ns) * HOUR_MS
            frame = pd.DataFrame({"g": grp[rows], "night": night, "rate": rate[rows]})
            agg = frame.groupby(["g", "night"], sort=True)["rate"].agg(["min", "count"])
            for (g, night_ms), mn, cnt in zip(
                agg.index, agg["min"].to_numpy(), agg["count"].to_numpy(), strict=True
            ):
                m = udev[int(g)]
                acc = self.night_acc.get(m)
                if acc is not None and int(acc[0]) != int(night_ms):
                    self._night_close(m, acc)
                    acc = None
                if acc is None:
                    self.night_acc[m] = [float(night_ms), float(mn), float(cnt)]
                else:
                    acc[1] = min(acc[1], float(mn))
                    acc[2] += float(cnt)
        night_len = (ne - ns) * HOUR_MS
        for g, m in enumerate(udev):
            acc = self.night_acc.get(m)
            if acc is not None and last_t[g] >= acc[0] + night_len:
                self._night_close(m, acc)
                del self.night_acc[m]

    def _night_close(self, m: str, acc: list[float]) -> None:
        p = self.p
        night_ms = int(acc[0])
        eval_ms = night_ms + (p.night_evaluate_hour - p.night_start_hour) * HOUR_MS
        self.night_pending.append((eval_ms, night_ms, m, acc[1]))

    def _night_evaluate(self, now_ms: int, out: Output) -> None:
        if not self.night_pending:
            return
        due = sorted(x for x in self.night_pending if x[0] <= now_ms)
        if not due:
            return
        self.night_pending = [x for x in self.night_pending if x[0] > now_ms]
        for eval_ms, night_ms, m, mn in due:
            p = self._params_for(m) if self._has_overrides() else self.p
            hist = self.night_hist.setdefault(m, [])
            # A median of a few nights is no baseline (and a leak present from the start
            # would be its own baseline): until a week is known, the floor alone.
            median = statistics.median(hist) if len(hist) >= MIN_MEDIAN_NIGHTS else 0.0
            limit = max(p.night_min_lph, p.night_median_factor * median)
            above = mn > limit
            consec = self.night_consec.get(m, 0) + 1 if above else 0
            self.night_consec[m] = consec
            # A night above the limit stays out of the baseline, or a lasting leak would
            # become its own median within two weeks and "resolve" while still leaking.
            if not above:
                hist.append(mn)
            del hist[: max(0, len(hist) - p.night_median_nights)]
            out.point(
                WATER_NIGHT,
                {"device": m, "district": self._district(m) or ""},
                {
                    "min_flow_lph": float(mn),
                    "median30_lph": float(median),
                    "limit_lph": float(limit),
                },
                night_ms,
            )
            active = consec >= p.night_consecutive
            was = "water.night_flow" in self.active.get(m, {})
            if active == was:
                continue
            night_s = jst(night_ms).strftime("%m-%d")
            self._emit(
                out,
                "water.night_flow",
                m,
                active,
                eval_ms,
                Severity.WARNING,
                {"min_flow_lph": round(mn, 1), "limit_lph": round(limit, 1), "nights": consec},
                f"{self._label(m)}: 夜間最小流量 {fmt_num(mn, 1)} L/h ({night_s} "
                f"{p.night_start_hour:02d}:00–{p.night_end_hour:02d}:00)、"
                f"基準 {fmt_num(limit, 1)} L/h を {consec} 夜連続で超過。漏水の疑い。"
                if active
                else f"{self._label(m)}: 夜間最小流量 {fmt_num(mn, 1)} L/h ({night_s})、"
                f"基準 {fmt_num(limit, 1)} L/h 以下に戻りました。",
                f"{m}: minimum night flow {fmt_num(mn, 1)} L/h ({night_s}) above "
                f"{fmt_num(limit, 1)} L/h for {consec} nights: suspected leak."
                if active
                else f"{m}: minimum night flow {fmt_num(mn, 1)} L/h ({night_s}) back under "
                f"{fmt_num(limit, 1)} L/h.",
            )

    # ------------------------------------------------------------------ stale
    def _update_next_stale(self) -> None:
        st = self.s
        if not len(st["last_arrival"]):
            self.next_stale_ms = math.inf
            return
        due = st["last_arrival"] + self._stale_thr_ms()
        due = np.where(st["stale_act"] > 0, np.nan, due)
        self.next_stale_ms = float(np.nanmin(due)) if np.isfinite(due).any() else math.inf

    def _stale_thr_ms(self) -> F:
        p = self.p
        daily = self.s["daily"] > 0
        if not self._has_overrides():
            return np.where(daily, p.stale_daily_h, p.stale_hourly_h) * HOUR_MS
        devs = sorted(self.slot, key=self.slot.__getitem__)
        pl = [self._params_for(d) for d in devs]
        hourly_h = np.array([x.stale_hourly_h for x in pl])
        daily_h = np.array([x.stale_daily_h for x in pl])
        out: F = np.where(daily, daily_h, hourly_h) * HOUR_MS
        return out

    def _stale_check(self, now_ms: int, out: Output) -> None:
        if now_ms < self.next_stale_ms:
            return
        st = self.s
        thr = self._stale_thr_ms()
        due = st["last_arrival"] + thr
        hit = np.flatnonzero((due <= now_ms) & (st["stale_act"] == 0))
        devs = sorted(self.slot, key=self.slot.__getitem__)
        for k in hit:
            m = devs[int(k)]
            at = int(due[k])
            last = int(st["last_arrival"][k])
            daily = bool(st["daily"][k] > 0)
            hours = thr[k] / HOUR_MS
            st["stale_act"][k] = 1.0
            kind_ja = "1日1回送信" if daily else "毎時送信"
            self._emit(
                out,
                "water.stale",
                m,
                True,
                at,
                Severity.INFO,
                {"last_arrival": _hm(last), "threshold_h": hours, "daily": daily},
                f"{self._label(m)}: {fmt_num(hours)} 時間受信なし "
                f"(最終受信 {_hm(last)}、{kind_ja})。",
                f"{m}: nothing received for {fmt_num(hours)} h (last {_hm(last)} JST, "
                f"{'daily' if daily else 'hourly'} sender).",
            )
        self._update_next_stale()

    # ------------------------------------------------------------------ tick
    def tick(self, now_ms: int, out: Output) -> None:
        self._stale_check(now_ms, out)
        self._night_evaluate(now_ms, out)
        self._flush_state(out)


class _Rows:
    """One feed's readings (sorted by meter, then time) as arrays, with the per-meter
    carried state ``S``, parameters ``pa`` and registry facts; rules put the meters'
    new state in ``new`` (column → per-meter values)."""

    def __init__(self, df: pd.DataFrame, fam: WaterFamily) -> None:
        dev = df["device"].to_numpy(dtype=object)
        self.df = df
        self.t: I = df["time"].to_numpy(dtype=np.int64)
        self.arrival: I = df["arrival"].to_numpy(dtype=np.int64)
        self.reg: F = df["register_l"].to_numpy(dtype=np.float64)
        n = len(self.t)
        brk = np.flatnonzero(dev[1:] != dev[:-1]) + 1
        self.starts: I = np.concatenate([[0], brk]).astype(np.int64)
        self.ends: I = np.concatenate([brk - 1, [n - 1]]).astype(np.int64)
        self.grp: I = np.repeat(np.arange(len(self.starts)), np.diff(np.append(self.starts, n)))
        self.isstart: B = np.zeros(n, dtype=bool)
        self.isstart[self.starts] = True
        self.udev = [str(x) for x in dev[self.starts]]
        self.ix = fam.slots(self.udev)
        self.S = {c: fam.s[c][self.ix] for c in COLS}  # carried state per meter
        meters = [fam.registry.meters[d] for d in self.udev]
        self.q3_lph: F = np.array([m.q3_m3h * 1000.0 for m in meters])[self.grp]
        self.roll_g: F = np.array([float(m.rollover_l) for m in meters])
        self.watched_g: B = np.array([m.watched for m in meters], dtype=bool)
        self.pa = fam.param_arrays(self.udev, PARAM_ARRAYS)
        self.new: dict[str, F] = {}
        self.away: B = fam.away_rows(self.udev, self.grp, self.t)
        self._differences()

    def changes(self, act: F, carry_g: F) -> Iterator[tuple[int, str, int, bool]]:
        """The rows where a rule's 0/1 series ``act`` changes (from the carried state
        ``carry_g`` at a meter's first row): (row, meter, time, now active)."""
        return _transitions(act, self.starts, carry_g, self.grp, self.udev, self.t)

    def _differences(self) -> None:
        """Register differences → use / reverse / rollover / swap (docs/domain.md#
        cumulative-registers, #register-rollover, #meter-swap, #reverse-flow)."""
        t, reg, grp, starts, S = self.t, self.reg, self.grp, self.starts, self.S
        prev_t = _prev(t.astype(np.float64), starts, S["last_time"])
        prev_reg = _prev(reg, starts, S["last_reg"])
        has_prev = ~np.isnan(prev_t)
        span_h = np.where(has_prev, (t - np.nan_to_num(prev_t)) / HOUR_MS, np.nan)
        d = reg - prev_reg
        max_l = self.q3_lph * MAX_Q3_FACTOR * np.fmax(span_h, 1.0)
        wrap = reg + self.roll_g[grp] - prev_reg
        back = has_prev & (d < 0)
        rollover = back & (wrap >= 0) & (wrap <= max_l)
        drop = -d
        share = self.pa["swap_min_drop_share"][grp]
        swap = back & ~rollover & (drop >= share * prev_reg) & (drop > max_l)
        reverse = back & ~rollover & ~swap
        # an implausible forward step (a swap to a higher register): not use
        jump = has_prev & (d > max_l)
        valid = has_prev & ~swap & ~jump
        self.prev_t: F = prev_t
        self.prev_reg: F = prev_reg
        self.has_prev: B = has_prev
        self.span_h: F = span_h
        self.swap: B = swap
        self.valid: B = valid
        self.use: F = np.where(valid, np.where(rollover, wrap, np.where(reverse, 0.0, d)), np.nan)
        self.rev_l: F = np.where(reverse, drop, 0.0)
        self.rate: F = self.use / span_h  # L/h over the interval (NaN where unknown)
        self.hour_jst: I = ((np.nan_to_num(prev_t) + 9 * HOUR_MS) // HOUR_MS % 24).astype(np.int64)


__all__ = ["WaterFamily"]
