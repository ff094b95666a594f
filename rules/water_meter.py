"""Water rules on every meter's readings (docs/rules-water.md#rules): derived hourly
use, continuous-flow leaks, bursts, reverse flow, meter swaps, stuck meters (with away
periods), device flags, the upload pattern and stale meters.

Each rule is a function of the family and one feed's :class:`rules.water_base.Rows`;
it reports its changes and puts the meters' new carried state in ``r.new``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from rules.model import DAY_MS, HOUR_MS, Change, Output, Point, fmt_num
from rules.runs import F, latch, prev, run_sum, segmin
from rules.schema import WATER_HOURLY
from rules.transitions import Severity
from rules.water_base import FLAGS, Rows, WaterBase, hm

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

# The "normal use" of a meter (for water.stuck) is an exponentially decayed mean over
# about a month (docs/domain.md#stuck-meter: "a site that normally uses water").
USE_TAU_MS = 30 * DAY_MS
# A batch uploader: the oldest reading of the newest upload is this late (hourly
# senders send seconds after the hour).
BATCH_LAG_MS = 30 * 60_000
# Readings that arrive within this of the newest one belong to the same upload (LoRaWAN
# sends one uplink per value, seconds apart).
UPLOAD_SPREAD_MS = 10 * 60_000


def hourly_points(fam: WaterBase, r: Rows, out: Output) -> None:
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
    # one tags mapping per meter, shared by its points (fewer dicts to build)
    tags_g = [{"device": x, "district": fam.district(x) or ""} for x in udev]
    hp_t = prev_t[hv].astype(np.int64).tolist()
    hp_use = np.nan_to_num(use[hv]).tolist()
    hp_rev = rev_l[hv].tolist()
    hp_reg = reg[hv].tolist()
    hp_g = grp[hv].tolist()
    out.points.extend(
        Point(
            WATER_HOURLY,
            tags_g[g],
            {"use_l": u, "reverse_l": r, "register_l": rg},
            tm,
        )
        for g, tm, u, r, rg in zip(hp_g, hp_t, hp_use, hp_rev, hp_reg, strict=True)
    )


def leak(fam: WaterBase, r: Rows, out: Output) -> None:
    """docs/domain.md#continuous-flow-leak."""
    grp, ends, isstart, S, pa = r.grp, r.ends, r.isstart, r.S, r.pa
    span_h, use, rate, valid = r.span_h, r.use, r.rate, r.valid
    # --- continuous-flow leak (docs/domain.md#continuous-flow-leak): every hour of
    # the window above leak_min_lph; clears after an hour at most leak_zero_hour_l.
    # A gap of up to leak_bridge_gap_h (readings lost on the radio) whose mean flow
    # is above leak_min_lph continues the run: with hourly senders losing 1–3 % of
    # readings, restarting the 24 h at every loss missed the 26 h deadline. A longer
    # gap may hide a zero hour among many, so it breaks the run.
    # An interval whose use cannot be known (a meter swap, an implausible forward
    # step) neither counts nor breaks the run: it shows no zero hour, and restarting
    # the 24 h at a swap during a leak missed the 26 h deadline. ``leak_run`` counts
    # the measured leaking hours (the rule fires on them); ``leak_span`` the hours
    # since the run began, unmeasured ones included (the message's window).
    leaky = (
        valid
        & (span_h <= pa["leak_bridge_gap_h"][grp])
        & (np.nan_to_num(rate, nan=-1.0) > pa["leak_min_lph"][grp])
    )
    unknown = r.has_prev & ~valid
    cont = leaky | unknown
    hrs = np.nan_to_num(span_h)
    leak_run = run_sum(cont, np.where(leaky, hrs, 0.0), isstart, S["leak_run"], grp)
    # never shorter than the measured run (a state pickled before leak_span existed
    # carries a run but a zero span)
    span_carry = np.fmax(np.nan_to_num(S["leak_span"]), np.nan_to_num(S["leak_run"]))
    leak_span = run_sum(cont, hrs, isstart, span_carry, grp)
    leak_min = segmin(np.where(leaky, rate, np.inf), ~cont, isstart, S["leak_min"], grp)
    zero = valid & (use <= pa["leak_zero_hour_l"][grp] * np.fmax(span_h, 1.0))
    fire = leaky & (leak_run >= pa["leak_window_h"][grp])
    leak_act = latch(fire, zero, isstart, S["leak_act"], grp)
    warn_lph = pa["leak_warning_lph"][grp]
    for i, m, at, on in r.changes(leak_act, S["leak_act"]):
        if on:
            mn = float(leak_min[i])
            sev = Severity.WARNING if mn >= warn_lph[i] else Severity.INFO
            hours = float(leak_span[i])
            unmeasured = round(hours - float(leak_run[i]), 1)
            since = at - int(hours * HOUR_MS)
            note_ja = (
                f"、うち {fmt_num(unmeasured)} 時間はメーター交換等で計量なし" if unmeasured else ""
            )
            note_en = (
                f", {fmt_num(unmeasured)} h of it unmeasured (meter swap)" if unmeasured else ""
            )
            fam.emit(
                out,
                Change(
                    "water.leak_continuous",
                    m,
                    True,
                    at,
                    sev,
                    {"min_lph": round(mn, 1), "hours": round(hours, 1), "unmeasured_h": unmeasured},
                    f"{fam.label(m)}: {fmt_num(hours)} 時間、使用ゼロの時間がありません"
                    f" ({hm(since)}–{hm(at)}{note_ja}、最小 {fmt_num(mn, 1)} L/h)。漏水の疑い。",
                    f"{m}: no zero-use hour for {fmt_num(hours)} h ({hm(since)}–{hm(at)} JST"
                    f"{note_en}, lowest {fmt_num(mn, 1)} L/h): suspected leak.",
                ),
            )
        else:
            fam.emit(
                out,
                Change(
                    "water.leak_continuous",
                    m,
                    False,
                    at,
                    Severity.INFO,
                    {"use_l": round(float(use[i]), 1)},
                    f"{fam.label(m)}: {hm(at - HOUR_MS)} からの 1 時間は使用ゼロ。"
                    "漏水の疑いは解消。",
                    f"{m}: a zero-use hour ending {hm(at)} JST: leak cleared.",
                ),
            )

    r.new.update(
        leak_run=leak_run[ends],
        leak_span=leak_span[ends],
        leak_min=leak_min[ends],
        leak_act=leak_act[ends],
    )


def burst(fam: WaterBase, r: Rows, out: Output) -> None:
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
    prev_hi = prev(hi.astype(np.float64), starts, S["burst_hi"])
    burst_cond = strong | (hi & (prev_hi == 1.0))
    burst_act = latch(burst_cond, valid & ~hi, isstart, S["burst_act"], grp)
    for i, m, at, on in r.changes(burst_act, S["burst_act"]):
        fl = float(np.nan_to_num(rate[i]))
        fam.emit(
            out,
            Change(
                "water.burst",
                m,
                on,
                at,
                Severity.CRITICAL,
                {"flow_lph": round(fl), "limit_lph": round(float(thr[i]))},
                (
                    f"{fam.label(m)}: 過大流量 {fmt_num(fl)} L/h "
                    f"({hm(at - HOUR_MS)}–{hm(at)})、"
                    f"基準 {fmt_num(float(thr[i]))} L/h "
                    f"(Q3 の {fmt_num(float(pa['burst_q3_share'][grp][i]) * 100)} %)。破裂の疑い。"
                    if on
                    else f"{fam.label(m)}: 流量 {fmt_num(fl)} L/h に低下。過大流量は解消。"
                ),
                (
                    f"{m}: flow {fmt_num(fl)} L/h in the hour to {hm(at)} JST, limit "
                    f"{fmt_num(float(thr[i]))} L/h: suspected burst."
                    if on
                    else f"{m}: flow down to {fmt_num(fl)} L/h: burst cleared."
                ),
            ),
        )

    r.new.update(burst_act=burst_act[ends], burst_hi=hi[ends].astype(np.float64))


def reverse(fam: WaterBase, r: Rows, out: Output) -> None:
    """docs/domain.md#reverse-flow."""
    grp, ends, isstart, S, pa = r.grp, r.ends, r.isstart, r.S, r.pa
    prev_t, has_prev, valid, rev_l = r.prev_t, r.has_prev, r.valid, r.rev_l
    # --- reverse flow (docs/domain.md#reverse-flow): a small backwards step
    rev_cond = has_prev & (rev_l >= pa["reverse_min_l"][grp])
    rev_act = latch(rev_cond, valid & ~rev_cond, isstart, S["rev_act"], grp)
    for i, m, at, on in r.changes(rev_act, S["rev_act"]):
        fam.emit(
            out,
            Change(
                "water.reverse",
                m,
                on,
                at,
                Severity.WARNING,
                {"reverse_l": round(float(rev_l[i]), 1)},
                f"{fam.label(m)}: 逆流 {fmt_num(float(rev_l[i]))} L "
                f"({hm(int(prev_t[i]))}–{hm(at)})。"
                if on
                else f"{fam.label(m)}: 逆流は止まりました ({hm(at)})。",
                f"{m}: register ran backwards by {fmt_num(float(rev_l[i]))} L (to {hm(at)} JST)."
                if on
                else f"{m}: reverse flow stopped ({hm(at)} JST).",
            ),
        )

    r.new["rev_act"] = rev_act[ends]


def swap(fam: WaterBase, r: Rows, out: Output) -> None:
    """docs/domain.md#meter-swap."""
    prev_reg, reg = r.prev_reg, r.reg
    # --- meter swap (docs/domain.md#meter-swap): info, cleared by the next reading
    swap = r.swap
    swap_act = swap.astype(np.float64)
    for i, m, at, on in r.changes(swap_act, r.S["swap_act"]):
        fam.emit(
            out,
            Change(
                "water.swap",
                m,
                on,
                at,
                Severity.INFO,
                {"register_before_l": float(prev_reg[i]), "register_after_l": float(reg[i])},
                f"{fam.label(m)}: メーター交換を検出 (指針 {fmt_num(float(prev_reg[i]))} L → "
                f"{fmt_num(float(reg[i]))} L)。使用量・逆流には数えません。"
                if on
                else f"{fam.label(m)}: 交換後の新メーターから受信。",
                f"{m}: meter swap detected (register {fmt_num(float(prev_reg[i]))} L → "
                f"{fmt_num(float(reg[i]))} L); not counted as use."
                if on
                else f"{m}: new meter reporting after the swap.",
            ),
        )

    r.new["swap_act"] = swap_act[r.ends]


def stuck(fam: WaterBase, r: Rows, out: Output) -> None:
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
    zero_run = run_sum(
        zero_use, np.where(away, 0.0, np.nan_to_num(span_h)), isstart, S["zero_run"], grp
    )
    normal = np.nan_to_num(lpd_g[grp]) > pa["stuck_normal_lpd"][grp]
    stuck_fire = zero_use & (zero_run >= pa["stuck_days"][grp] * 24) & normal & ~away
    stuck_act = latch(
        stuck_fire, (valid & (use > 0)) | (away & ~stuck_fire), isstart, S["stuck_act"], grp
    )
    for i, m, at, on in r.changes(stuck_act, S["stuck_act"]):
        g = int(grp[i])
        fam.emit(
            out,
            Change(
                "water.stuck",
                m,
                on,
                at,
                Severity.INFO,
                {"zero_h": round(float(zero_run[i])), "normal_lpd": round(float(lpd_g[g]))},
                f"{fam.label(m)}: {fmt_num(float(zero_run[i]) / 24, 1)} 日間、使用量ゼロ "
                f"(通常 {fmt_num(float(lpd_g[g]))} L/日)。不在 (旅行・入院など) か"
                "メーター停止か、指針だけでは区別できません。不在の届出がなければ確認を。"
                if on
                else (
                    f"{fam.label(m)}: 不在の届出あり ({hm(at)})。使用ゼロの通知を止めます。"
                    if away[i]
                    else f"{fam.label(m)}: 使用を再開 ({hm(at)})。"
                ),
                f"{m}: zero use for {fmt_num(float(zero_run[i]) / 24, 1)} days "
                f"(normally {fmt_num(float(lpd_g[g]))} L/day): the household may be away, or "
                "the meter may have stopped; the register alone cannot tell. Check unless "
                "the household reported being away."
                if on
                else (
                    f"{m}: away period registered ({hm(at)} JST): no-use notice withdrawn."
                    if away[i]
                    else f"{m}: use resumed ({hm(at)} JST)."
                ),
            ),
        )

    r.new.update(use_s=new_s, use_h=new_h, zero_run=zero_run[ends], stuck_act=stuck_act[ends])


def flags(fam: WaterBase, r: Rows, out: Output) -> None:
    """docs/domain.md#device-flags."""
    # --- device flags, passed through (docs/domain.md#device-flags)
    new_flags: dict[str, F] = {}
    for f in FLAGS:
        raw = pd.to_numeric(r.df[f"alarm_{f}"], errors="coerce").to_numpy(dtype=np.float64)
        col = f"flag_{f}"
        act = latch(raw == 1.0, raw == 0.0, r.isstart, r.S[col], r.grp)
        new_flags[col] = act[r.ends]
        rule = f"water.flag_{f}"
        for _i, m, at, on in r.changes(act, r.S[col]):
            fam.emit(
                out,
                Change(
                    rule,
                    m,
                    on,
                    at,
                    FLAG_SEVERITY[f],
                    {"flag": f},
                    f"{fam.label(m)}: メーターの警報「{FLAG_JA[f]}」({hm(at)})。"
                    if on
                    else f"{fam.label(m)}: メーターの警報「{FLAG_JA[f]}」は解除 ({hm(at)})。",
                    f"{m}: meter alarm '{f}' ({hm(at)} JST)."
                    if on
                    else f"{m}: meter alarm '{f}' cleared ({hm(at)} JST).",
                ),
            )

    r.new.update(new_flags)


def uploads(fam: WaterBase, r: Rows, out: Output) -> None:
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
        fam.emit(
            out,
            Change(
                "water.stale",
                m,
                False,
                at,
                Severity.INFO,
                {},
                f"{fam.label(m)}: 受信を再開 ({hm(at)})。",
                f"{m}: uploads resumed ({hm(at)} JST).",
            ),
        )

    r.new["last_time"] = t[ends].astype(np.float64)
    r.new["last_reg"] = r.reg[ends]
    r.new["last_arrival"] = np.fmax(S["last_arrival"], arr_max_g)
    r.new["daily"] = ((lag_g >= BATCH_LAG_MS) | (upload_n_g >= 2)).astype(np.float64)
    r.new["stale_act"] = np.zeros(len(udev))


def update_next_stale(fam: WaterBase) -> None:
    st = fam.s
    if not len(st["last_arrival"]):
        fam.next_stale_ms = math.inf
        return
    due = st["last_arrival"] + stale_thr_ms(fam)
    due = np.where(st["stale_act"] > 0, np.nan, due)
    fam.next_stale_ms = float(np.nanmin(due)) if np.isfinite(due).any() else math.inf


def stale_thr_ms(fam: WaterBase) -> F:
    p = fam.p
    daily = fam.s["daily"] > 0
    if not fam.has_overrides():
        return np.where(daily, p.stale_daily_h, p.stale_hourly_h) * HOUR_MS
    devs = sorted(fam.slot, key=fam.slot.__getitem__)
    pl = [fam.params_for(d) for d in devs]
    hourly_h = np.array([x.stale_hourly_h for x in pl])
    daily_h = np.array([x.stale_daily_h for x in pl])
    out: F = np.where(daily, daily_h, hourly_h) * HOUR_MS
    return out


def stale_check(fam: WaterBase, now_ms: int, out: Output) -> None:
    if now_ms < fam.next_stale_ms:
        return
    st = fam.s
    thr = stale_thr_ms(fam)
    due = st["last_arrival"] + thr
    hit = np.flatnonzero((due <= now_ms) & (st["stale_act"] == 0))
    devs = sorted(fam.slot, key=fam.slot.__getitem__)
    for k in hit:
        m = devs[int(k)]
        at = int(due[k])
        last = int(st["last_arrival"][k])
        daily = bool(st["daily"][k] > 0)
        hours = thr[k] / HOUR_MS
        st["stale_act"][k] = 1.0
        kind_ja = "1日1回送信" if daily else "毎時送信"
        fam.emit(
            out,
            Change(
                "water.stale",
                m,
                True,
                at,
                Severity.INFO,
                {"last_arrival": hm(last), "threshold_h": hours, "daily": daily},
                f"{fam.label(m)}: {fmt_num(hours)} 時間受信なし (最終受信 {hm(last)}、{kind_ja})。",
                f"{m}: nothing received for {fmt_num(hours)} h (last {hm(last)} JST, "
                f"{'daily' if daily else 'hourly'} sender).",
            ),
        )
    update_next_stale(fam)


__all__ = [
    "burst",
    "flags",
    "hourly_points",
    "leak",
    "reverse",
    "stale_check",
    "stuck",
    "swap",
    "update_next_stale",
    "uploads",
]
