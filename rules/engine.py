"""One evaluation cycle: visible points → families → findings → transitions → state.

The same :meth:`Engine.cycle` runs live (``yukimizu rules run``: LiveSource, SQLite
state, writes to InfluxDB) and in a backtest (RecordedSource, memory state, writes
nothing), which is why a backtest equals what the live scheduler produced
(docs/rules.md#backtest).
"""

from __future__ import annotations

import json
import logging
import pickle
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from core.influxql import InfluxQuery
from core.lineproto import EncodeError, Encoder
from rules.config import RulesConfig
from rules.model import DAY_MS, Family, Finding, Output, Point, Shared, ms_to_dt
from rules.schema import ALERT_TRANSITION, FIELDS, RULES_STATS, TAGS
from rules.shards import TOWN_WIDE, Shard
from rules.sources import RecordedSource, Source
from rules.state import MemoryState, SqliteState
from rules.transitions import Status, Transition, make_key
from sensors.registry import Registry

log = logging.getLogger(__name__)

ENCODER = Encoder(TAGS, FIELDS)

# Catching up on history steps at most every 10 minutes: a month in a few thousand
# cycles (benchmarks/rules.py measures a season's backtest at this step).
CATCH_UP_STEP_MS = 600_000


@dataclass
class CycleResult:
    now_ms: int
    transitions: list[Transition] = field(default_factory=list)
    points: list[Point] = field(default_factory=list)
    points_read: int = 0
    seconds: float = 0.0
    firing: int = 0
    lines: list[str] = field(default_factory=list)  # derived series, line protocol
    read_s: float = 0.0  # of ``seconds``: asking the source
    family_s: dict[str, float] = field(default_factory=dict)  # feed + tick, per family


@dataclass
class ReplayResult:
    """Many cycles over a period (a backtest, or the catch-up of a first start)."""

    transitions: list[tuple[int, Transition]] = field(default_factory=list)
    points: list[Point] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    steps: int = 0
    points_read: int = 0
    seconds: float = 0.0
    read_wait_s: float = 0.0  # of ``seconds``: waiting for a streamed source's reads


def transition_line(t: Transition) -> str:
    """A transition as the ``alert_transition`` point Grafana annotates with."""
    return ENCODER.encode(
        ALERT_TRANSITION,
        {
            "rule": t.rule,
            "severity": t.severity.value,
            "status": t.status.value,
            "category": t.category,
            "subject": t.subject,
        },
        {
            "key": t.key,
            "district": t.district or "",
            "message": t.message,
            "values": json.dumps(t.values, ensure_ascii=False),
        },
        int(t.event_time.timestamp() * 1000),
    )


def steps(start_ms: int, end_ms: int, step_ms: int) -> list[int]:
    """Evaluation times aligned to the step, as the live scheduler aligns its cycles;
    ``end_ms`` itself last when it is not on the grid (a catch-up ends at "now")."""
    first = start_ms - start_ms % step_ms + step_ms
    out = list(range(first, end_ms + 1, step_ms))
    if not out or out[-1] != end_ms:
        out.append(end_ms)
    return out


class Engine:
    """Runs the families over visible data and keeps statuses exactly-once."""

    def __init__(
        self,
        registry: Registry,
        rcfg: RulesConfig,
        state: SqliteState | MemoryState,
        families: Sequence[type[Family]],
        shard: Shard | None = None,
    ) -> None:
        self.registry = registry
        self.rcfg = rcfg
        self.state = state
        # docs/scale.md#rules-in-shards: town-wide families on shard 0, the rest split.
        self.shard = shard or Shard(0, 1)
        families = self.shard.families(families)
        snap = state.load()
        self.snap = snap
        shared = snap.shared if isinstance(snap.shared, Shared) else Shared()
        self.shared = shared
        self.families: list[Family] = []
        for cls in families:
            blob = snap.families.get(cls.name)
            if blob is not None:
                fam: Family = pickle.loads(blob)
                fam.rebind(registry, rcfg, shared)
            else:
                fam = cls(registry, rcfg, shared)
            self.families.append(fam)
        # The last cycle committed by this process: later cycles read only what arrived
        # since (None at start-up: the whole window is read once).
        self.read_through_ms: int | None = None
        self.inputs: dict[str, tuple[str, ...]] = {}
        for fam in self.families:
            for m, fields in fam.inputs.items():
                merged = dict.fromkeys((*self.inputs.get(m, ()), *fields))
                self.inputs[m] = tuple(merged)
        # Measurements only per-device families read here: only this shard's devices
        # need reading (a source may restrict its queries to them).
        self.own_devices: dict[str, list[str]] = {}
        if self.shard.count > 1:
            town = {m for f in self.families if f.name in TOWN_WIDE for m in f.inputs}
            ids = self.shard.own([*registry.meters, *registry.stations, *registry.plows])
            self.own_devices = {m: ids for m in self.inputs if m not in town}
        self._owner: dict[str, bool] = {}
        self._series_keys: dict[tuple[object, ...], str] = {}
        # statuses firing now: counted once, then kept by _track (not every cycle)
        self._firing = sum(1 for a, _s, _r in snap.status.values() if a)

    @property
    def warm(self) -> bool:
        return self.snap.last_cycle_ms is not None

    # ------------------------------------------------------------------ cycle
    def cycle(
        self,
        now_ms: int,
        source: Source,
        *,
        emit_after_ms: int | None = None,
        commit: bool = True,
        whole_history: bool = False,
    ) -> CycleResult:
        """Evaluate at ``now_ms``. Transitions with an event time before
        ``emit_after_ms`` (first start: now − lookback) only set statuses silently.
        ``commit=False``: leave the state database alone (see :meth:`replay`).
        ``whole_history``: every arrived point counts, however old (a catch-up must
        rebuild state from history that may have arrived in one late bulk)."""
        t0 = time.perf_counter()
        if whole_history:
            lookback_ms = dict.fromkeys(self.inputs, now_ms)
        else:
            lookback_ms = {m: self.rcfg.lookback_ms(m) for m in self.inputs}
        if not self.warm and emit_after_ms is None:
            emit_after_ms = now_ms - int(self.rcfg.lookback_h * 3_600_000)
        since = None if whole_history else self.read_through_ms
        frames = source.visible(self.inputs, now_ms, lookback_ms, since, self.snap.watermarks)
        read_s = time.perf_counter() - t0
        family_s: dict[str, float] = {}
        out = Output()
        read = 0
        new_frames: dict[str, pd.DataFrame] = {}
        for m, df in frames.items():
            read += len(df)
            new_frames[m] = self._new_points(m, df)
        for fam in self.families:
            t_fam = time.perf_counter()
            for m, fields in fam.inputs.items():
                new = new_frames.get(m)
                if new is not None and len(new) and fam.name not in TOWN_WIDE:
                    new = self._owned(new)
                if new is not None and len(new):
                    fam.feed(m, new[["time", "arrival", "device", *fields]], out)
            fam.tick(now_ms, out)
            family_s[fam.name] = time.perf_counter() - t_fam
        transitions = self._track(out.findings, now_ms, emit_after_ms)
        lines = self._lines(out.points, transitions, now_ms)
        firing = self._firing
        self.snap.last_cycle_ms = now_ms
        seconds = time.perf_counter() - t0
        if self.rcfg.write_derived:
            lines.append(
                ENCODER.encode(
                    RULES_STATS,
                    {"instance": self.rcfg.instance + self.shard.suffix},
                    {
                        "cycle_s": seconds,
                        "points_read": read,
                        "transitions": len(transitions),
                        "firing": firing,
                    },
                    now_ms,
                )
            )
        if commit:
            self.persist(transitions, lines)
            self.read_through_ms = now_ms
            source.committed(now_ms)
        return CycleResult(
            now_ms, transitions, out.points, read, seconds, firing, lines, read_s, family_s
        )

    def persist(self, transitions: list[Transition], lines: list[str]) -> None:
        """Commit statuses, watermarks, family state, outbox and pending lines at once."""
        self.snap.shared = self.shared
        self.snap.families = (
            {f.name: pickle.dumps(f, protocol=5) for f in self.families}
            if isinstance(self.state, SqliteState)
            else {}
        )
        self.state.commit(self.snap, transitions, lines if self.rcfg.write_derived else [])

    def replay(
        self,
        source: Source,
        *,
        start_ms: int,
        end_ms: int,
        step_ms: int,
        emit_after_ms: int,
        keep_points: bool = False,
        keep_lines: bool = False,
        whole_history: bool = False,
    ) -> ReplayResult:
        """Cycle at every aligned step in ``(start_ms, end_ms]`` without touching the
        state database, emitting transitions from ``emit_after_ms`` on; then commit once
        (without the derived lines, which the caller writes or drops)."""
        t0 = time.perf_counter()
        res = ReplayResult()
        for now in steps(start_ms, end_ms, step_ms):
            cyc = self.cycle(
                now,
                source,
                emit_after_ms=emit_after_ms,
                commit=False,
                whole_history=whole_history,
            )
            res.steps += 1
            res.points_read += cyc.points_read
            res.transitions.extend((now, t) for t in cyc.transitions)
            if keep_points:
                res.points.extend(cyc.points)
            if keep_lines:
                res.lines.extend(cyc.lines)
        self.persist([t for _s, t in res.transitions], [])
        res.seconds = time.perf_counter() - t0
        return res

    def _owned(self, df: pd.DataFrame) -> pd.DataFrame:
        """The rows of this shard's devices (all of them when not sharded)."""
        if self.shard.count == 1:
            return df
        owner = self._owner
        for d in df["device"].unique():
            if d not in owner:
                owner[d] = self.shard.owns(str(d))
        mask = df["device"].map(owner).to_numpy(dtype=bool)
        return df if mask.all() else df[mask].reset_index(drop=True)

    def _new_points(self, measurement: str, df: pd.DataFrame) -> pd.DataFrame:
        """Per device, only points newer than the newest already processed; sorted by
        device, then time (stable), the last of duplicate (device, time) kept."""
        if df.empty:
            return df
        marks = self.snap.watermarks.setdefault(measurement, {})
        # one factorisation (devices in sorted order) serves the watermarks, the sort,
        # the duplicates and the newest time per device
        codes, devices = pd.factorize(df["device"].to_numpy(), sort=True)
        time = df["time"].to_numpy()
        if marks:
            floor = np.fromiter(
                (marks.get(d, -1) for d in devices), dtype=np.int64, count=len(devices)
            )
            keep = time > floor[codes]
            if not keep.all():
                df, codes, time = df[keep], codes[keep], time[keep]
                if df.empty:
                    return df
        order = np.lexsort((time, codes))
        c, t = codes[order], time[order]
        last = np.ones(len(c), dtype=bool)
        last[:-1] = (c[:-1] != c[1:]) | (t[:-1] != t[1:])
        order, c, t = order[last], c[last], t[last]
        newest = np.ones(len(c), dtype=bool)
        newest[:-1] = c[:-1] != c[1:]
        marks.update(
            zip(
                (str(d) for d in devices[c[newest]]),
                (int(x) for x in t[newest]),
                strict=True,
            )
        )
        return df.iloc[order].reset_index(drop=True)

    def _track(
        self, findings: list[Finding], now_ms: int, emit_after_ms: int | None
    ) -> list[Transition]:
        out: list[Transition] = []
        status = self.snap.status
        for f in sorted(findings, key=lambda x: (x.at_ms, x.rule, x.subject)):
            key = make_key(f.rule, f.subject)
            known = status.get(key)
            was_active = known[0] if known else False
            if f.active == was_active:
                continue
            if known is not None and f.at_ms < known[1]:
                continue  # older than what decided the current status: stale evaluation
            t = Transition(
                key=key,
                rule=f.rule,
                category=f.category,
                subject=f.subject,
                subject_kind=f.subject_kind,
                district=f.district,
                severity=f.severity,
                status=Status.FIRING if f.active else Status.RESOLVED,
                event_time=ms_to_dt(f.at_ms),
                detected_at=ms_to_dt(now_ms),
                values=dict(f.values),
                message=f.message,
                message_en=f.message_en,
            )
            status[key] = (f.active, f.at_ms, t.model_dump_json())
            self._firing += 1 if f.active else -1
            if emit_after_ms is not None and f.at_ms < emit_after_ms:
                continue
            out.append(t)
        return out

    def _lines(self, points: list[Point], transitions: list[Transition], now_ms: int) -> list[str]:
        if not self.rcfg.write_derived:
            return []
        lines = []
        keys = self._series_keys
        for p in points:
            try:
                # a device's series key is the same for each of its points: encoded once
                ck = (p.measurement, *p.tags.items())
                key = keys.get(ck)
                if key is None:
                    if len(keys) > 100_000:
                        keys.clear()
                    key = keys[ck] = ENCODER.series_key(p.measurement, p.tags)
                lines.append(ENCODER.encode_fields(p.measurement, key, p.fields, p.time_ms))
            except EncodeError as exc:
                # A family bug, not data: say so loudly, keep the cycle going.
                log.error("rules: cannot encode derived point %s: %s", p, exc)
        lines.extend(transition_line(t) for t in transitions)
        return lines

    def firing(self) -> list[Transition]:
        """The transitions that started what is firing now."""
        return [Transition.model_validate_json(r) for a, _s, r in self.snap.status.values() if a]


def warm_up(
    engine: Engine, client: InfluxQuery, now_ms: int, *, keep_lines: bool = False
) -> ReplayResult:
    """A first start (or ``rules check``): catch up on ``rules.warmup_days`` of history
    up to ``now_ms``, cycle by cycle as a backtest would (10-minute steps), emitting
    only what changed within the look-back window. The history is read in chunks as
    the replay advances, the next while the engine evaluates the current one
    (:class:`rules.sources.StreamedSource`)."""
    rcfg = engine.rcfg
    start = now_ms - int(rcfg.warmup_days * DAY_MS)
    source = RecordedSource.load(client, engine.inputs, start, now_ms)
    res = engine.replay(
        source,
        start_ms=start,
        end_ms=now_ms,
        step_ms=max(rcfg.interval_s * 1000, CATCH_UP_STEP_MS),
        emit_after_ms=now_ms - int(rcfg.lookback_h * 3_600_000),
        keep_lines=keep_lines,
        whole_history=True,
    )
    res.read_wait_s = source.wait_s
    return res


__all__ = ["CycleResult", "Engine", "ReplayResult", "steps", "transition_line", "warm_up"]
