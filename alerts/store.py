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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alerts.schema import event_line
from core.sqlite import Column, Schema, open_db
from rules.transitions import BadRecord

# One statement per ";" (so no ";" inside the comments).
DDL = """
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
    duplicates INTEGER NOT NULL DEFAULT 0,
    ack_noticed INTEGER NOT NULL DEFAULT 0 -- the 確認しました notice was decided (or suppressed)
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
    kind TEXT NOT NULL,                -- firing | escalation | repeat | resolved | digest | ack
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
    last_error TEXT,
    rounds INTEGER NOT NULL DEFAULT 0, -- times it failed on every channel
    retry_at REAL                      -- failed critical: when the next round starts
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
CREATE TABLE IF NOT EXISTS rejected_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    line TEXT NOT NULL,                -- an alert_event line InfluxDB refused
    status INTEGER,                    -- InfluxDB's answer: 400, 413, 422
    reason TEXT NOT NULL,              -- what InfluxDB said
    rejected_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS rejected_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    outbox_id INTEGER NOT NULL,        -- the row's id in the rules outbox
    raw TEXT NOT NULL,                 -- the record as stored (at most 64 KiB of it)
    size INTEGER NOT NULL,             -- the whole record's length in bytes
    reason TEXT NOT NULL,              -- why it is not a valid transition
    rejected_at REAL NOT NULL
);
"""

SCHEMA = Schema(
    statements=tuple(x for x in DDL.split(";") if x.strip()),
    added_columns=(
        Column("notifications", "rounds", "INTEGER NOT NULL DEFAULT 0"),
        Column("notifications", "retry_at", "REAL"),
        # alerts a file already holds were acknowledged before the notice existed:
        # nobody is told about those after an upgrade
        Column(
            "alerts",
            "ack_noticed",
            "INTEGER NOT NULL DEFAULT 0",
            backfill="UPDATE alerts SET ack_noticed = 1",
        ),
    ),
)

OPEN = ("firing", "acknowledged")

# What a new alert row is made of (status is 'firing'; the rest start empty)
ALERT_FIELDS = (
    "key",
    "rule",
    "category",
    "subject",
    "subject_kind",
    "district",
    "severity",
    "fired_at",
    "received_at",
    "message",
    "message_en",
    "record",
    "route",
    "group_id",
    "notified",
    "digested",
)


@dataclass(frozen=True, slots=True)
class NewNotification:
    """A notification to add: its group (None outside one), receiver, kind and
    escalation step; the alerts its acknowledgement link may acknowledge; the key that
    makes its delivery retry-safe; the receiver's channel it is tried from first."""

    group_id: int | None
    receiver: str
    kind: str
    retry_key: str
    step: int = 0
    ack_ids: list[int] = field(default_factory=list)
    channel_idx: int = 0


class Store:
    """One connection guarded by a lock: the service's threads (loop, ack HTTP, MQTT
    ack) share it; other processes open their own."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # WAL, synchronous=FULL (a notification decided is a decision kept), 30 s busy
        # timeout, and the columns added since a file was first written
        self._db = open_db(path, SCHEMA, timeout_s=30)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.RLock()

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

    # --- outbox records that are not valid transitions -----------------------------

    @staticmethod
    def reject_outbox(db: sqlite3.Connection, bad: Iterable[BadRecord], t: float) -> None:
        """Keep bad outbox records aside, in the transaction that moves the cursor past
        them (so each is kept once)."""
        db.executemany(
            "INSERT INTO rejected_outbox (outbox_id, raw, size, reason, rejected_at) "
            "VALUES (?, ?, ?, ?, ?)",
            [(b.id, b.raw, b.size, b.reason, t) for b in bad],
        )

    def rejected_outbox(self, limit: int = 10) -> tuple[int, list[dict[str, Any]]]:
        """How many outbox records were set aside, and the newest ``limit``."""
        n = self.query("SELECT COUNT(*) AS n FROM rejected_outbox")[0]["n"]
        rows = self.query("SELECT * FROM rejected_outbox ORDER BY id DESC LIMIT ?", (limit,))
        return int(n), rows

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

    # --- alerts (lifecycle) ----------------------------------------------------------

    @staticmethod
    def open_alert(db: sqlite3.Connection, key: str) -> dict[str, Any] | None:
        """The open (firing or acknowledged) alert of ``key``, if any."""
        row = db.execute(
            "SELECT * FROM alerts WHERE key = ? AND status IN ('firing', 'acknowledged') "
            "ORDER BY id DESC LIMIT 1",
            (key,),
        ).fetchone()
        return dict(row) if row is not None else None

    @staticmethod
    def count_duplicate(db: sqlite3.Connection, alert_id: int) -> None:
        db.execute("UPDATE alerts SET duplicates = duplicates + 1 WHERE id = ?", (alert_id,))

    @staticmethod
    def insert_alert(db: sqlite3.Connection, fields: dict[str, Any]) -> dict[str, Any]:
        """A new firing alert from ``fields`` (the columns of :data:`ALERT_FIELDS`)."""
        cur = db.execute(
            f"INSERT INTO alerts ({', '.join(ALERT_FIELDS)}, status) "
            f"VALUES ({', '.join(':' + f for f in ALERT_FIELDS)}, 'firing')",
            {f: fields.get(f, 0 if f in ("notified", "digested") else None) for f in ALERT_FIELDS},
        )
        return dict(db.execute("SELECT * FROM alerts WHERE id = ?", (cur.lastrowid,)).fetchone())

    @staticmethod
    def resolve_alert(
        db: sqlite3.Connection, alert_id: int, resolved_at: float, received_at: float
    ) -> None:
        db.execute(
            "UPDATE alerts SET status = 'resolved', resolved_at = ?, resolved_received_at = ? "
            "WHERE id = ?",
            (resolved_at, received_at, alert_id),
        )

    def open_alerts(self) -> list[dict[str, Any]]:
        return self.query("SELECT * FROM alerts WHERE status IN ('firing', 'acknowledged')")

    def alerts_still_firing(self, alert_ids: Iterable[int]) -> list[dict[str, Any]]:
        """Those of ``alert_ids`` still firing and unacknowledged."""
        ids = json.dumps(list(alert_ids))
        return self.query(
            "SELECT a.* FROM alerts a, json_each(?) j WHERE a.id = j.value "
            "AND a.status = 'firing' ORDER BY a.id",
            (ids,),
        )

    def subject_open_alerts(self, kind: str, subject: str) -> list[dict[str, Any]]:
        return self.query(
            "SELECT * FROM alerts WHERE subject_kind = ? AND subject = ? AND status IN "
            "('firing', 'acknowledged') ORDER BY id",
            (kind, subject),
        )

    def list_alerts(self, *, include_resolved: bool, limit: int) -> list[dict[str, Any]]:
        where = "" if include_resolved else "WHERE status IN ('firing', 'acknowledged')"
        return self.query(f"SELECT * FROM alerts {where} ORDER BY id DESC LIMIT ?", (limit,))

    def alert(self, alert_id: int) -> dict[str, Any] | None:
        return self.one("SELECT * FROM alerts WHERE id = ?", (alert_id,))

    def status_counts(self, table: str) -> dict[str, int]:
        """``status → rows`` of ``alerts`` or ``notifications``."""
        if table not in ("alerts", "notifications"):
            raise ValueError(f"no status column in {table!r}")
        rows = self.query(f"SELECT status, COUNT(*) AS n FROM {table} GROUP BY status")
        return {str(r["status"]): int(r["n"]) for r in rows}

    # --- acknowledgement notices ------------------------------------------------------

    @staticmethod
    def ack_notices_due(db: sqlite3.Connection) -> list[dict[str, Any]]:
        """Alerts acknowledged (by anyone, from any process) whose notice to the others
        is not decided yet, oldest acknowledgement first."""
        rows = db.execute(
            "SELECT * FROM alerts WHERE ack_noticed = 0 AND acked_at IS NOT NULL "
            "ORDER BY acked_at, id"
        )
        return [dict(r) for r in rows.fetchall()]

    @staticmethod
    def reached(db: sqlite3.Connection, alert_ids: Iterable[int]) -> list[dict[str, Any]]:
        """Notifications naming any of ``alert_ids`` that reached their receiver:
        ``id``, ``receiver``, ``channel``, ``alert_id``, oldest first."""
        rows = db.execute(
            "SELECT n.id, n.receiver, n.channel, j.value AS alert_id FROM notifications n, "
            "json_each(n.alert_ids) j, json_each(?) w WHERE j.value = w.value "
            "AND n.status = 'sent' ORDER BY n.id",
            (json.dumps(list(alert_ids)),),
        )
        return [dict(r) for r in rows.fetchall()]

    @staticmethod
    def mark_ack_noticed(db: sqlite3.Connection, alert_ids: Iterable[int]) -> None:
        db.executemany("UPDATE alerts SET ack_noticed = 1 WHERE id = ?", [(i,) for i in alert_ids])

    # --- groups (planning) -----------------------------------------------------------

    @staticmethod
    def group_for(db: sqlite3.Connection, route: int, gkey: str, t: float) -> int:
        """The open group of ``route`` and ``gkey``, created if there is none."""
        g = db.execute(
            "SELECT id FROM groups WHERE route = ? AND gkey = ? AND closed = 0", (route, gkey)
        ).fetchone()
        if g is not None:
            return int(g["id"])
        cur = db.execute(
            "INSERT INTO groups (route, gkey, created_at) VALUES (?, ?, ?)", (route, gkey, t)
        )
        return int(cur.lastrowid or 0)

    def open_groups(self) -> list[dict[str, Any]]:
        return self.query("SELECT * FROM groups WHERE closed = 0 ORDER BY id")

    @staticmethod
    def group_members(db: sqlite3.Connection, group_id: int) -> list[dict[str, Any]]:
        rows = db.execute("SELECT * FROM alerts WHERE group_id = ? ORDER BY id", (group_id,))
        return [dict(r) for r in rows.fetchall()]

    @staticmethod
    def group_receivers(db: sqlite3.Connection, group_id: int) -> list[str]:
        """Receivers told of the group so far (resolved notices not counted)."""
        rows = db.execute(
            "SELECT DISTINCT receiver FROM notifications WHERE group_id = ? AND kind != 'resolved'",
            (group_id,),
        ).fetchall()
        return [str(r["receiver"]) for r in rows]

    @staticmethod
    def save_group_progress(  # noqa: PLR0917
        db: sqlite3.Connection,
        group_id: int,
        step: int,
        step_at: float | None,
        loops: int,
        last_sent: float | None,
    ) -> None:
        db.execute(
            "UPDATE groups SET step = ?, step_at = ?, loops = ?, last_sent_at = ? WHERE id = ?",
            (step, step_at, loops, last_sent, group_id),
        )

    @staticmethod
    def close_group_if_done(db: sqlite3.Connection, group_id: int, send_resolved: bool) -> bool:
        """Close the group when every member is resolved and, if it was announced, its
        resolution too. True if it closed."""
        left = db.execute(
            "SELECT COUNT(*) FROM alerts WHERE group_id = ? AND NOT (status = 'resolved' AND "
            "(resolved_notified = 1 OR notified = 0 OR ? = 0))",
            (group_id, int(send_resolved)),
        ).fetchone()[0]
        if left == 0:
            db.execute("UPDATE groups SET closed = 1 WHERE id = ?", (group_id,))
        return bool(left == 0)

    @staticmethod
    def mark_notified(db: sqlite3.Connection, alert_ids: Iterable[int]) -> None:
        db.executemany("UPDATE alerts SET notified = 1 WHERE id = ?", [(i,) for i in alert_ids])

    @staticmethod
    def mark_resolved_notified(db: sqlite3.Connection, alert_ids: Iterable[int]) -> None:
        db.executemany(
            "UPDATE alerts SET resolved_notified = 1 WHERE id = ?", [(i,) for i in alert_ids]
        )

    @staticmethod
    def undigested(db: sqlite3.Connection) -> list[dict[str, Any]]:
        """Alerts of digest routes not yet in a digest."""
        rows = db.execute(
            "SELECT * FROM alerts WHERE group_id IS NULL AND digested = 0 ORDER BY id"
        )
        return [dict(r) for r in rows.fetchall()]

    @staticmethod
    def mark_digested(db: sqlite3.Connection, alert_ids: Iterable[int]) -> None:
        db.executemany("UPDATE alerts SET digested = 1 WHERE id = ?", [(i,) for i in alert_ids])

    @staticmethod
    def get_meta(db: sqlite3.Connection, key: str) -> str | None:
        row = db.execute("SELECT v FROM meta WHERE k = ?", (key,)).fetchone()
        return str(row["v"]) if row is not None else None

    # --- silences --------------------------------------------------------------------

    def active_silences(self, t: float) -> list[dict[str, Any]]:
        return self.query("SELECT * FROM silences WHERE ends_at > ? ORDER BY id", (t,))

    def add_silence(  # noqa: PLR0917
        self,
        rule: str | None,
        subject: str | None,
        district: str | None,
        starts_at: float,
        ends_at: float,
        created_by: str,
        comment: str,
    ) -> int:
        with self.tx() as db:
            cur = db.execute(
                "INSERT INTO silences (rule, subject, district, starts_at, ends_at, created_by, "
                "comment) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (rule, subject, district, starts_at, ends_at, created_by, comment),
            )
        return int(cur.lastrowid or 0)

    def expire_silence(self, silence_id: int, now: float) -> bool:
        """End an active silence now; False if it was not active."""
        with self.tx() as db:
            n = db.execute(
                "UPDATE silences SET ends_at = ? WHERE id = ? AND ends_at > ?",
                (now, silence_id, now),
            ).rowcount
        return bool(n)

    # --- notifications (decided) -----------------------------------------------------

    @staticmethod
    def add_notification(db: sqlite3.Connection, new: NewNotification, t: float) -> int:
        """A pending notification, due at ``t``; its text is set by :meth:`set_text`."""
        cur = db.execute(
            "INSERT INTO notifications (group_id, receiver, kind, step, created_at, alert_ids, "
            "title, body, retry_key, next_at, channel_idx) "
            "VALUES (?, ?, ?, ?, ?, ?, '', '{}', ?, ?, ?)",
            (
                new.group_id,
                new.receiver,
                new.kind,
                new.step,
                t,
                json.dumps(new.ack_ids),
                new.retry_key,
                t,
                new.channel_idx,
            ),
        )
        return int(cur.lastrowid or 0)

    @staticmethod
    def set_text(db: sqlite3.Connection, nid: int, title: str, body: dict[str, Any]) -> None:
        db.execute(
            "UPDATE notifications SET title = ?, body = ? WHERE id = ?",
            (title, json.dumps(body, ensure_ascii=False), nid),
        )

    def notifications_for_alert(self, alert_id: int) -> list[dict[str, Any]]:
        """Every notification naming the alert, as firing or as resolved."""
        return self.query(
            "SELECT n.* FROM notifications n, json_each(n.alert_ids) j WHERE j.value = ? "
            "UNION SELECT n.* FROM notifications n, "
            "json_each(json_extract(n.body, '$.resolved')) r "
            "WHERE json_extract(r.value, '$.id') = ? ORDER BY id",
            (alert_id, alert_id),
        )

    def failed_notifications(self, limit: int) -> list[dict[str, Any]]:
        return self.query(
            "SELECT id, receiver, last_error, rounds, retry_at FROM notifications "
            "WHERE status = 'failed' ORDER BY id DESC LIMIT ?",
            (limit,),
        )

    # --- notifications (delivery) ----------------------------------------------------

    def due_notifications(self, t: float) -> list[dict[str, Any]]:
        return self.query(
            "SELECT * FROM notifications WHERE status = 'pending' AND next_at <= ? ORDER BY id",
            (t,),
        )

    def rounds_due(self, t: float) -> list[dict[str, Any]]:
        """Failed notifications whose next round (retry_at) has come."""
        return self.query(
            "SELECT * FROM notifications WHERE status = 'failed' AND retry_at <= ? ORDER BY id",
            (t,),
        )

    def start_round(self, nid: int, t: float) -> None:
        """Back to pending from the receiver's first channel, due now."""
        with self.tx() as db:
            db.execute(
                "UPDATE notifications SET status = 'pending', channel_idx = 0, attempts = 0, "
                "next_at = ?, retry_at = NULL WHERE id = ?",
                (t, nid),
            )

    def end_rounds(self, nid: int) -> None:
        with self.tx() as db:
            db.execute("UPDATE notifications SET retry_at = NULL WHERE id = ?", (nid,))

    def retry_later(self, nid: int, channel_idx: int, attempts: int, at: float, error: str) -> None:
        """Try the same channel again at ``at``."""
        with self.tx() as db:
            db.execute(
                "UPDATE notifications SET channel_idx = ?, attempts = ?, next_at = ?, "
                "last_error = ? WHERE id = ?",
                (channel_idx, attempts, at, error, nid),
            )

    def fall_back(self, nid: int, channel_idx: int, error: str) -> None:
        """Go on with the receiver's channel ``channel_idx``."""
        with self.tx() as db:
            db.execute(
                "UPDATE notifications SET channel_idx = ?, attempts = 0, last_error = ? "
                "WHERE id = ?",
                (channel_idx, error, nid),
            )

    def record_attempt(self, nid: int, t: float, channel: str, ok: bool, detail: str) -> None:
        with self.tx() as db:
            db.execute(
                "INSERT INTO attempts (notification_id, at, channel, ok, detail) "
                "VALUES (?, ?, ?, ?, ?)",
                (nid, t, channel, int(ok), detail[:1000]),
            )

    def mark_sent(self, nid: int, channel: str, t: float) -> None:
        with self.tx() as db:
            db.execute(
                "UPDATE notifications SET status = 'sent', channel = ?, sent_at = ? WHERE id = ?",
                (channel, t, nid),
            )

    def mark_failed(self, nid: int, error: str, retry_at: float | None) -> int:
        """Failed on every channel; ``retry_at``: when another round starts. Returns how
        many rounds have failed now."""
        with self.tx() as db:
            db.execute(
                "UPDATE notifications SET status = 'failed', channel = NULL, sent_at = NULL, "
                "last_error = ?, rounds = rounds + 1, retry_at = ? WHERE id = ?",
                (error, retry_at, nid),
            )
            row = db.execute("SELECT rounds FROM notifications WHERE id = ?", (nid,)).fetchone()
        return int(row["rounds"])

    def attempts_of(self, nid: int) -> list[dict[str, Any]]:
        return self.query("SELECT * FROM attempts WHERE notification_id = ? ORDER BY id", (nid,))

    def channel_failures(self) -> list[dict[str, Any]]:
        """Per channel: failed attempts ``n`` and the ``last`` one's time."""
        return self.query(
            "SELECT channel, COUNT(*) AS n, MAX(at) AS last FROM attempts WHERE ok = 0 "
            "GROUP BY channel ORDER BY channel"
        )

    # --- alert_event points for InfluxDB ---------------------------------------------

    def pending_events(self, limit: int) -> list[dict[str, Any]]:
        return self.query("SELECT id, line FROM events ORDER BY id LIMIT ?", (limit,))

    def events_written(self, ids: Iterable[int]) -> None:
        with self.tx() as db:
            db.executemany("DELETE FROM events WHERE id = ?", [(i,) for i in ids])

    def reject_events(self, rejected: Iterable[tuple[int, str, int | None, str]], t: float) -> None:
        """Move refused lines ``(event id, line, status, reason)`` aside, in one
        transaction: they leave the queue, so one bad point cannot block the rest."""
        with self.tx() as db:
            for eid, line, status, reason in rejected:
                db.execute(
                    "INSERT INTO rejected_events (line, status, reason, rejected_at) "
                    "VALUES (?, ?, ?, ?)",
                    (line, status, reason[:1000], t),
                )
                db.execute("DELETE FROM events WHERE id = ?", (eid,))

    def rejected_events(self, limit: int = 10) -> tuple[int, list[dict[str, Any]]]:
        """How many alert_event lines InfluxDB refused, and the newest ``limit``."""
        n = self.query("SELECT COUNT(*) AS n FROM rejected_events")[0]["n"]
        rows = self.query("SELECT * FROM rejected_events ORDER BY id DESC LIMIT ?", (limit,))
        return int(n), rows

    def add_event_lines(self, db: sqlite3.Connection, lines: list[str]) -> None:
        db.executemany("INSERT INTO events (line) VALUES (?)", [(x,) for x in lines])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def latest_sent_firing(self, receivers: list[str], channel: str, since: float) -> int | None:
        """The newest notification sent to one of ``receivers`` over ``channel`` at or
        after ``since`` that names an alert still firing (what a LINE WORKS reply
        acknowledges); None when there is none."""
        if not receivers:
            return None
        marks = ",".join("?" * len(receivers))
        row = self.one(
            "SELECT n.id FROM notifications n WHERE n.status = 'sent' AND n.channel = ? "
            f"AND n.receiver IN ({marks}) AND n.sent_at >= ? AND EXISTS ("
            "SELECT 1 FROM alerts a, json_each(n.alert_ids) j "
            "WHERE a.id = j.value AND a.status = 'firing') "
            "ORDER BY n.sent_at DESC, n.id DESC LIMIT 1",
            (channel, *receivers, since),
        )
        return None if row is None else int(row["id"])

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
