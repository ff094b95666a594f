"""The alert transition record: what the rules engine tells the alerts service.

This module is the whole contract between ``rules/`` and ``alerts/`` (the alerts
package imports this module and nothing else of ``rules``). A transition says that
the condition of one rule for one subject changed: it started (``firing``) or ended
(``resolved``) at ``event_time``. The engine emits each transition exactly once per
``(key, status, event_time)``, however often a window is re-evaluated, a delivery is
duplicated or the engine restarts (docs/rules.md#exactly-once).

Where they go:

* the rules state database's ``outbox`` table (SQLite; :func:`read_outbox` reads it
  in order from a cursor — the alerts service keeps its cursor). A row that is not a
  valid transition (truncated, wrong type, unknown field, not UTF-8, written by a
  newer version) does not stop the reader: it comes back as a :class:`BadRecord`
  with the reason, and the cursor moves past it (docs/alerts.md#bad-outbox-records);
* InfluxDB measurement ``alert_transition`` (for Grafana annotations);
* ``yukimizu rules check`` / ``backtest`` print them.

JSON form (``Transition.model_dump_json()``), schema in :data:`JSON_SCHEMA`::

    {"key": "snow.dispatch:town", "rule": "snow.dispatch", "subject": "town",
     "subject_kind": "town", "district": null, "severity": "critical",
     "status": "firing", "event_time": "2026-01-14T16:00:00Z",
     "detected_at": "2026-01-14T16:10:00Z", "values": {"stations": "ST02,ST05", ...},
     "message": "除雪出動基準に達しました: …", "message_en": "Dispatch threshold reached: …",
     "category": "snow"}
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
)

__all__ = [
    "JSON_SCHEMA",
    "BadRecord",
    "Category",
    "OutboxBatch",
    "Severity",
    "Status",
    "SubjectKind",
    "Transition",
    "read_outbox",
]


class Severity(StrEnum):
    """How urgently a person must act.

    ``critical``: wake someone now (dispatch, burst, town-wide depth);
    ``warning``: act today (leak, watch-over, station offline during snow);
    ``info``: for the morning digest (small faults, stale meter, low battery).
    """

    CRITICAL = "critical"
    WARNING = "warning"
    INFO = "info"


class Status(StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"


SubjectKind = Literal["station", "meter", "plow", "segment", "district", "town", "kind"]
Category = Literal["snow", "water", "plow", "system"]

Value = float | int | str | bool | None


class Transition(BaseModel):
    """One change of one rule's condition for one subject."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: Annotated[str, Field(min_length=3, description="dedup key: '{rule}:{subject}'")]
    rule: Annotated[str, Field(description="rule id, e.g. 'water.leak_continuous'")]
    category: Category
    subject: Annotated[str, Field(description="device id, segment id, district or 'town'")]
    subject_kind: SubjectKind
    district: str | None = None
    severity: Severity
    status: Status
    event_time: Annotated[AwareDatetime, Field(description="when the condition changed")]
    detected_at: Annotated[
        AwareDatetime, Field(description="evaluation time at which the engine saw it")
    ]
    values: dict[str, Value] = Field(default_factory=dict)
    message: Annotated[str, Field(description="Japanese text with the justifying numbers")]
    message_en: str = ""

    @field_serializer("event_time", "detected_at")
    def _utc(self, dt: datetime) -> str:
        return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    @property
    def firing(self) -> bool:
        return self.status is Status.FIRING

    def line(self, lang: Literal["ja", "en"] = "ja") -> str:
        """One human line: time (JST), status, severity, message."""
        jst = self.event_time.astimezone(_JST).strftime("%m-%d %H:%M")
        text = self.message if lang == "ja" or not self.message_en else self.message_en
        return f"{jst} JST  {self.status.value:<8} {self.severity.value:<8} {self.key}  {text}"


def make_key(rule: str, subject: str) -> str:
    return f"{rule}:{subject}"


JSON_SCHEMA: dict[str, Any] = Transition.model_json_schema()

_JST = ZoneInfo("Asia/Tokyo")


OUTBOX_DDL = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    status TEXT NOT NULL,
    event_time TEXT NOT NULL,
    record TEXT NOT NULL,
    UNIQUE (key, status, event_time)
)
"""


RAW_KEPT = 65536  # characters of a bad record kept for a person to read


@dataclass(frozen=True, slots=True)
class BadRecord:
    """An outbox row that is not a valid :class:`Transition`."""

    id: int
    raw: str  # as stored, at most RAW_KEPT characters; bytes that are not UTF-8 as \xNN
    size: int  # the whole record's length in bytes
    reason: str


@dataclass(slots=True)
class OutboxBatch:
    """What one :func:`read_outbox` call found, in id order."""

    transitions: list[tuple[int, Transition]] = field(default_factory=list)
    bad: list[BadRecord] = field(default_factory=list)
    last_id: int = 0  # the highest id read, good or bad: the reader's next cursor
    # The outbox holds no id as high as the cursor: the rules state was recreated (its
    # ids start again from 1), and a reader keeping its cursor would skip everything.
    recreated: bool = False


def _decode(oid: int, record: object) -> Transition | BadRecord:
    """One outbox record as a transition, or why it is not one."""
    if isinstance(record, bytes):
        try:
            text = record.decode("utf-8")
        except UnicodeDecodeError as exc:
            raw = record.decode("utf-8", "backslashreplace")
            return BadRecord(oid, raw[:RAW_KEPT], len(record), f"not UTF-8 text: {exc}")
    else:
        text = str(record)
    try:
        return Transition.model_validate_json(text)
    except ValidationError as exc:
        reason = "; ".join(
            f"{'.'.join(str(x) for x in e['loc']) or 'record'}: {e['msg']}" for e in exc.errors()
        )
        size = len(text.encode("utf-8"))
        return BadRecord(oid, text[:RAW_KEPT], size, reason[:1000])


def read_outbox(path: Path, after_id: int = 0, limit: int = 1000) -> OutboxBatch:
    """Rows with ``id > after_id``, oldest first, at most ``limit``.

    ``path`` is the rules state database (``rules.state_dir/rules.sqlite``). A reader
    remembers ``last_id`` as its cursor; ids only grow within one state database, and
    ``recreated`` says the database behind the cursor was replaced. Rows that are not valid
    transitions come back in ``bad`` (never raised), so one bad row cannot stop a
    reader that would otherwise fail on it at every start.
    """
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    con.text_factory = bytes  # a record that is not UTF-8 is a bad record, not an error
    try:
        rows = con.execute(
            "SELECT id, record FROM outbox WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit)
        ).fetchall()
        if not rows and after_id > 0:
            newest = con.execute("SELECT MAX(id) FROM outbox").fetchone()[0]
            if newest is None or int(newest) < after_id:
                return OutboxBatch(last_id=after_id, recreated=True)
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return OutboxBatch(last_id=after_id)
        raise
    finally:
        con.close()
    batch = OutboxBatch(last_id=int(rows[-1][0]) if rows else after_id)
    for oid, record in rows:
        got = _decode(int(oid), record)
        if isinstance(got, BadRecord):
            batch.bad.append(got)
        else:
            batch.transitions.append((int(oid), got))
    return batch
