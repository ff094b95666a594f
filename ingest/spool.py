"""On-disk spool for batches InfluxDB could not take.

SQLite in WAL mode with ``synchronous=FULL``: a batch acknowledged to the broker
because it is in the spool survives kill -9 and power loss. Batches come out in
the order they went in. The spool is bounded; :meth:`Spool.has_room` is false
when full, and ingest then stops acknowledging (the broker keeps the messages).

A batch keeps, beside its line-protocol points, the MQTT message each point came
from (topic and payload exactly as received): a point InfluxDB refuses when the
batch is replayed is then dead-lettered as the device's payload, which replay can
publish again (docs/delivery.md#replay). Batches spooled by versions that kept
only line protocol still replay; their refused points become ``line_protocol``
dead letters.
"""

from __future__ import annotations

import base64
import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from core.sqlite import Schema, open_db

log = logging.getLogger(__name__)

SCHEMA = Schema(
    statements=(
        "CREATE TABLE IF NOT EXISTS batches ("
        " id INTEGER PRIMARY KEY AUTOINCREMENT,"
        " points INTEGER NOT NULL,"
        " bytes INTEGER NOT NULL,"
        " data BLOB NOT NULL)",
    )
)


@dataclass(frozen=True, slots=True)
class Origin:
    """The MQTT message a spooled point came from."""

    topic: str
    payload: bytes | None  # None: spooled by a version that kept only line protocol


@dataclass(frozen=True, slots=True)
class SpooledBatch:
    id: int
    lines: list[str]
    sources: list[int]  # per line: index into origins, -1 for ingest's own metrics
    origins: list[Origin]


class Spool:
    def __init__(self, path: Path, max_bytes: int, warn_fraction: float = 0.7) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.warn_fraction = warn_fraction
        self._db = open_db(path, SCHEMA)
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

    def append(
        self, lines: Sequence[str], sources: Sequence[int], origins: Sequence[Origin]
    ) -> None:
        """Store a batch durably (returns after fsync).

        ``sources[i]`` is the index in ``origins`` of the message line ``i`` came
        from, or -1 for a point with no message behind it (ingest's own metrics).
        """
        # Keep only the messages some line refers to, renumbered.
        used = sorted({s for s in sources if s >= 0})
        renumber = {old: new for new, old in enumerate(used)}
        kept = [origins[i] for i in used]
        if any(o.payload is None for o in kept):
            raise ValueError("a new spool batch needs every origin's payload")
        doc = {
            "lines": list(lines),
            "sources": [renumber.get(s, -1) for s in sources],
            "topics": [o.topic for o in kept],
            # base64: payloads are arbitrary bytes, JSON strings are text.
            "payloads": [base64.b64encode(o.payload or b"").decode("ascii") for o in kept],
        }
        data = zlib.compress(orjson.dumps(doc), 1)
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

    def oldest(self) -> SpooledBatch | None:
        row = self._db.execute("SELECT id, data FROM batches ORDER BY id LIMIT 1").fetchone()
        if row is None:
            return None
        doc = orjson.loads(zlib.decompress(row[1]))
        lines: list[str] = doc["lines"]
        if "payloads" not in doc:
            # Spooled by an older version: one topic per line ("" for self-metrics),
            # no payloads.
            topics: list[str] = doc["topics"]
            return SpooledBatch(
                int(row[0]),
                lines,
                [i if t else -1 for i, t in enumerate(topics)],
                [Origin(t, None) for t in topics],
            )
        origins = [
            Origin(t, base64.b64decode(p))
            for t, p in zip(doc["topics"], doc["payloads"], strict=True)
        ]
        return SpooledBatch(int(row[0]), lines, doc["sources"], origins)

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
