"""Where a cycle's points come from: InfluxDB now (live), or a period loaded once (backtest).

Both give the same thing for an evaluation time ``now``: the points that had *arrived*
by ``now`` (arrival = device time + ``lag_s``, the delay ingest measured; a point
without it counts as arrived at its device time) and whose device time lies in the
look-back window ``(now − lookback, now]`` (per measurement:
``rules.lookback_h_by_measurement``). The engine then keeps, per device, only points
newer than what it already processed. Because both sources apply the same visibility
rule, a backtest sees exactly what the live scheduler saw (docs/rules.md#backtest).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import pandas as pd

from core.influxql import InfluxQuery

log = logging.getLogger(__name__)

LAG_FIELD = "lag_s"

# When a point counts as arrived: "lag" = device time + lag_s (what ingest measured),
# "device" = at its device time (history imported in bulk, where lag_s only says when
# the import ran; docs/rules.md#imported-history).
Arrival = Literal["lag", "device"]


def _quote(name: str) -> str:
    return '"' + name.replace('"', '\\"') + '"'


def query_frame(
    client: InfluxQuery,
    measurement: str,
    fields: tuple[str, ...],
    start_ms: int,
    end_ms: int,
    *,
    device_tag: str = "device",
    arrival: Arrival = "lag",
) -> pd.DataFrame:
    """Points of ``measurement`` with ``start_ms < time <= end_ms``: columns ``time`` (int
    ms), ``arrival`` (int ms), ``device`` (the tag ``device_tag``) and ``fields``
    (missing ones as NaN)."""
    cols = ", ".join(_quote(f) for f in (*fields, LAG_FIELD, device_tag))
    q = (
        f"SELECT {cols} FROM {_quote(measurement)} "
        f"WHERE time > {int(start_ms)}ms AND time <= {int(end_ms)}ms"
    )
    df = client.frame(q, str_columns=(device_tag,))
    return normalise(df.rename(columns={device_tag: "device"}), fields, arrival)


def normalise(df: pd.DataFrame, fields: tuple[str, ...], arrival: Arrival = "lag") -> pd.DataFrame:
    """The frame shape families get, whatever the source produced."""
    for col in ("time", "device", *fields, LAG_FIELD):
        if col not in df.columns:
            df[col] = np.nan if col != "device" else pd.Series(dtype=object)
    df = df[df["device"].notna()]
    time = df["time"].astype("int64")
    lag = pd.to_numeric(df[LAG_FIELD], errors="coerce").fillna(0.0).clip(lower=0.0)
    if arrival == "device":
        lag = lag * 0.0
    out = pd.DataFrame(
        {"time": time.to_numpy(), "arrival": (time + (lag * 1000).astype("int64")).to_numpy()}
    )
    out["device"] = df["device"].astype(str).to_numpy()
    for f in fields:
        out[f] = df[f].to_numpy()
    return out


# A measurement whose subject tag is not ``device`` (ingest's self-metrics).
SUBJECT_TAG = {"yukimizu_deadletter": "reason"}


class Source(Protocol):
    def visible(
        self, inputs: Mapping[str, tuple[str, ...]], now_ms: int, lookback_ms: Mapping[str, int]
    ) -> dict[str, pd.DataFrame]: ...


class LiveSource:
    """Reads the look-back window from InfluxDB every cycle (one query per measurement)."""

    def __init__(self, client: InfluxQuery) -> None:
        self.client = client

    def visible(
        self, inputs: Mapping[str, tuple[str, ...]], now_ms: int, lookback_ms: Mapping[str, int]
    ) -> dict[str, pd.DataFrame]:
        out = {}
        for m, fields in inputs.items():
            tag = SUBJECT_TAG.get(m, "device")
            df = query_frame(
                self.client, m, fields, now_ms - lookback_ms[m], now_ms, device_tag=tag
            )
            out[m] = df[df["arrival"] <= now_ms]
        return out


@dataclass(frozen=True)
class LateArrivals:
    loaded: int  # points loaded for the period
    late: int  # of which arrived after its end
    median_lag_s: float  # their median lag

    @property
    def imported(self) -> bool:
        """A large share of the period arrived after it: history imported or replayed
        in bulk (the last day's late uploads at a period's end are a small share)."""
        return self.late > 0 and self.late >= 0.1 * self.loaded


class RecordedSource:
    """A period loaded once; each call hands out what had arrived by ``now``.

    Points are sorted by arrival, so a call only slices; points already handed out
    are not handed out again (the engine's watermarks would drop them anyway).
    """

    def __init__(self, frames: Mapping[str, pd.DataFrame]) -> None:
        self._frames = {}
        self._arrival = {}
        self._pos: dict[str, int] = {}
        for m, df in frames.items():
            d = df.sort_values(["arrival", "device", "time"], kind="stable").reset_index(drop=True)
            self._frames[m] = d
            self._arrival[m] = d["arrival"].to_numpy()
            self._pos[m] = 0

    @classmethod
    def load(
        cls,
        client: InfluxQuery,
        inputs: Mapping[str, tuple[str, ...]],
        start_ms: int,
        end_ms: int,
        chunk_ms: int = 7 * 86_400_000,
        *,
        arrival: Arrival = "lag",
    ) -> RecordedSource:
        frames = {}
        for m, fields in inputs.items():
            parts = []
            t = start_ms
            while t < end_ms:
                end = min(t + chunk_ms, end_ms)
                tag = SUBJECT_TAG.get(m, "device")
                parts.append(
                    query_frame(client, m, fields, t, end, device_tag=tag, arrival=arrival)
                )
                t += chunk_ms
            frames[m] = (
                pd.concat(parts, ignore_index=True) if parts else normalise(pd.DataFrame(), fields)
            )
            log.info("backtest: %s: %d points", m, len(frames[m]))
        return cls(frames)

    def arrived_after(self, end_ms: int) -> LateArrivals:
        """How many of the loaded points arrived after ``end_ms`` (a backtest ending
        there never sees them), and their median lag."""
        total = late = 0
        lags: list[np.ndarray] = []
        for m, df in self._frames.items():
            total += len(df)
            after = self._arrival[m] > end_ms
            late += int(after.sum())
            lags.append((df["arrival"].to_numpy() - df["time"].to_numpy())[after])
        lag = np.concatenate(lags) if lags else np.zeros(0)
        return LateArrivals(total, late, float(np.median(lag)) / 1000 if len(lag) else 0.0)

    def visible(
        self, inputs: Mapping[str, tuple[str, ...]], now_ms: int, lookback_ms: Mapping[str, int]
    ) -> dict[str, pd.DataFrame]:
        out = {}
        for m in inputs:
            df = self._frames.get(m)
            if df is None:
                continue
            end = int(np.searchsorted(self._arrival[m], now_ms, side="right"))
            start = self._pos[m]
            self._pos[m] = end
            part = df.iloc[start:end]
            out[m] = part[part["time"] > now_ms - lookback_ms[m]]
        return out
