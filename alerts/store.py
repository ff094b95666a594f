"""The alerts state database (SQLite, WAL): lifecycle, notifications, attempts, silences.

Everything the service decides is written here before it acts, in one transaction per
decision, so a process killed at any point resumes from the file: the outbox cursor
moves in the same transaction as the alerts it produced, and a notification row is
created (with its LINE retry key) in the same transaction that advances its group's
escalation. The CLI (``alerts ack``, ``alerts silence``) writes beside a running
service; WAL lets readers and the one writer at a time proceed.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from alerts.schema import event_line

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    rule TEXT NOT NULL,
    category TEXT NOT NULL,
    subject TEXT NOT NULL,
    subject_kind TEXT NOT NULL,
    district TEXT,
    severity TEXT NOT NULL,
    status TEXT NOT NULL,              -- firing | acknowledged | resolved
    fired_at REAL NOT NULL,            -- event_time of the firing transition
    received_at REAL NOT NULL,         -- service clock when read from the outbox
    acked_at REAL,
    acked_by TEXT,
    ack_via TEXT,                      -- cli | link | mqtt
    resolved_at REAL,                  -- event_time of the resolved transition
    resolved_received_at REAL,
    message TEXT NOT NULL,
    message_en TEXT NOT NULL,
    record TEXT NOT NULL,              -- the firing Transition as JSON
    route INTEGER NOT NULL,
    group_id INTEGER,                  -- NULL for digest routes
    notified INTEGER NOT NULL DEFAULT 0,
    resolved_notified INTEGER NOT NULL DEFAULT 0,
    digested INTEGER NOT NULL DEFAULT 0,
    duplicates INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS alerts_key ON alerts (key, status);
CREATE INDEX IF NOT EXISTS alerts_group ON alerts (group_id);
CREATE TABLE IF NOT EXISTS groups (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    route INTEGER NOT NULL,
    gkey TEXT NOT NULL,
    created_at REAL NOT NULL,
    step INTEGER NOT NULL DEFAULT 0,
    step_at REAL,                      -- when the current escalation step was notified
    loops INTEGER NOT NULL DEFAULT 0,
    last_sent_at REAL,
    closed INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS notifications (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    group_id INTEGER,
    receiver TEXT NOT NULL,
    kind TEXT NOT NULL,                -- firing | escalation | repeat | resolved | digest
    step INTEGER NOT NULL,
    created_at REAL NOT NULL,
    alert_ids TEXT NOT NULL,           -- JSON list of the firing alerts it names (ack scope)
    title TEXT NOT NULL,
    body TEXT NOT NULL,                -- JSON: text, alerts, ack_url …
    retry_key TEXT NOT NULL,           -- one UUID, reused on every retry (LINE)
    channel_idx INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',  -- pending | sent | failed
    sent_at REAL,
    channel TEXT,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS notifications_pending ON notifications (status, next_at);
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    notification_id INTEGER NOT NULL,
    at REAL NOT NULL,
    channel TEXT NOT NULL,
    ok INTEGER NOT NULL,
    detail TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS silences (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    rule TEXT,                         -- glob
    subject TEXT,                      -- glob
    district TEXT,
    starts_at REAL NOT NULL,
    ends_at REAL NOT NULL,
    created_by TEXT NOT NULL,
    comment TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    line TEXT NOT NULL                 -- alert_event line protocol not yet in InfluxDB
);
"""


class Store:
    """One connection guarded by a lock: the service's threads (loop, ack HTTP, MQTT
    ack) share it; other processes open their own."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a notification decided is a decision kept
        self._db.execute("PRAGMA busy_timeout=30000")
        self._lock = threading.RLock()
        self._db.executescript(SCHEMA)

    @contextlib.contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE: the write lock is taken up front)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def query(self, sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self._db.execute(sql, args).fetchall()]

    def one(self, sql: str, args: tuple[Any, ...] = ()) -> dict[str, Any] | None:
        rows = self.query(sql, args)
        return rows[0] if rows else None

    def meta(self, key: str, default: str | None = None) -> str | None:
        row = self.one("SELECT v FROM meta WHERE k = ?", (key,))
        return str(row["v"]) if row else default

    @staticmethod
    def set_meta(db: sqlite3.Connection, key: str, value: str) -> None:
        db.execute("INSERT OR REPLACE INTO meta (k, v) VALUES (?, ?)", (key, value))

    def acknowledge(
        self, alert_ids: list[int], by: str, via: str, at: float
    ) -> list[dict[str, Any]]:
        """Mark the given firing alerts acknowledged; return those that changed."""
        changed: list[dict[str, Any]] = []
        with self.tx() as db:
            for aid in alert_ids:
                cur = db.execute(
                    "UPDATE alerts SET status = 'acknowledged', acked_at = ?, acked_by = ?, "
                    "ack_via = ? WHERE id = ? AND status = 'firing'",
                    (at, by, via, aid),
                )
                if cur.rowcount:
                    row = dict(db.execute("SELECT * FROM alerts WHERE id = ?", (aid,)).fetchone())
                    changed.append(row)
                    self.add_event_lines(db, [event_line(row, "acknowledged", at, by=by)])
        return changed

    def add_event_lines(self, db: sqlite3.Connection, lines: list[str]) -> None:
        db.executemany("INSERT INTO events (line) VALUES (?)", [(x,) for x in lines])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def ack_scope(self, nid: int) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
        """Notification ``nid`` (id, receiver) and the alerts an acknowledgement link of
        it acknowledges; None when there is no such notification or it names none."""
        note = self.one("SELECT id, receiver, alert_ids FROM notifications WHERE id = ?", (nid,))
        if note is None:
            return None
        ids = [int(x) for x in json.loads(note["alert_ids"])]
        if not ids:
            return None
        marks = ",".join("?" * len(ids))
        alerts = self.query(
            f"SELECT id, key, status, acked_by, message FROM alerts WHERE id IN ({marks})",
            tuple(ids),
        )
        return note, alerts
