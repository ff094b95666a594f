"""Dead-letter store: every message ingest could not use, kept with its reason.

SQLite, one row per message: raw payload (bytes, exactly as received), topic,
reason category, detail, time. ``yukimizu deadletter list|show|replay|purge``
works on this file while ingest runs (WAL mode allows a reader beside the writer).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: int
    time: float  # Unix seconds when ingest dead-lettered it
    topic: str
    reason: str
    detail: str
    payload: bytes


class DeadLetterStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS deadletters ("
            " id INTEGER PRIMARY KEY AUTOINCREMENT,"
            " time REAL NOT NULL, topic TEXT NOT NULL, reason TEXT NOT NULL,"
            " detail TEXT NOT NULL, payload BLOB NOT NULL)"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS deadletters_reason ON deadletters(reason)")

    def add_many(self, items: Iterable[tuple[str, str, str, bytes]]) -> int:
        """Store (topic, reason, detail, payload) rows in one durable transaction."""
        now = time.time()
        rows = [(now, t, r, d, p) for t, r, d, p in items]
        if not rows:
            return 0
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO deadletters (time, topic, reason, detail, payload)"
                " VALUES (?, ?, ?, ?, ?)",
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
        if ids:
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
            f"SELECT id, time, topic, reason, detail, payload FROM deadletters{where}"
            f" ORDER BY id {order}"
        )
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        rows = [
            DeadLetter(int(r[0]), float(r[1]), r[2], r[3], r[4], bytes(r[5]))
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
