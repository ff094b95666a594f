"""Where a cycle's points come from: InfluxDB now (live), or a past period (backtest, a
first start's catch-up), read once as it is replayed.

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
import queue
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from time import perf_counter
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
    df = _select(client, measurement, fields, start_ms, end_ms, device_tag=device_tag)
    return normalise(df, fields, arrival)


def _select(
    client: InfluxQuery,
    measurement: str,
    fields: tuple[str, ...],
    start_ms: int,
    end_ms: int,
    *,
    device_tag: str,
    limit: int | None = None,
) -> pd.DataFrame:
    """The raw rows (``device_tag`` renamed ``device``), in time order; ``limit``: only
    the first so many."""
    cols = ", ".join(_quote(f) for f in (*fields, LAG_FIELD, device_tag))
    q = (
        f"SELECT {cols} FROM {_quote(measurement)} "
        f"WHERE time > {int(start_ms)}ms AND time <= {int(end_ms)}ms"
    )
    if limit is not None:
        q += f" LIMIT {int(limit)}"
    return client.frame(q, str_columns=(device_tag,)).rename(columns={device_tag: "device"})


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
    # lag_s is stored to the millisecond; truncating lag × 1000 (16682.599 s is
    # 16682598.99… ms) made some points of one instant arrive 1 ms early, and a catch-up
    # fed a station's later readings before its earlier ones, which it then dropped.
    arrived = time + np.rint(lag.to_numpy() * 1000).astype("int64")
    out = pd.DataFrame({"time": time.to_numpy(), "arrival": arrived.to_numpy()})
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
LAG_ALIAS = "lag_s_of_"  # + the statement's number (LiveSource._arrived)
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
        if full or since_ms is None:
            for m, fields in inputs.items():
                tag = SUBJECT_TAG.get(m, "device")
                start = now_ms - lookback_ms[m]
                marks = (watermarks or {}).get(m, {})
                df = self._window(m, fields, tag=tag, start_ms=start, now_ms=now_ms, marks=marks)
                out[m] = df[df["arrival"] <= now_ms]
        else:
            arrived = self._arrived(inputs, lookback_ms, now_ms, since_ms - self.slack_ms)
            for m, df in arrived.items():
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
        inputs: Mapping[str, tuple[str, ...]],
        lookback_ms: Mapping[str, int],
        now_ms: int,
        floor_ms: int,
    ) -> dict[str, pd.DataFrame]:
        """Per measurement, the points in its window ``(now − look-back, now]`` that
        arrived after ``floor_ms`` (and a few that arrived shortly before it): every
        measurement's statements in one request."""
        # Everything after floor − LATE_MS; before that, only points whose lag_s says
        # they arrived after the floor (t + lag > floor with t <= floor − LATE_MS needs
        # lag > LATE_MS; 1 ms less, since arrival truncates the lag to whole ms). The
        # older part asks for lag_s alone: what InfluxDB scans and sends is one
        # column, most of it late points processed long ago; the few that are new are
        # then fetched whole. Each statement names its lag_s column after itself, so
        # its answer is told apart from the others' (empty answers are left out).
        statements: list[str] = []
        asked: list[tuple[str, bool]] = []  # per statement: measurement, late part
        for m, fields in inputs.items():
            tag = SUBJECT_TAG.get(m, "device")
            start = now_ms - lookback_ms[m]
            recent = max(floor_ms - LATE_MS, start)
            head = self._head(m, fields, tag, lag_as=f"{LAG_ALIAS}{len(statements)}")
            statements.append(f"{head}time > {recent}ms AND time <= {now_ms}ms")
            asked.append((m, False))
            if recent > start:
                only = self._head(m, (), tag, lag_as=f"{LAG_ALIAS}{len(statements)}")
                statements.append(
                    f"{only}time > {start}ms AND time <= {recent}ms "
                    f"AND {_quote(LAG_FIELD)} > {LATE_MS / 1000 - 0.001:.3f}"
                )
                asked.append((m, True))
        tags = sorted({SUBJECT_TAG.get(m, "device") for m in inputs})
        parts: dict[str, list[pd.DataFrame]] = {m: [] for m in inputs}
        for block in self.client.frames(statements, str_columns=tags):
            col = next(c for c in block.columns if str(c).startswith(LAG_ALIAS))
            m, late_part = asked[int(str(col)[len(LAG_ALIAS) :])]
            tag = SUBJECT_TAG.get(m, "device")
            got = block.rename(columns={tag: "device", col: LAG_FIELD})
            if not late_part:
                parts[m].append(normalise(got, inputs[m]))
                continue
            late = normalise(got, ())
            # arrived since the floor and by now (what arrives later is not visible
            # yet: fetching it whole now would be thrown away)
            arr = late["arrival"].to_numpy()
            late = late[(arr > floor_ms) & (arr <= now_ms)]
            if len(late):
                parts[m].append(self._whole(m, inputs[m], tag=tag, late=late))
        out: dict[str, pd.DataFrame] = {}
        for m, frames in parts.items():
            if not frames:
                out[m] = normalise(pd.DataFrame(), inputs[m])
                continue
            df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
            out[m] = df[df["arrival"] > floor_ms].reset_index(drop=True)
        return out

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


class _Arrivals:
    """One measurement's points not yet handed out, sorted by arrival, then device and
    time (a point's key, so the order does not depend on how the points came in).
    ``by_arrival``: by arrival alone, keeping the order within an instant — enough
    where (device, time) is unique, as in InfluxDB, since the engine sorts what it is
    handed by device and time anyway; a much cheaper sort."""

    def __init__(self, df: pd.DataFrame, *, by_arrival: bool = False) -> None:
        self._df = df.iloc[0:0]
        self._empty = self._df  # handed out when nothing arrived
        self._arrival = np.zeros(0, dtype="int64")
        self._pos = 0
        self._by_arrival = by_arrival
        self.add(df)

    def add(self, df: pd.DataFrame) -> None:
        if df.empty:
            return
        rest = self._df.iloc[self._pos :]
        both = pd.concat([rest, df], ignore_index=True) if len(rest) else df
        if self._by_arrival:
            order = np.argsort(both["arrival"].to_numpy(), kind="stable")
            self._df = both.take(order).reset_index(drop=True)
        else:
            self._df = both.sort_values(["arrival", "device", "time"], kind="stable").reset_index(
                drop=True
            )
        self._arrival = self._df["arrival"].to_numpy()
        self._pos = 0

    def take(self, now_ms: int) -> pd.DataFrame:
        """The points that arrived by ``now_ms`` and were not taken before."""
        pos = self._pos
        if pos >= len(self._arrival) or self._arrival[pos] > now_ms:
            return self._empty  # nothing (more) arrived: most replay steps
        end = int(np.searchsorted(self._arrival, now_ms, side="right"))
        part = self._df.iloc[self._pos : end]
        self._pos = end
        return part


class RecordedSource:
    """A period's points; each call hands out what had arrived by ``now``.

    Points are kept sorted by arrival, so a call only slices; points already handed
    out are not handed out again (the engine's watermarks would drop them anyway).
    Given frames, the whole period is in memory; :meth:`load` instead reads InfluxDB
    in device-time chunks as the replay advances (:class:`StreamedSource`).
    """

    def __init__(self, frames: Mapping[str, pd.DataFrame]) -> None:
        self._frames = dict(frames)
        self._queues = {m: _Arrivals(df) for m, df in self._frames.items()}

    @classmethod
    def load(
        cls,
        client: InfluxQuery,
        inputs: Mapping[str, tuple[str, ...]],
        start_ms: int,
        end_ms: int,
        *,
        arrival: Arrival = "lag",
        chunk_rows: int = 250_000,
    ) -> StreamedSource:
        """The period ``(start_ms, end_ms]`` of InfluxDB, read as it is replayed."""
        return StreamedSource(
            client, inputs, start_ms, end_ms, arrival=arrival, chunk_rows=chunk_rows
        )

    def again(self) -> RecordedSource:
        """The same period, replayed from its start (for another engine)."""
        return RecordedSource(self._frames)

    def arrived_after(self, end_ms: int) -> LateArrivals:
        """How many of the loaded points arrived after ``end_ms`` (a backtest ending
        there never sees them), and their median lag."""
        total = late = 0
        lags: list[np.ndarray] = []
        for df in self._frames.values():
            total += len(df)
            arrival = df["arrival"].to_numpy()
            after = arrival > end_ms
            late += int(after.sum())
            lags.append((arrival - df["time"].to_numpy())[after])
        lag = np.concatenate(lags) if lags else np.zeros(0)
        return LateArrivals(total, late, float(np.median(lag)) / 1000 if len(lag) else 0.0)

    def _load_through(self, now_ms: int) -> None:
        """Make sure every point with a device time up to ``now_ms`` is queued."""

    def visible(
        self,
        inputs: Mapping[str, tuple[str, ...]],
        now_ms: int,
        lookback_ms: Mapping[str, int],
        since_ms: int | None = None,
        watermarks: Mapping[str, Mapping[str, int]] | None = None,
    ) -> dict[str, pd.DataFrame]:
        # A point arrives at or after its device time: once every point up to now is
        # queued, what arrived by now is all there.
        self._load_through(now_ms)
        out = {}
        for m in inputs:
            q = self._queues.get(m)
            if q is None:
                continue
            part = q.take(now_ms)
            if len(part):
                part = part[part["time"].to_numpy() > now_ms - lookback_ms[m]]
            out[m] = part
        return out

    def committed(self, now_ms: int) -> None:
        pass


class StreamedSource(RecordedSource):
    """A period read from InfluxDB as the replay advances: chunks of device time, the
    next read by a background thread while the engine evaluates the current one
    (InfluxDB works on it meanwhile). Memory holds a chunk or two (~``chunk_rows``
    points each) plus the points that arrive later than the replay's time but within
    the period (late uploads). Points arriving after the period are only counted
    (:meth:`arrived_after`): a step after ``end_ms`` hands out nothing more."""

    def __init__(
        self,
        client: InfluxQuery,
        inputs: Mapping[str, tuple[str, ...]],
        start_ms: int,
        end_ms: int,
        *,
        arrival: Arrival = "lag",
        chunk_rows: int = 250_000,
    ) -> None:
        self._args = (client, dict(inputs), start_ms, end_ms, arrival, chunk_rows)
        self._end_ms = end_ms
        self._queues = {
            m: _Arrivals(normalise(pd.DataFrame(), f), by_arrival=True) for m, f in inputs.items()
        }
        self._through_ms = start_ms
        self._loaded = 0  # points read so far
        self.wait_s = 0.0  # the replay waited this long for reads
        self._late_lags: list[np.ndarray] = []  # of those arriving after end_ms (ms)
        self._reader = _ChunkReader(
            client, inputs, start_ms, end_ms, arrival=arrival, chunk_rows=chunk_rows
        )

    def again(self) -> StreamedSource:
        client, inputs, start_ms, end_ms, arrival, chunk_rows = self._args
        return StreamedSource(
            client, inputs, start_ms, end_ms, arrival=arrival, chunk_rows=chunk_rows
        )

    def _load_through(self, now_ms: int) -> None:
        while self._through_ms < min(now_ms, self._end_ms):
            t0 = perf_counter()
            through, frames = self._reader.next()
            self.wait_s += perf_counter() - t0
            for m, got in frames.items():
                self._loaded += len(got)
                arrival = got["arrival"].to_numpy()
                after = arrival > self._end_ms
                if after.any():  # counted, never handed out: not kept
                    self._late_lags.append((arrival - got["time"].to_numpy())[after])
                self._queues[m].add(got[~after] if after.any() else got)
                log.debug("backtest: %s: %d points through %d", m, len(got), through)
            self._through_ms = through

    def arrived_after(self, end_ms: int) -> LateArrivals:
        if end_ms != self._end_ms:
            raise ValueError(f"arrived_after({end_ms}): the period ends at {self._end_ms}")
        self._load_through(self._end_ms)
        lag = np.concatenate(self._late_lags) if self._late_lags else np.zeros(0)
        return LateArrivals(
            self._loaded, len(lag), float(np.median(lag)) / 1000 if len(lag) else 0.0
        )

    def close(self) -> None:
        """Stop reading ahead (a replay abandoned half-way)."""
        self._reader.close()

    def __del__(self) -> None:
        reader = getattr(self, "_reader", None)
        if reader is not None:
            reader.close()


class _ChunkReader:
    """Reads ``(start_ms, end_ms]`` on a thread, a chunk ahead of its consumer: per
    measurement the next ``chunk_rows`` points in device time (InfluxDB returns a
    measurement's points in time order, so ``LIMIT`` cuts it at a time; an empty
    stretch costs nothing and a dense one is never swallowed whole). The measurement
    read least far goes next, so all advance together."""

    def __init__(
        self,
        client: InfluxQuery,
        inputs: Mapping[str, tuple[str, ...]],
        start_ms: int,
        end_ms: int,
        *,
        arrival: Arrival,
        chunk_rows: int,
    ) -> None:
        self._client = client
        self._inputs = dict(inputs)
        self._start_ms, self._end_ms = start_ms, end_ms
        self._arrival: Arrival = arrival
        self._chunk_rows = max(1, chunk_rows)
        self._queue: queue.Queue[tuple[int, dict[str, pd.DataFrame]] | BaseException] = queue.Queue(
            maxsize=1
        )
        self._stop = threading.Event()
        # started by the first ``next``: a source made and never replayed reads nothing
        self._thread = threading.Thread(target=self._run, name="recorded-source", daemon=True)

    def _chunk(self, m: str, after_ms: int) -> tuple[int, pd.DataFrame]:
        """Measurement ``m``'s next points after ``after_ms``, and the device time
        through which it is now read (every point up to it is in this chunk or an
        earlier one)."""
        fields = self._inputs[m]
        tag = SUBJECT_TAG.get(m, "device")
        n = self._chunk_rows
        raw = _select(self._client, m, fields, after_ms, self._end_ms, device_tag=tag, limit=n)
        through = self._end_ms
        if len(raw) >= n:
            time = raw["time"].to_numpy()
            through = int(time[-1])
            if int(time[0]) == through:  # a chunk's worth at one instant: that one whole
                raw = _select(self._client, m, fields, through - 1, through, device_tag=tag)
            else:  # the points at the last instant may go on past the limit: next time
                through -= 1
                raw = raw[time <= through]
        return through, normalise(raw, fields, self._arrival)

    def _run(self) -> None:
        try:
            through = dict.fromkeys(self._inputs, self._start_ms)
            while not self._stop.is_set():
                left = {m: t for m, t in through.items() if t < self._end_ms}
                if not left:
                    break
                m = min(left, key=lambda k: left[k])
                through[m], df = self._chunk(m, left[m])
                self._put((min(through.values()), {m: df}))
        except Exception as exc:  # noqa: BLE001 (re-raised by the consumer, in its thread)
            self._put(exc)

    def _put(self, item: tuple[int, dict[str, pd.DataFrame]] | BaseException) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def next(self) -> tuple[int, dict[str, pd.DataFrame]]:
        """The next chunk: the device time it reaches, and its points per measurement."""
        if self._thread.ident is None:
            self._thread.start()
        while True:
            try:
                item = self._queue.get(timeout=1.0)
                break
            except queue.Empty:
                if not self._thread.is_alive():
                    raise RuntimeError("recorded source: the reading thread stopped") from None
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
