"""Dead-letter store: every message ingest could not use, kept with its reason.

SQLite, one row per dead letter: topic, reason (:class:`ingest.reasons.Reason`),
detail, time, the bytes kept, and what those bytes are (``content``):

- ``payload``: the device's payload exactly as received on ``topic``. Replay
  publishes it to ``topic`` again.
- ``line_protocol``: only an InfluxDB line-protocol point is left (a self-metric
  point, or a point spooled by a version that did not keep payloads beside it).
  Replay writes it to InfluxDB again; it is never published to MQTT as if a device
  had sent it (docs/delivery.md#replay).

``yukimizu deadletter list|show|replay|purge`` works on this file while ingest runs
(WAL mode allows a reader beside the writer).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import NamedTuple

from core.sqlite import Column, Schema, open_db
from ingest.reasons import Reason
from sensors.schema import FIELDS


class Content(StrEnum):
    """What a dead letter's bytes are, and so what replay does with them."""

    PAYLOAD = "payload"  # a device payload: replay publishes it to its topic
    LINE_PROTOCOL = "line_protocol"  # one InfluxDB point: replay writes it to InfluxDB


class Letter(NamedTuple):
    """A dead letter to store."""

    topic: str
    reason: Reason
    detail: str
    payload: bytes
    content: Content = Content.PAYLOAD


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: int
    time: float  # Unix seconds when ingest dead-lettered it
    topic: str
    reason: str
    detail: str
    payload: bytes
    content: Content = Content.PAYLOAD


def _line_protocol_rows() -> str:
    """SQL condition: the row holds one of our line-protocol points, not a payload.

    Versions before the ``content`` column dead-lettered the line protocol of a point
    refused while the spool drained, as if it were a payload. Such a row starts with
    one of our measurement names and a ',' (tags follow); a device payload starts
    with '{', '[' or '$'.
    """
    tests = [f"CAST(substr(payload, 1, {len(m) + 1}) AS TEXT) = '{m},'" for m in sorted(FIELDS)]
    return f"reason = '{Reason.INFLUX_REJECTED}' AND ({' OR '.join(tests)})"


SCHEMA = Schema(
    statements=(
        "CREATE TABLE IF NOT EXISTS deadletters ("
        " id INTEGER PRIMARY KEY AUTOINCREMENT,"
        " time REAL NOT NULL, topic TEXT NOT NULL, reason TEXT NOT NULL,"
        " detail TEXT NOT NULL, payload BLOB NOT NULL,"
        f" content TEXT NOT NULL DEFAULT '{Content.PAYLOAD}')",
        "CREATE INDEX IF NOT EXISTS deadletters_reason ON deadletters(reason)",
    ),
    added_columns=(
        Column(
            "deadletters",
            "content",
            f"TEXT NOT NULL DEFAULT '{Content.PAYLOAD}'",
            backfill=(
                f"UPDATE deadletters SET content = '{Content.LINE_PROTOCOL}'"
                f" WHERE {_line_protocol_rows()}"
            ),
        ),
    ),
)


class DeadLetterStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection = open_db(path, SCHEMA)

    def add_many(self, items: Iterable[Letter]) -> int:
        """Store dead letters in one durable transaction."""
        now = time.time()
        rows = [(now, t, str(Reason(r)), d, p, str(Content(c))) for t, r, d, p, c in items]
        if not rows:
            return 0
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO deadletters (time, topic, reason, detail, payload, content)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
        return len(rows)

    def _where(
        self, reason: str | None, before: float | None, ids: Sequence[int] | None
    ) -> tuple[str, list[object]]:
        clauses: list[str] = []
        args: list[object] = []
        if reason:
            clauses.append("reason = ?")
            args.append(reason)
        if before is not None:
            clauses.append("time < ?")
            args.append(before)
        if ids is not None:
            # An empty list selects nothing (never "no filter": delete(ids=[]) after
            # a replay that sent nothing must not empty the store).
            clauses.append(f"id IN ({','.join('?' * len(ids))})")
            args.extend(ids)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", args

    def list(
        self,
        reason: str | None = None,
        limit: int | None = None,
        ids: Sequence[int] | None = None,
        newest: bool = False,
    ) -> list[DeadLetter]:
        """Dead letters in id order; with ``limit``, the first (``newest``: the last) ones."""
        where, args = self._where(reason, None, ids)
        order = "DESC" if newest else "ASC"
        sql = (
            "SELECT id, time, topic, reason, detail, payload, content"
            f" FROM deadletters{where}"
            f" ORDER BY id {order}"
        )
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        rows = [
            DeadLetter(int(r[0]), float(r[1]), r[2], r[3], r[4], bytes(r[5]), Content(r[6]))
            for r in self._db.execute(sql, args)
        ]
        return rows[::-1] if newest else rows

    def get(self, dl_id: int) -> DeadLetter | None:
        found = self.list(ids=[dl_id])
        return found[0] if found else None

    def counts(self) -> dict[str, int]:
        return {
            r: int(n)
            for r, n in self._db.execute(
                "SELECT reason, COUNT(*) FROM deadletters GROUP BY reason ORDER BY reason"
            )
        }

    def delete(
        self,
        reason: str | None = None,
        before: float | None = None,
        ids: Sequence[int] | None = None,
    ) -> int:
        where, args = self._where(reason, before, ids)
        with self._db:
            self._db.execute("BEGIN")
            cur = self._db.execute(f"DELETE FROM deadletters{where}", args)
        return cur.rowcount

    def close(self) -> None:
        self._db.close()
