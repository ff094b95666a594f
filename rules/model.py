"""The rule families' small contract with the engine.

A *family* (water, snow, plows, system) is an object that the engine

1. ``feed``\\ s with the newly *visible* points of the raw measurements it reads
   (per device in time order; a point is visible once it has arrived), and
2. ``tick``\\ s at every evaluation time ``now`` (the scheduler's step).

Both calls report through :class:`Output`: *findings* (a rule's condition for a
subject, active or not, at an event time) and derived points for InfluxDB. The
engine turns a finding whose activity differs from the subject's last known status
into a transition (``rules/transitions.py``) — a family need not remember what it
already reported. Between cycles the engine pickles each family object into the
state database, so a family keeps its running state in plain attributes and a restart
continues exactly where it stopped (docs/rules.md#exactly-once).

A family must be deterministic given the same feeds and ticks: that is what makes a
backtest equal the live scheduler (docs/rules.md#backtest).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

import pandas as pd

from rules.config import RulesConfig, Scope
from rules.transitions import Category, Severity, SubjectKind, Value
from sensors.registry import Registry

JST = ZoneInfo("Asia/Tokyo")
HOUR_MS = 3_600_000
MINUTE_MS = 60_000
DAY_MS = 86_400_000


def ms_to_dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def dt_to_ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def jst(ms: int) -> datetime:
    """A UTC millisecond time as a local (Asia/Tokyo) datetime."""
    return datetime.fromtimestamp(ms / 1000, JST)


def hhmm(ms: int) -> str:
    return jst(ms).strftime("%H:%M")


def floor_hour(ms: int) -> int:
    return ms - ms % HOUR_MS


def fmt_num(x: float, digits: int = 0) -> str:
    """A number for a message: no '-0', no 'nan'."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{digits}f}" if digits else f"{round(x):d}"


@dataclass(frozen=True, slots=True)
class Finding:
    """One evaluation of a rule's condition for one subject.

    ``at_ms`` is the event time: when the condition became what ``active`` says
    (for a rule evaluated on hourly data, the end of the hour that decided it).
    """

    rule: str
    category: Category
    subject: str
    subject_kind: SubjectKind
    active: bool
    at_ms: int
    severity: Severity
    district: str | None = None
    values: Mapping[str, Value] = field(default_factory=dict)
    message: str = ""
    message_en: str = ""


@dataclass(frozen=True, slots=True)
class Change:
    """What a rule says about one subject: a :class:`Finding` before the family adds
    what it knows itself (its category, the subject's kind and district)."""

    rule: str
    subject: str
    active: bool
    at_ms: int
    severity: Severity
    values: Mapping[str, Value]
    message: str
    message_en: str


@dataclass(frozen=True, slots=True)
class Point:
    measurement: str
    tags: Mapping[str, str]
    fields: Mapping[str, Any]
    time_ms: int


class Output:
    """Collects what families produce in one cycle."""

    def __init__(self) -> None:
        self.findings: list[Finding] = []
        self.points: list[Point] = []

    def finding(self, f: Finding) -> None:
        self.findings.append(f)

    def point(
        self, measurement: str, tags: Mapping[str, str], fields: Mapping[str, Any], time_ms: int
    ) -> None:
        self.points.append(Point(measurement, dict(tags), dict(fields), int(time_ms)))


@dataclass
class Shared:
    """Facts one family publishes for others within the engine (same process, same
    step order, so live and backtest see them alike). Pickled with the state."""

    # plows → snow: the ends of recent dispatches (ms): evaluating an hour of snow that
    # arrived late must use the plowing before that hour, not one that happened since.
    plowing_ends_ms: list[int] = field(default_factory=list)
    # plows → system/snow: the active dispatch id, or None
    active_dispatch: str | None = None
    active_dispatch_start_ms: int | None = None
    # plows → snow: when the last plow of the active dispatch came back (ms), while the
    # plow family waits ``dispatch_end_min`` before closing it; None otherwise
    plows_back_ms: int | None = None

    @property
    def last_plowing_end_ms(self) -> int | None:
        """When the town was last plowed (end of the last dispatch), ms."""
        return self.plowing_ends_ms[-1] if self.plowing_ends_ms else None

    def plowed(self, end_ms: int) -> None:
        """A dispatch ended at ``end_ms`` (the last plow back)."""
        self.plowing_ends_ms = sorted({*self.plowing_ends_ms, end_ms})[-64:]

    def last_plowing_before(self, t_ms: int) -> int | None:
        """The end of the last dispatch that ended at or before ``t_ms``: every plow
        back counts as the end already, before the plow family closes the dispatch
        (a plow going out again takes it back)."""
        before = [e for e in self.plowing_ends_ms if e <= t_ms]
        back = self.plows_back_ms
        if back is not None and back <= t_ms:
            before.append(back)
        return max(before) if before else None


class Family:
    """Base class of a rule family. Subclasses set ``name`` and ``inputs``."""

    name: ClassVar[str] = ""
    category: ClassVar[Category] = "system"
    # raw measurement → fields to read (sensors.schema names)
    inputs: ClassVar[Mapping[str, tuple[str, ...]]] = {}

    def __init__(self, registry: Registry, config: RulesConfig, shared: Shared) -> None:
        self.registry = registry
        self.config = config
        self.shared = shared

    def rebind(self, registry: Registry, config: RulesConfig, shared: Shared) -> None:
        """After unpickling: the current registry and config (they may have changed)."""
        self.registry = registry
        self.config = config
        self.shared = shared

    def params(self, scope: Scope, subject: str, district: str | None = None) -> Any:
        """This family's parameters for one subject (overrides applied)."""
        return self.config.for_subject(self.name, scope, subject, district)

    def finding(self, out: Output, subject_kind: SubjectKind, change: Change) -> None:
        """Report a rule's change as a finding of this family's category (``Finding``
        spelled once)."""
        out.finding(
            Finding(
                rule=change.rule,
                category=self.category,
                subject=change.subject,
                subject_kind=subject_kind,
                active=change.active,
                at_ms=change.at_ms,
                severity=change.severity,
                values=change.values,
                message=change.message,
                message_en=change.message_en,
            )
        )

    def feed(self, measurement: str, frame: pd.DataFrame, out: Output) -> None:
        """New visible points: columns ``time`` (int ms UTC), ``arrival`` (int ms),
        ``device`` and the fields named in ``inputs``; sorted by device, then time."""

    def tick(self, now_ms: int, out: Output) -> None:
        """Time-driven evaluation at the scheduler's step ``now_ms``."""

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for k in ("registry", "config", "shared"):
            state.pop(k, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
