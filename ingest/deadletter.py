"""Dead-letter store: every message ingest could not use, kept with its reason.

SQLite, one row per dead letter: topic, reason (:class:`ingest.reasons.Reason`),
detail, time, the bytes kept, and what those bytes are (``content``):

- ``payload``: the device's payload exactly as received on ``topic``. Replay
  publishes it to ``topic`` again.
- ``line_protocol``: only an InfluxDB line-protocol point is left (a self-metric
  point, or a point spooled by a version that did not keep payloads beside it).
  Replay writes it to InfluxDB again; it is never published to MQTT as if a device
  had sent it (docs/delivery.md#replay).
- ``payload_head``: a payload larger than ``keep_payload_bytes`` (config
  ``ingest.deadletter_keep_payload_bytes``, 64 KiB): only its first
  :data:`HEAD_BYTES` are kept, with its ``size`` and ``sha256``. Replay skips it
  (there is no whole payload to send). Five 20 MB payloads no longer grow the store
  by 100 MB.

Every row records ``size`` (the payload's size as received) and ``sha256`` (of the
whole payload), and ``bytes``, what the row costs in the store (payload kept,
topic, detail and a fixed overhead). The store is capped by ``max_bytes``
(``ingest.deadletter_max_bytes``): :meth:`DeadLetterStore.trim` evicts the oldest
rows until the total is under it and returns how many it evicted; ingest counts
them (``deadletter_evicted`` in ``yukimizu_ingest``) and the rules engine alerts
(``system.deadletter_evicted``). The total is kept by triggers in a one-row table,
so it stays right when the CLI purges beside the running service
(docs/delivery.md#dead-letter-store-limits).

``yukimizu deadletter list|show|replay|purge`` works on this file while ingest runs
(WAL mode allows a reader beside the writer).
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Final, NamedTuple

from core.sqlite import Column, Schema, open_db
from ingest.reasons import Reason
from sensors.schema import FIELDS


class Content(StrEnum):
    """What a dead letter's bytes are, and so what replay does with them."""

    PAYLOAD = "payload"  # a device payload: replay publishes it to its topic
    LINE_PROTOCOL = "line_protocol"  # one InfluxDB point: replay writes it to InfluxDB
    PAYLOAD_HEAD = "payload_head"  # the head of an oversized payload: never replayed


# What is kept of a payload above the keep threshold (its first bytes: enough to see
# what the device sent).
HEAD_BYTES: Final = 4096
# Per-row cost counted beside the kept bytes (the row's other columns and SQLite's
# bookkeeping, roughly), so a flood of empty payloads is capped too.
ROW_OVERHEAD_BYTES: Final = 100
DEFAULT_KEEP_PAYLOAD_BYTES: Final = 64 * 1024
DEFAULT_MAX_BYTES: Final = 256 * 1024 * 1024


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
    size: int = -1  # the payload's size as received (-1: rows of older versions)
    sha256: str = ""  # hex digest of the whole payload ("" : rows of older versions)


@dataclass(frozen=True, slots=True)
class Trimmed:
    """What :meth:`DeadLetterStore.trim` evicted."""

    rows: int
    bytes: int


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
        Column("deadletters", "size", "INTEGER NOT NULL DEFAULT -1"),
        Column("deadletters", "sha256", "TEXT NOT NULL DEFAULT ''"),
        Column(
            "deadletters",
            "bytes",
            "INTEGER NOT NULL DEFAULT 0",
            backfill=(
                "UPDATE deadletters SET bytes = length(payload)"
                " + length(CAST(topic AS BLOB)) + length(CAST(detail AS BLOB))"
                f" + {ROW_OVERHEAD_BYTES}"
            ),
        ),
    ),
)

# The store's total size, kept by triggers (created after the columns exist, so a
# file of an older version is migrated first).
_TOTALS = (
    "CREATE TABLE IF NOT EXISTS deadletter_totals"
    " (id INTEGER PRIMARY KEY CHECK (id = 0), bytes INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO deadletter_totals (id, bytes)"
    " SELECT 0, COALESCE(SUM(bytes), 0) FROM deadletters",
    "CREATE TRIGGER IF NOT EXISTS deadletters_bytes_in AFTER INSERT ON deadletters"
    " BEGIN UPDATE deadletter_totals SET bytes = bytes + new.bytes WHERE id = 0; END",
    "CREATE TRIGGER IF NOT EXISTS deadletters_bytes_out AFTER DELETE ON deadletters"
    " BEGIN UPDATE deadletter_totals SET bytes = bytes - old.bytes WHERE id = 0; END",
)


def _kept(letter: Letter, now: float, keep_payload_bytes: int) -> tuple[object, ...]:
    topic, reason, detail, payload, content = letter
    content = Content(content)
    digest = hashlib.sha256(payload).hexdigest()
    kept = payload
    if len(payload) > keep_payload_bytes and content == Content.PAYLOAD:
        kept = payload[:HEAD_BYTES]
        content = Content.PAYLOAD_HEAD
        detail = (
            f"{detail} [payload {len(payload)} bytes, sha256 {digest}: only the first "
            f"{len(kept)} bytes kept]"
        )
    cost = len(kept) + len(topic.encode()) + len(detail.encode()) + ROW_OVERHEAD_BYTES
    return (now, topic, str(Reason(reason)), detail, kept, str(content), len(payload), digest, cost)


class DeadLetterStore:
    """The dead-letter file. ``keep_payload_bytes``: larger payloads keep only their
    head; ``max_bytes``: the cap :meth:`trim` enforces (None: no cap, for the CLI)."""

    def __init__(
        self,
        path: Path,
        *,
        keep_payload_bytes: int = DEFAULT_KEEP_PAYLOAD_BYTES,
        max_bytes: int | None = DEFAULT_MAX_BYTES,
    ) -> None:
        self.path = path
        self.keep_payload_bytes = keep_payload_bytes
        self.max_bytes = max_bytes
        self._db: sqlite3.Connection = open_db(path, SCHEMA)
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            for statement in _TOTALS:
                self._db.execute(statement)

    def add_many(self, items: Iterable[Letter]) -> int:
        """Store dead letters in one durable transaction (oversized payloads: the head)."""
        now = time.time()
        rows = [_kept(letter, now, self.keep_payload_bytes) for letter in items]
        if not rows:
            return 0
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO deadletters"
                " (time, topic, reason, detail, payload, content, size, sha256, bytes)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
        return len(rows)

    @property
    def bytes(self) -> int:
        """The rows' total cost (the figure ``max_bytes`` caps)."""
        row = self._db.execute("SELECT bytes FROM deadletter_totals WHERE id = 0").fetchone()
        return int(row[0]) if row else 0

    def trim(self) -> Trimmed:
        """Evict the oldest rows until the store is within ``max_bytes``."""
        if self.max_bytes is None:
            return Trimmed(0, 0)
        rows = freed = 0
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            excess = self.bytes - self.max_bytes
            while excess > 0:
                chunk = self._db.execute(
                    "SELECT id, bytes FROM deadletters ORDER BY id LIMIT 500"
                ).fetchall()
                if not chunk:
                    break
                ids = []
                for dl_id, cost in chunk:
                    if excess <= 0:
                        break
                    ids.append(int(dl_id))
                    excess -= int(cost)
                    freed += int(cost)
                self._db.execute(
                    f"DELETE FROM deadletters WHERE id IN ({','.join('?' * len(ids))})", ids
                )
                rows += len(ids)
        return Trimmed(rows, freed)

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
            "SELECT id, time, topic, reason, detail, payload, content, size, sha256"
            f" FROM deadletters{where}"
            f" ORDER BY id {order}"
        )
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        rows = [
            DeadLetter(
                int(r[0]),
                float(r[1]),
                r[2],
                r[3],
                r[4],
                bytes(r[5]),
                Content(r[6]),
                int(r[7]),
                str(r[8]),
            )
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
