"""What the engine remembers between cycles: statuses, the outbox, watermarks, families.

Everything of one cycle is committed in one SQLite transaction, so a crash leaves
either the whole cycle or none of it; the next cycle then re-reads its window and
produces the same transitions, which the outbox's unique key keeps from doubling
(docs/rules.md#exactly-once). :class:`MemoryState` is the same without a file, for
backtests.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.sqlite import Schema, open_db
from rules.transitions import OUTBOX_DDL, Transition


def _ddl(suffix: str) -> tuple[str, ...]:
    """The outbox is shared by every shard; the rest is each shard's own (``suffix``)."""
    return (
        OUTBOX_DDL,
        f"""CREATE TABLE IF NOT EXISTS status{suffix} (
            key TEXT PRIMARY KEY, active INTEGER NOT NULL, since_ms INTEGER NOT NULL,
            record TEXT NOT NULL)""",
        f"CREATE TABLE IF NOT EXISTS blob{suffix} (name TEXT PRIMARY KEY, data BLOB NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS pending{suffix} "
        "(id INTEGER PRIMARY KEY AUTOINCREMENT, line TEXT)",
    )


@dataclass
class Snapshot:
    """The engine's memory as one value (loaded at start, saved per cycle)."""

    # key → (active, since_ms, last transition JSON)
    status: dict[str, tuple[bool, int, str]] = field(default_factory=dict)
    # measurement → device → newest processed point time (ms)
    watermarks: dict[str, dict[str, int]] = field(default_factory=dict)
    families: dict[str, Any] = field(default_factory=dict)  # name → pickled family
    shared: Any = None
    last_cycle_ms: int | None = None


class MemoryState:
    """State for backtests: nothing leaves the process."""

    def __init__(self) -> None:
        self.snapshot = Snapshot()
        self.outbox: list[Transition] = []
        self._seen: set[tuple[str, str, str]] = set()

    def load(self) -> Snapshot:
        return self.snapshot

    def commit(self, snap: Snapshot, transitions: list[Transition], lines: list[str]) -> None:
        self.snapshot = snap
        for t in transitions:
            k = (t.key, t.status.value, t.event_time.isoformat())
            if k not in self._seen:
                self._seen.add(k)
                self.outbox.append(t)

    def pending_lines(self) -> list[tuple[int, str]]:
        return []

    def lines_written(self, ids: list[int]) -> None:
        pass

    def close(self) -> None:
        pass


class SqliteState:
    """State in ``state_dir/rules.sqlite`` (WAL). One writer per ``suffix``: the rules
    service, or each of its shards (``_shard0of2``…: own tables, one shared outbox)."""

    def __init__(self, path: Path, suffix: str = "") -> None:
        if suffix and not suffix.replace("_", "").isalnum():
            raise ValueError(f"state table suffix {suffix!r}")
        self.path = path
        self._con = open_db(path, Schema(_ddl(suffix)))
        self._status, self._blob, self._pending = (
            f"status{suffix}",
            f"blob{suffix}",
            f"pending{suffix}",
        )
        # What the database holds (as of the last load or commit): a commit writes only
        # what differs, so a cycle that changed nothing writes next to nothing. Before
        # a load it is unknown: the first commit rewrites the statuses.
        self._saved_status: dict[str, tuple[bool, int, str]] | None = None
        self._saved_blobs: dict[str, bytes] = {}

    def load(self) -> Snapshot:
        snap = Snapshot()
        for key, active, since, record in self._con.execute(
            f"SELECT key, active, since_ms, record FROM {self._status}"
        ):
            snap.status[key] = (bool(active), int(since), record)
        blobs = dict(self._con.execute(f"SELECT name, data FROM {self._blob}"))
        self._saved_status = dict(snap.status)
        self._saved_blobs = dict(blobs)
        if "core" in blobs:
            core = pickle.loads(blobs["core"])
            snap.watermarks = core["watermarks"]
            snap.shared = core["shared"]
            snap.last_cycle_ms = core["last_cycle_ms"]
        snap.families = {
            name[len("family:") :]: data
            for name, data in blobs.items()
            if name.startswith("family:")
        }
        return snap

    def commit(self, snap: Snapshot, transitions: list[Transition], lines: list[str]) -> None:
        con = self._con
        con.execute("BEGIN IMMEDIATE")
        try:
            for t in transitions:
                con.execute(
                    "INSERT OR IGNORE INTO outbox (key, status, event_time, record) "
                    "VALUES (?, ?, ?, ?)",
                    (t.key, t.status.value, t.event_time.isoformat(), t.model_dump_json()),
                )
            saved = self._saved_status
            if saved is None:
                con.execute(f"DELETE FROM {self._status}")
                saved = {}
            gone = [(k,) for k in saved if k not in snap.status]
            changed = [(k, v) for k, v in snap.status.items() if saved.get(k) != v]
            con.executemany(f"DELETE FROM {self._status} WHERE key = ?", gone)
            con.executemany(
                f"INSERT OR REPLACE INTO {self._status} (key, active, since_ms, record) "
                "VALUES (?, ?, ?, ?)",
                [(k, int(a), s, r) for k, (a, s, r) in changed],
            )
            core = {
                "watermarks": snap.watermarks,
                "shared": snap.shared,
                "last_cycle_ms": snap.last_cycle_ms,
            }
            blobs = {"core": pickle.dumps(core, protocol=5)}
            blobs.update((f"family:{n}", d) for n, d in snap.families.items())
            new_blobs = [(n, d) for n, d in blobs.items() if self._saved_blobs.get(n) != d]
            con.executemany(
                f"INSERT OR REPLACE INTO {self._blob} (name, data) VALUES (?, ?)",
                new_blobs,
            )
            con.executemany(
                f"INSERT INTO {self._pending} (line) VALUES (?)",
                [(x,) for x in lines],
            )
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        self._saved_status = dict(snap.status)
        self._saved_blobs.update(new_blobs)

    def pending_lines(self, limit: int = 50_000) -> list[tuple[int, str]]:
        rows = self._con.execute(
            f"SELECT id, line FROM {self._pending} ORDER BY id LIMIT ?",
            (limit,),
        )
        return [(int(i), str(x)) for i, x in rows]

    def lines_written(self, ids: list[int]) -> None:
        if ids:
            self._con.execute(
                f"DELETE FROM {self._pending} WHERE id <= ?",
                (max(ids),),
            )

    def outbox(self, after_id: int = 0, limit: int = 1000) -> list[tuple[int, Transition]]:
        rows = self._con.execute(
            "SELECT id, record FROM outbox WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit)
        )
        return [(int(i), Transition.model_validate_json(r)) for i, r in rows]

    def close(self) -> None:
        self._con.close()
