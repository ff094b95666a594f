"""The water family's common ground (docs/rules-water.md#code): per-meter state kept
in numpy arrays indexed by a meter's slot, parameters with their overrides, away
periods, how a rule reports a change, and one feed's readings as arrays (:class:`Rows`).

The rules themselves live beside this: ``rules.water_meter`` (leaks, bursts, reverse
flow, swaps, stuck and stale meters, device flags), ``rules.water_watch`` (見守り) and
``rules.water_night`` (minimum night flow); ``rules.water`` puts them together.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from rules.model import HOUR_MS, Change, Family, Finding, Output, jst
from rules.params import WaterParams
from rules.runs import B, F, I, prev, transitions
from rules.transitions import Category
from sensors.registry import Meter

FLAGS: tuple[str, ...] = ("leak", "burst", "reverse", "tamper", "dry", "low_battery")
# A register cannot plausibly move faster than this many times Q3 (ISO 4064: the
# overload flow Q4 is 1.25 × Q3); a larger step is a swap or a data error, not use.
MAX_Q3_FACTOR = 2.0

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
    "leak_span",
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
ZERO_INIT = {
    "leak_run",
    "leak_span",
    "leak_act",
    "burst_act",
    "burst_hi",
    "rev_act",
    "swap_act",
    "zero_run",
} | {
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


def hm(ms: int) -> str:
    """A time in a message: JST month-day hour:minute."""
    return jst(ms).strftime("%m-%d %H:%M")


class WaterBase(Family):
    """State and services every water rule uses; :class:`rules.water.WaterFamily` is
    the family the engine runs."""

    category: ClassVar[Category] = "water"

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

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        # A state pickled before a column was added (e.g. ``leak_span``) gets it with
        # its initial value, so a running engine's state still loads.
        n = len(self.slot)
        for c in COLS:
            if c not in self.s:
                self.s[c] = np.full(n, 0.0 if c in ZERO_INIT else np.nan)

    @property
    def p(self) -> WaterParams:
        params: WaterParams = self.config.water
        return params

    def meter(self, dev: str) -> Meter | None:
        return self.registry.meters.get(dev)

    def district(self, dev: str) -> str | None:
        m = self.meter(dev)
        return m.district if m is not None else None

    def label(self, dev: str) -> str:
        d = self.district(dev)
        return f"{dev} ({d})" if d else dev

    def has_overrides(self) -> bool:
        """Whether any meter or district override touches water: without one, every
        meter has the global parameters (a fast path, not a second merge)."""
        ov = self.config.overrides
        return any(
            "water" in fams
            for scope in ("meter", "district")
            for fams in ov.get(scope, {}).values()
        )

    def params_for(self, dev: str) -> WaterParams:
        """Global parameters, then the district's, then the meter's overrides: the one
        merge of ``RulesConfig.for_subject`` (memoised per config), as for every family."""
        params: WaterParams = self.params("meter", dev, self.district(dev))
        return params

    def param_arrays(self, udev: list[str], names: tuple[str, ...]) -> dict[str, F]:
        n = len(udev)
        if not self.has_overrides():
            p = self.p
            return {k: np.full(n, float(getattr(p, k))) for k in names}
        plist = [self.params_for(d) for d in udev]
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

    def away(self, dev: str) -> list[tuple[int, int]]:
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
            spans = self.away(dev)
            if spans:
                rows = grp == g
                for a, b in spans:
                    away |= rows & (t > a) & (t <= b)
        return away

    def emit(self, out: Output, change: Change) -> None:
        """Report a rule's change for one meter (and remember it for water_state)."""
        out.finding(
            Finding(
                rule=change.rule,
                category="water",
                subject=change.subject,
                subject_kind="meter",
                active=change.active,
                at_ms=int(change.at_ms),
                severity=change.severity,
                district=self.district(change.subject),
                values=change.values,
                message=change.message,
                message_en=change.message_en,
            )
        )
        self._events.append((int(change.at_ms), change.subject, change.rule, change.active))


class Rows:
    """One feed's readings (sorted by meter, then time) as arrays, with the per-meter
    carried state ``S``, parameters ``pa`` and registry facts; rules put the meters'
    new state in ``new`` (column → per-meter values)."""

    def __init__(self, df: pd.DataFrame, fam: WaterBase) -> None:
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
        return transitions(act, self.starts, carry_g, self.grp, self.udev, self.t)

    def _differences(self) -> None:
        """Register differences → use / reverse / rollover / swap (docs/domain.md#
        cumulative-registers, #register-rollover, #meter-swap, #reverse-flow)."""
        t, reg, grp, starts, S = self.t, self.reg, self.grp, self.starts, self.S
        prev_t = prev(t.astype(np.float64), starts, S["last_time"])
        prev_reg = prev(reg, starts, S["last_reg"])
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


__all__ = [
    "COLS",
    "FLAGS",
    "PARAM_ARRAYS",
    "Rows",
    "WaterBase",
    "hm",
]
