"""Minimum night flow (docs/domain.md#minimum-night-flow, docs/rules-water.md#rules):
:func:`collect` keeps each meter's lowest hourly flow of the night as readings arrive;
:func:`evaluate`, from the family's tick, judges each closed night against the meter's
own median at ``night_evaluate_hour`` and writes ``water_night``.
"""

from __future__ import annotations

import statistics

import numpy as np
import pandas as pd

from rules.model import HOUR_MS, Change, Output, fmt_num, jst
from rules.schema import WATER_NIGHT
from rules.transitions import Severity
from rules.water_base import Rows, WaterBase

# docs/domain.md#minimum-night-flow: the meter's own median needs some nights first
MIN_MEDIAN_NIGHTS = 7


def collect(fam: WaterBase, r: Rows) -> None:
    """Night minima per meter (docs/domain.md#minimum-night-flow), evaluated in tick."""
    udev, grp, t, ends = r.udev, r.grp, r.t, r.ends
    prev_t, span_h, rate, valid, hour_jst = r.prev_t, r.span_h, r.rate, r.valid, r.hour_jst
    p = fam.p
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
            acc = fam.night_acc.get(m)
            if acc is not None and int(acc[0]) != int(night_ms):
                close_night(fam, m, acc)
                acc = None
            if acc is None:
                fam.night_acc[m] = [float(night_ms), float(mn), float(cnt)]
            else:
                acc[1] = min(acc[1], float(mn))
                acc[2] += float(cnt)
    night_len = (ne - ns) * HOUR_MS
    for g, m in enumerate(udev):
        acc = fam.night_acc.get(m)
        if acc is not None and last_t[g] >= acc[0] + night_len:
            close_night(fam, m, acc)
            del fam.night_acc[m]


def close_night(fam: WaterBase, m: str, acc: list[float]) -> None:
    p = fam.p
    night_ms = int(acc[0])
    eval_ms = night_ms + (p.night_evaluate_hour - p.night_start_hour) * HOUR_MS
    fam.night_pending.append((eval_ms, night_ms, m, acc[1]))


def evaluate(fam: WaterBase, now_ms: int, out: Output) -> None:
    if not fam.night_pending:
        return
    due = sorted(x for x in fam.night_pending if x[0] <= now_ms)
    if not due:
        return
    fam.night_pending = [x for x in fam.night_pending if x[0] > now_ms]
    for eval_ms, night_ms, m, mn in due:
        p = fam.params_for(m) if fam.has_overrides() else fam.p
        hist = fam.night_hist.setdefault(m, [])
        # A median of a few nights is no baseline (and a leak present from the start
        # would be its own baseline): until a week is known, the floor alone.
        median = statistics.median(hist) if len(hist) >= MIN_MEDIAN_NIGHTS else 0.0
        limit = max(p.night_min_lph, p.night_median_factor * median)
        above = mn > limit
        consec = fam.night_consec.get(m, 0) + 1 if above else 0
        fam.night_consec[m] = consec
        # A night above the limit stays out of the baseline, or a lasting leak would
        # become its own median within two weeks and "resolve" while still leaking.
        if not above:
            hist.append(mn)
        del hist[: max(0, len(hist) - p.night_median_nights)]
        out.point(
            WATER_NIGHT,
            {"device": m, "district": fam.district(m) or ""},
            {
                "min_flow_lph": float(mn),
                "median30_lph": float(median),
                "limit_lph": float(limit),
            },
            night_ms,
        )
        active = consec >= p.night_consecutive
        was = "water.night_flow" in fam.active.get(m, {})
        if active == was:
            continue
        night_s = jst(night_ms).strftime("%m-%d")
        fam.emit(
            out,
            Change(
                "water.night_flow",
                m,
                active,
                eval_ms,
                Severity.WARNING,
                {"min_flow_lph": round(mn, 1), "limit_lph": round(limit, 1), "nights": consec},
                f"{fam.label(m)}: 夜間最小流量 {fmt_num(mn, 1)} L/h ({night_s} "
                f"{p.night_start_hour:02d}:00–{p.night_end_hour:02d}:00)、"
                f"基準 {fmt_num(limit, 1)} L/h を {consec} 夜連続で超過。漏水の疑い。"
                if active
                else f"{fam.label(m)}: 夜間最小流量 {fmt_num(mn, 1)} L/h ({night_s})、"
                f"基準 {fmt_num(limit, 1)} L/h 以下に戻りました。",
                f"{m}: minimum night flow {fmt_num(mn, 1)} L/h ({night_s}) above "
                f"{fmt_num(limit, 1)} L/h for {consec} nights: suspected leak."
                if active
                else f"{m}: minimum night flow {fmt_num(mn, 1)} L/h ({night_s}) back under "
                f"{fmt_num(limit, 1)} L/h.",
            ),
        )


__all__ = ["collect", "evaluate"]
