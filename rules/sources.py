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
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import pandas as pd

from core.influxql import InfluxQuery
from sensors.schema import FIELDS as SCHEMA_FIELDS

log = logging.getLogger(__name__)

LAG_FIELD = "lag_s"

# When a point counts as arrived: "lag" = device time + lag_s (what ingest measured),
# "device" = at its device time (history imported in bulk, where lag_s only says when
# the import ran; docs/rules.md#imported-history).
Arrival = Literal["lag", "device"]


# Characters with a meaning in an InfluxQL (RE2) regex, and its / delimiter.
_RE_SPECIAL = re.compile(r"[\\.^$|?*+()\[\]{}/-]")


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
        values = df[f]
        if f in FLOAT_FIELDS:
            values = pd.Series(pd.to_numeric(values, errors="coerce"), dtype="float64")
        out[f] = values.to_numpy()
    return out


# Fields stored as floats: InfluxDB's CSV prints 5.0 as "5", so a small read of whole
# numbers would come back as integers; every read gives families the same dtype.
FLOAT_FIELDS = frozenset(
    f for fields in SCHEMA_FIELDS.values() for f, kind in fields.items() if kind == "float"
)

# A measurement whose subject tag is not ``device`` (ingest's self-metrics).
SUBJECT_TAG = {"yukimizu_deadletter": "reason", "yukimizu_ingest": "client_id"}


class Source(Protocol):
    def visible(
        self,
        inputs: Mapping[str, tuple[str, ...]],
        now_ms: int,
        lookback_ms: Mapping[str, int],
        since_ms: int | None = None,
        watermarks: Mapping[str, Mapping[str, int]] | None = None,
    ) -> dict[str, pd.DataFrame]:
        """Per measurement, the points visible at ``now_ms`` in the look-back window;
        with ``since_ms`` (the engine's last committed cycle in this process) at least
        those that arrived after it — a source may return more (the engine's
        ``watermarks`` drop what it already processed; a source may drop those
        points itself, per device at or before its watermark)."""
        ...

    def committed(self, now_ms: int) -> None:
        """The engine committed the cycle at ``now_ms``."""
        ...


# Device times older than this before the arrival floor are read only if their lag_s
# says they arrived late (docs/rules.md#incremental-cycles).
LATE_MS = 60_000
LATE_COLUMN = "late_lag_s"
INGEST_STATS = "yukimizu_ingest"


class LiveSource:
    """Reads InfluxDB: the whole look-back window at start-up (no ``since_ms``), after
    that only what arrived since the last committed cycle (docs/rules.md#incremental-cycles).

    What arrived is found from ``lag_s``: every point whose device time is after the
    arrival floor (last cycle − ``slack_ms``) − ``LATE_MS``, plus, in the older part of
    the window, the points whose ``lag_s`` says they arrived after that floor — a
    filter InfluxDB applies while it scans, so only late points travel. ``slack_ms`` covers ingest's
    delay between receiving a reading (its ``lag_s``) and InfluxDB storing it. A
    point held longer — ingest's spool while InfluxDB was away — is caught by a full
    re-read: whenever ingest's own stats (``yukimizu_ingest``: ``spooled``,
    ``spool_depth``) changed since the last committed cycle, or a spool is not empty.
    """

    def __init__(
        self,
        client: InfluxQuery,
        *,
        slack_ms: int = 120_000,
        chunk_rows: int = 250_000,
        devices: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.client = client
        self.slack_ms = slack_ms
        self.chunk_rows = chunk_rows
        # measurement → the only devices to read (a shard's own: Engine.own_devices)
        self.devices = dict(devices or {})
        self.full_reads = 0
        self.incremental_reads = 0
        self._spool_seen: dict[str, tuple[float, float]] | None = None
        self._spool_read: dict[str, tuple[float, float]] | None = None

    def visible(
        self,
        inputs: Mapping[str, tuple[str, ...]],
        now_ms: int,
        lookback_ms: Mapping[str, int],
        since_ms: int | None = None,
        watermarks: Mapping[str, Mapping[str, int]] | None = None,
    ) -> dict[str, pd.DataFrame]:
        spool = self._spool(now_ms - max(lookback_ms.values(), default=0), now_ms)
        self._spool_read = spool
        full = (
            since_ms is None
            or spool != self._spool_seen
            or any(depth > 0 for _n, depth in spool.values())
        )
        out = {}
        for m, fields in inputs.items():
            tag = SUBJECT_TAG.get(m, "device")
            start = now_ms - lookback_ms[m]
            marks = (watermarks or {}).get(m, {})
            if full or since_ms is None:
                df = self._window(m, fields, tag=tag, start_ms=start, now_ms=now_ms, marks=marks)
            else:
                df = self._arrived(
                    m,
                    fields,
                    tag=tag,
                    start_ms=start,
                    now_ms=now_ms,
                    floor_ms=since_ms - self.slack_ms,
                )
            out[m] = df[df["arrival"] <= now_ms]
        if full:
            self.full_reads += 1
        else:
            self.incremental_reads += 1
        return out

    def committed(self, now_ms: int) -> None:
        self._spool_seen = self._spool_read

    def _window(
        self,
        measurement: str,
        fields: tuple[str, ...],
        *,
        tag: str,
        start_ms: int,
        now_ms: int,
        marks: Mapping[str, int],
    ) -> pd.DataFrame:
        """The whole window, a chunk of device time per request, newest last; each
        chunk keeps only points visible at ``now_ms`` and newer than their device's
        watermark, so a restart (state known, window re-read) holds about
        ``self.chunk_rows`` rows at a time, not the window. The first chunk is an
        eighth of the window; the next ones are sized from the rows it held."""
        parts = []
        head = self._head(measurement, fields, tag)
        span = max(1, -(-(now_ms - start_ms) // 8))
        a = start_ms
        while a < now_ms:
            b = min(a + span, now_ms)
            got = self.client.frames([f"{head}time > {a}ms AND time <= {b}ms"], (tag,))
            df = normalise(
                got[0].rename(columns={tag: "device"}) if got else pd.DataFrame(), fields
            )
            keep = df["arrival"].to_numpy() <= now_ms
            if marks and len(df):
                floor = df["device"].map(marks).fillna(-1).to_numpy()
                keep &= df["time"].to_numpy() > floor
            parts.append(df[keep] if not keep.all() else df)
            rate = len(df) / (b - a)  # rows per ms of device time
            span = int(self.chunk_rows / rate) if rate > 0 else now_ms - b
            span = max(span, 1)
            a = b
        if not parts:
            return normalise(pd.DataFrame(), fields)
        return pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]

    def _arrived(
        self,
        measurement: str,
        fields: tuple[str, ...],
        *,
        tag: str,
        start_ms: int,
        now_ms: int,
        floor_ms: int,
    ) -> pd.DataFrame:
        """Points in ``(start_ms, now_ms]`` that arrived after ``floor_ms`` (and a few
        that arrived shortly before it)."""
        head = self._head(measurement, fields, tag)
        # Everything after floor − LATE_MS; before that, only points whose lag_s says
        # they arrived after the floor (t + lag > floor with t <= floor − LATE_MS needs
        # lag > LATE_MS; 1 ms less, since arrival truncates the lag to whole ms). The
        # older part asks for lag_s alone (named LATE_COLUMN to tell it apart): what
        # InfluxDB scans and sends is one column, most of it late points processed
        # long ago; the few that are new are then fetched whole.
        recent = max(floor_ms - LATE_MS, start_ms)
        statements = [f"{head}time > {recent}ms AND time <= {now_ms}ms"]
        if recent > start_ms:
            only = self._head(measurement, (), tag, lag_as=LATE_COLUMN)
            statements.append(
                f"{only}time > {start_ms}ms AND time <= {recent}ms "
                f"AND {_quote(LAG_FIELD)} > {LATE_MS / 1000 - 0.001:.3f}"
            )
        parts = []
        for block in self.client.frames(statements, str_columns=(tag,)):
            got = block.rename(columns={tag: "device"})
            if LATE_COLUMN not in got.columns:
                parts.append(normalise(got, fields))
                continue
            late = normalise(got.rename(columns={LATE_COLUMN: LAG_FIELD}), ())
            late = late[late["arrival"] > floor_ms]
            if len(late):
                parts.append(self._whole(measurement, fields, tag=tag, late=late))
        if not parts:
            return normalise(pd.DataFrame(), fields)
        df = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
        return df[df["arrival"] > floor_ms].reset_index(drop=True)

    def _whole(
        self, measurement: str, fields: tuple[str, ...], *, tag: str, late: pd.DataFrame
    ) -> pd.DataFrame:
        """The whole points behind ``late`` (device, time): one statement over their
        devices and time span, keeping the points asked for."""
        head = self._head(measurement, fields, tag, ids=sorted(set(late["device"])))
        t0, t1 = int(late["time"].min()), int(late["time"].max())
        got = self.client.frames([f"{head}time >= {t0}ms AND time <= {t1}ms"], (tag,))
        if not got:
            return normalise(pd.DataFrame(), fields)
        df = normalise(got[0].rename(columns={tag: "device"}), fields)
        wanted = pd.MultiIndex.from_arrays([late["device"], late["time"]])
        return df[pd.MultiIndex.from_arrays([df["device"], df["time"]]).isin(wanted)]

    def _head(
        self,
        measurement: str,
        fields: tuple[str, ...],
        tag: str,
        *,
        lag_as: str | None = None,
        ids: Sequence[str] | None = None,
    ) -> str:
        """``SELECT … FROM … WHERE`` (and only this shard's devices, if so restricted,
        or only ``ids``)."""
        lag = _quote(LAG_FIELD) + (f" AS {_quote(lag_as)}" if lag_as else "")
        cols = ", ".join([*(_quote(f) for f in fields), lag, _quote(tag)])
        head = f"SELECT {cols} FROM {_quote(measurement)} WHERE "
        if ids is None:
            ids = self.devices.get(measurement)
        if ids is not None:
            alt = "|".join(_RE_SPECIAL.sub(r"\\\g<0>", d) for d in ids)
            head += f"{_quote(tag)} =~ /^({alt})$/ AND "
        return head

    def _spool(self, start_ms: int, now_ms: int) -> dict[str, tuple[float, float]]:
        """Per ingest client: its latest (``spooled``, ``spool_depth``)."""
        q = (
            f'SELECT last("spooled") AS spooled, last("spool_depth") AS depth '
            f"FROM {_quote(INGEST_STATS)} WHERE time > {start_ms}ms AND time <= {now_ms}ms "
            'GROUP BY "client_id"'
        )
        out: dict[str, tuple[float, float]] = {}
        for result in self.client.raw(q):
            for series in result.get("series", []):
                client = (series.get("tags") or {}).get("client_id", "")
                cols = series["columns"]
                row = dict(zip(cols, series["values"][0], strict=True))
                out[client] = (float(row.get("spooled") or 0), float(row.get("depth") or 0))
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

    def again(self) -> RecordedSource:
        """The same period, replayed from its start (for another engine)."""
        return RecordedSource(self._frames)

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
        self,
        inputs: Mapping[str, tuple[str, ...]],
        now_ms: int,
        lookback_ms: Mapping[str, int],
        since_ms: int | None = None,
        watermarks: Mapping[str, Mapping[str, int]] | None = None,
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

    def committed(self, now_ms: int) -> None:
        pass
