"""Vectorised run-length and latch helpers over one feed's rows (docs/rules-water.md#code).

A feed's rows are sorted by subject, then time; ``grp`` gives each row its subject's
index, ``isstart``/``starts`` mark a subject's first row, and ``carry_g`` holds each
subject's value from the previous feed, so a run or latch continues across feeds.
Python never loops over all rows: only :func:`transitions` yields, and only the rows
where a 0/1 series changes.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
import pandas as pd

F = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]
I = npt.NDArray[np.int64]  # noqa: E741


def prev(x: F, starts: I, carry: F) -> F:
    """x shifted by one row within each subject; a subject's first row gets its carry."""
    p = np.empty_like(x)
    p[1:] = x[:-1]
    p[starts] = carry
    return p


def ffill_from(defined: B, values: F) -> F:
    """Forward fill ``values`` from the rows where ``defined`` (row 0 must be defined)."""
    idx = np.where(defined, np.arange(len(values)), 0)
    np.maximum.accumulate(idx, out=idx)
    out: F = values[idx]
    return out


def run_sum(cont: B, w: F, isstart: B, carry_g: F, grp: I) -> F:
    """Per row: the sum of ``w`` over the current run of rows with ``cont``, ending at
    the row (0 where not ``cont``); a subject's run continues from ``carry_g``."""
    w2 = np.where(cont, w, 0.0)
    c = np.cumsum(w2)
    base = np.full(len(c), np.nan)
    base[isstart] = (c - w2 - carry_g[grp])[isstart]
    reset = ~cont
    base[reset] = c[reset]
    defined = reset | isstart
    run: F = c - ffill_from(defined, base)
    return run


def latch(fire: B, clear: B, isstart: B, carry_g: F, grp: I) -> F:
    """Set on ``fire``, reset on ``clear`` (fire wins), else keep: 0/1 per row."""
    v = np.full(len(fire), np.nan)
    start_undecided = isstart & ~fire & ~clear
    v[start_undecided] = carry_g[grp][start_undecided]
    v[clear] = 0.0
    v[fire] = 1.0
    out: F = np.nan_to_num(ffill_from(~np.isnan(v), v))
    return out


def segmin(val: F, reset: B, isstart: B, carry_g: F, grp: I) -> F:
    """Running minimum of ``val`` since the last ``reset`` row (continuing the carry)."""
    v = val.copy()
    cont_start = isstart & ~reset
    v[cont_start] = np.fmin(v[cont_start], carry_g[grp][cont_start])
    v[reset] = np.inf
    seg = np.cumsum(reset | isstart)
    out: F = np.asarray(pd.Series(v).groupby(seg).cummin(), dtype=np.float64)
    return out


def changes(act: F, starts: I, carry_g: F) -> I:
    """Rows where a 0/1 series differs from the row before (or the carried state)."""
    before = prev(act, starts, np.nan_to_num(carry_g))
    out: I = np.flatnonzero(act != before)
    return out


def transitions(  # noqa: PLR0917 - the row arrays of one feed (or its watched subset)
    act: F, starts: I, carry_g: F, grp: I, udev: list[str], t: I
) -> Iterator[tuple[int, str, int, bool]]:
    """:func:`changes` as findings need them: (row, subject, time, now active)."""
    for i in changes(act, starts, carry_g):
        yield int(i), udev[int(grp[i])], int(t[i]), bool(act[i])


__all__ = [
    "B",
    "F",
    "I",
    "changes",
    "ffill_from",
    "latch",
    "prev",
    "run_sum",
    "segmin",
    "transitions",
]
