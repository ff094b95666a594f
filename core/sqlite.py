"""SQLite set-up shared by every store of ours (spool, dead letters, rules, alerts).

Each store is one SQLite file in WAL mode with ``synchronous=FULL``: a row committed
before an MQTT acknowledgement survives kill -9 and power loss
(docs/delivery.md#acknowledgement-rule), and WAL lets a CLI read or delete while
the service writes. :func:`open_db` connects with those pragmas, creates the schema
and adds the columns introduced after a table was first released, so a file written
by an older version keeps working.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Column", "Schema", "StoreError", "open_db"]


class StoreError(RuntimeError):
    """A state file cannot be opened or migrated; the message names the file."""


@dataclass(frozen=True, slots=True)
class Column:
    """A column added to ``table`` after the table was first released.

    ``declaration`` is what follows the name in ``ALTER TABLE … ADD COLUMN`` (SQLite
    requires a default for NOT NULL). ``backfill`` runs once, in the same transaction,
    right after the column was added: it sets the right value on rows the older
    version wrote, where the default would be wrong.
    """

    table: str
    name: str
    declaration: str
    backfill: str | None = None


@dataclass(frozen=True, slots=True)
class Schema:
    """``CREATE … IF NOT EXISTS`` statements, and the columns added since."""

    statements: Sequence[str]
    added_columns: Sequence[Column] = ()


def _columns(db: sqlite3.Connection, table: str) -> set[str]:
    return {str(row[1]) for row in db.execute(f"PRAGMA table_info({table})")}


def open_db(path: Path, schema: Schema, *, timeout_s: float = 30.0) -> sqlite3.Connection:
    """Open (creating if needed) the SQLite file at ``path`` with our pragmas and schema.

    The connection is in autocommit mode (``isolation_level=None``): callers group
    writes with an explicit ``BEGIN`` inside ``with db:``. ``timeout_s`` is how long a
    writer waits for another process's write lock (the CLI beside a running service).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=timeout_s)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open {path}: {exc}") from exc
    try:
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            # e.g. a file system without shared memory: readers would block the writer.
            raise StoreError(f"{path}: SQLite refused WAL mode (got {mode!r})")
        db.execute("PRAGMA synchronous=FULL")
        # Schema and migration in one write transaction: two processes opening an old
        # file at once cannot both add the same column.
        with db:
            db.execute("BEGIN IMMEDIATE")
            for statement in schema.statements:
                db.execute(statement)
            for col in schema.added_columns:
                if col.name not in _columns(db, col.table):
                    db.execute(f"ALTER TABLE {col.table} ADD COLUMN {col.name} {col.declaration}")
                    if col.backfill:
                        db.execute(col.backfill)
    except sqlite3.Error as exc:
        db.close()
        raise StoreError(f"cannot set up {path}: {exc}") from exc
    except StoreError:
        db.close()
        raise
    return db
