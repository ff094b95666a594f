"""The alert transition record: what the rules engine tells the alerts service.

This module is the whole contract between ``rules/`` and ``alerts/`` (the alerts
package imports this module and nothing else of ``rules``). A transition says that
the condition of one rule for one subject changed: it started (``firing``) or ended
(``resolved``) at ``event_time``. The engine emits each transition exactly once per
``(key, status, event_time)``, however often a window is re-evaluated, a delivery is
duplicated or the engine restarts (docs/rules.md#exactly-once).

Where they go:

* the rules state database's ``outbox`` table (SQLite; :func:`read_outbox` reads it
  in order from a cursor — the alerts service keeps its cursor);
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
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_serializer

__all__ = [
    "JSON_SCHEMA",
    "Category",
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


def read_outbox(path: Path, after_id: int = 0, limit: int = 1000) -> list[tuple[int, Transition]]:
    """Transitions with ``id > after_id``, oldest first: ``[(id, transition), …]``.

    ``path`` is the rules state database (``rules.state_dir/rules.sqlite``). A reader
    remembers the last id it handled; ids only grow.
    """
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        rows = con.execute(
            "SELECT id, record FROM outbox WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit)
        ).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        raise
    finally:
        con.close()
    return [(int(i), Transition.model_validate_json(r)) for i, r in rows]
