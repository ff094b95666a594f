"""Watch-over (見守り) for flagged households (docs/domain.md#watch-over,
docs/rules-water.md#rules): no water use for ``watch_no_use_h`` hours, or water
running for ``watch_continuous_h`` hours, on the watched meters' rows only.
"""

from __future__ import annotations

import numpy as np

from rules.model import Change, Output, fmt_num
from rules.runs import F, I, ffill_from, latch, run_sum, transitions
from rules.transitions import Severity
from rules.water_base import Rows, WaterBase, hm

WATCH_COLS: tuple[str, ...] = ("wn_run", "wn_act", "wn_last_use", "wc_run", "wc_act")


def watch_over(fam: WaterBase, r: Rows, out: Output) -> None:
    """docs/domain.md#watch-over: the watched meters' findings and carried state."""
    # every meter keeps its carried values; the watched ones get new ones
    new = {c: r.S[c].copy() for c in WATCH_COLS}
    wrow = r.watched_g[r.grp] & r.has_prev
    if wrow.any():
        _watched(fam, r, np.flatnonzero(wrow), new, out)
    r.new.update(new)


def _watched(fam: WaterBase, r: Rows, sel: I, new: dict[str, F], out: Output) -> None:
    """見守り on the watched meters' rows only (``sel``), same helpers as above."""
    grp, udev, t, span_h, use, rate, valid, pa, S = (
        r.grp, r.udev, r.t, r.span_h, r.use, r.rate, r.valid, r.pa, r.S,
    )  # fmt: skip
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
    last_use = ffill_from(
        used | isstart,
        np.where(
            used, tt.astype(np.float64), np.where(isstart, S["wn_last_use"][ug][local], np.nan)
        ),
    )
    away = fam.away_rows([udev[int(g)] for g in ug], local, tt)
    # Every hour without use counts, night hours too: a silence of 24 h is what
    # matters (docs/rules-water.md#battery-scoring), and an ordinary day out plus
    # the night after it stays well under watch_no_use_h.
    run = run_sum(
        nouse | ~ok,
        np.where(nouse & ~away, np.nan_to_num(sp), 0.0),
        isstart,
        S["wn_run"][ug],
        local,
    )
    fire = (run >= pa["watch_no_use_h"][g_sel]) & ~away
    act = latch(fire, used | away, isstart, S["wn_act"][ug], local)
    for i, m, at, on in transitions(act, starts, S["wn_act"][ug], g_sel, udev, tt):
        lu = last_use[i]
        since = hm(int(lu)) if not np.isnan(lu) else "–"
        fam.emit(
            out,
            Change(
                "water.watch_no_use",
                m,
                on,
                at,
                Severity.WARNING,
                {"no_use_h": round(float(run[i])), "last_use": since},
                f"見守り {fam.label(m)}: {fmt_num(float(run[i]))} 時間、"
                f"水の使用がありません (最後の使用 {since})。"
                if on
                else (
                    f"見守り {fam.label(m)}: 不在期間のため見守り警報を停止。"
                    if away[i]
                    else f"見守り {fam.label(m)}: {hm(at)} までに水の使用あり。安心です。"
                ),
                f"Watch-over {m}: no water use for {fmt_num(float(run[i]))} hours "
                f"(last use {since} JST)."
                if on
                else f"Watch-over {m}: water used again by {hm(at)} JST.",
            ),
        )
    # continuous use: every hour above watch_continuous_min_lph for N hours
    heavy = ok & (np.nan_to_num(rt) >= pa["watch_continuous_min_lph"][g_sel])
    crun = run_sum(heavy, np.nan_to_num(sp), isstart, S["wc_run"][ug], local)
    cfire = heavy & (crun >= pa["watch_continuous_h"][g_sel]) & ~away
    cact = latch(cfire, ~cfire & (ok | away), isstart, S["wc_act"][ug], local)
    for i, m, at, on in transitions(cact, starts, S["wc_act"][ug], g_sel, udev, tt):
        fam.emit(
            out,
            Change(
                "water.watch_continuous",
                m,
                on,
                at,
                Severity.WARNING,
                {"hours": round(float(crun[i])), "flow_lph": round(float(np.nan_to_num(rt[i])))},
                f"見守り {fam.label(m)}: {fmt_num(float(crun[i]))} 時間、水が出続けています "
                f"(直近 {fmt_num(float(np.nan_to_num(rt[i])))} L/h)。"
                if on
                else f"見守り {fam.label(m)}: 連続使用は止まりました ({hm(at)})。",
                f"Watch-over {m}: water running for {fmt_num(float(crun[i]))} h "
                f"(last hour {fmt_num(float(np.nan_to_num(rt[i])))} L/h)."
                if on
                else f"Watch-over {m}: continuous use stopped ({hm(at)} JST).",
            ),
        )
    new["wn_run"][ug] = run[ends]
    new["wn_act"][ug] = act[ends]
    new["wn_last_use"][ug] = last_use[ends]
    new["wc_run"][ug] = crun[ends]
    new["wc_act"][ug] = cact[ends]


__all__ = ["watch_over"]
