"""On-disk spool for batches InfluxDB could not take.

SQLite in WAL mode with ``synchronous=FULL``: a batch acknowledged to the broker
because it is in the spool survives kill -9 and power loss. Batches come out in
the order they went in. The spool is bounded; :meth:`Spool.has_room` is false
when full, and ingest then stops acknowledging (the broker keeps the messages).
"""

from __future__ import annotations

import logging
import sqlite3
import zlib
from collections.abc import Sequence
from pathlib import Path

import orjson

log = logging.getLogger(__name__)


class Spool:
    def __init__(self, path: Path, max_bytes: int, warn_fraction: float = 0.7) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_bytes = max_bytes
        self.warn_fraction = warn_fraction
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS batches ("
            " id INTEGER PRIMARY KEY AUTOINCREMENT,"
            " points INTEGER NOT NULL,"
            " bytes INTEGER NOT NULL,"
            " data BLOB NOT NULL)"
        )
        row = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(points), 0), COALESCE(SUM(bytes), 0) FROM batches"
        ).fetchone()
        self.batches, self.points, self.bytes = int(row[0]), int(row[1]), int(row[2])
        self._warned = False
        if self.batches:
            log.warning(
                "spool %s holds %d points in %d batches from an earlier run; replaying",
                path,
                self.points,
                self.batches,
            )

    def __len__(self) -> int:
        return self.batches

    def has_room(self) -> bool:
        return self.bytes < self.max_bytes

    def append(self, lines: Sequence[str], topics: Sequence[str]) -> None:
        """Store a batch durably (returns after fsync)."""
        data = zlib.compress(orjson.dumps({"lines": list(lines), "topics": list(topics)}), 1)
        self._db.execute(
            "INSERT INTO batches (points, bytes, data) VALUES (?, ?, ?)",
            (len(lines), len(data), data),
        )
        self.batches += 1
        self.points += len(lines)
        self.bytes += len(data)
        fill = self.bytes / self.max_bytes
        if fill >= self.warn_fraction and not self._warned:
            self._warned = True
            log.warning(
                "spool is %.0f%% full (%d of %d bytes, %d points): InfluxDB has been "
                "unavailable for a while; when full, ingest stops taking messages",
                fill * 100,
                self.bytes,
                self.max_bytes,
                self.points,
            )

    def oldest(self) -> tuple[int, list[str], list[str]] | None:
        row = self._db.execute("SELECT id, data FROM batches ORDER BY id LIMIT 1").fetchone()
        if row is None:
            return None
        doc = orjson.loads(zlib.decompress(row[1]))
        return int(row[0]), doc["lines"], doc["topics"]

    def remove(self, batch_id: int) -> None:
        row = self._db.execute(
            "DELETE FROM batches WHERE id = ? RETURNING points, bytes", (batch_id,)
        ).fetchone()
        if row is not None:
            self.batches -= 1
            self.points -= int(row[0])
            self.bytes -= int(row[1])
        if self.bytes < self.max_bytes * self.warn_fraction / 2:
            self._warned = False

    def close(self) -> None:
        self._db.close()
