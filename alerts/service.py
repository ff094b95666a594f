"""The alerts service: outbox → alerts → groups → notifications → channels.

Each :meth:`AlertService.tick` does four things, every one a transaction in the state
database (alerts/store.py), so a process killed between any two resumes where it was:

1. read new transitions from the rules outbox (cursor and alerts in one transaction);
   a firing transition for a key that is already open is a duplicate (counted, not
   notified again);
2. per notification group (route + ``group_by`` labels): decide the first notice
   (after ``group_wait_s``), notices of new members (``group_interval_s`` after the
   last), escalation to the next step when still unacknowledged after the step's
   ``after_min``, reminders every ``repeat_interval_min``, and resolved notices;
   silenced and inhibited alerts are left out; the morning digest;
3. deliver due notifications, one attempt each, with backoff and Retry-After between
   attempts and the receiver's next channel when one keeps failing;
4. write pending ``alert_event`` points to InfluxDB.

Time comes from an injected ``now()`` so tests drive escalation with a fake clock.
Semantics follow Alertmanager (grouping, repeat, inhibition, silences) and PagerDuty
(triggered → acknowledged → resolved, escalation by delay and loops); see docs/alerts.md.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import sqlite3
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from alerts.ack import AckServer, ack_url
from alerts.channels import Context, DeliveryError, Outgoing, send
from alerts.config import JST, AlertsConfig, Escalation, Inhibit, ack_secret
from alerts.render import iso, render
from alerts.schema import event_line
from alerts.store import Store
from core.config import Config
from core.influx import WriteError, Writer, make_writer
from core.message import Message
from core.mqtt import MqttSource
from rules.transitions import Transition, read_outbox

log = logging.getLogger(__name__)

OPEN = ("firing", "acknowledged")


def utcnow() -> datetime:
    return datetime.now(UTC)


def _label(a: dict[str, Any], name: str) -> str:
    return str(a.get(name) or "")


def silence_matches(s: dict[str, Any], a: dict[str, Any]) -> bool:
    if s["rule"] and not fnmatch.fnmatchcase(a["rule"], s["rule"]):
        return False
    if s["subject"] and not fnmatch.fnmatchcase(a["subject"], s["subject"]):
        return False
    return not s["district"] or a["district"] == s["district"]


def _is_inhibit_source(rule: Inhibit, a: dict[str, Any]) -> bool:
    return any(fnmatch.fnmatchcase(a["rule"], g) for g in rule.source_rules) and (
        not rule.source_subjects or a["subject"] in rule.source_subjects
    )


def _is_inhibit_target(rule: Inhibit, a: dict[str, Any]) -> bool:
    return any(fnmatch.fnmatchcase(a["rule"], g) for g in rule.target_rules) and (
        not rule.target_subject_kinds or a["subject_kind"] in rule.target_subject_kinds
    )


def _inhibit_related(rule: Inhibit, src: dict[str, Any], tgt: dict[str, Any]) -> bool:
    """The ``equal`` labels agree and, if the rule asks, the target is about the source."""
    return all(_label(src, k) == _label(tgt, k) for k in rule.equal) and (
        rule.source_subject_is is None or src["subject"] == _label(tgt, rule.source_subject_is)
    )


def _inhibits(rule: Inhibit, src: dict[str, Any], tgt: dict[str, Any]) -> bool:
    return (
        src["key"] != tgt["key"]
        and _is_inhibit_source(rule, src)
        and _is_inhibit_target(rule, tgt)
        and _inhibit_related(rule, src, tgt)
    )


def suppression(
    cfg: AlertsConfig,
    a: dict[str, Any],
    open_alerts: list[dict[str, Any]],
    silences: list[dict[str, Any]],
    t: float,
) -> str | None:
    """Why ``a`` is not notified now (``silence #3``, ``inhibited by #7 …``), or None."""
    for s in silences:
        if s["starts_at"] <= t < s["ends_at"] and silence_matches(s, a):
            return f"silence #{s['id']}"
    for rule in cfg.inhibit:
        for src in open_alerts:
            if _inhibits(rule, src, a):
                return f"inhibited by #{src['id']} {src['key']}"
    return None


def next_digest(cfg: AlertsConfig, t: float) -> float:
    local = datetime.fromtimestamp(t, JST)
    at = local.replace(
        hour=cfg.digest_at.hour, minute=cfg.digest_at.minute, second=0, microsecond=0
    )
    if at.timestamp() <= t:
        at += timedelta(days=1)
    return at.timestamp()


@dataclass(slots=True)
class _Members:
    """A notification group's alerts as the plan sees them."""

    active: list[dict[str, Any]]  # firing, neither silenced nor inhibited
    new: list[dict[str, Any]]  # active and not notified yet
    resolved_due: list[dict[str, Any]]  # resolved after a notice; resolution not sent yet


@dataclass(slots=True)
class _Progress:
    """Where a group's escalation stands: its row's step, step_at, loops, last_sent_at."""

    step: int
    step_at: float | None
    loops: int
    last_sent: float | None


def _escalate(policy: Escalation, progress: _Progress, t: float) -> bool:
    """Move to the next step, or back to the first for another loop, when the current
    step's ``after_min`` ran out unacknowledged. False: nowhere to go, or not yet."""
    after_min = policy.steps[progress.step].after_min
    started = progress.step_at
    if after_min is None or started is None or t < started + after_min * 60:
        return False
    if progress.step + 1 < len(policy.steps):
        progress.step, progress.step_at = progress.step + 1, t
        return True
    if progress.loops < policy.loops:
        progress.step, progress.step_at, progress.loops = 0, t, progress.loops + 1
        return True
    return False


class AlertService:
    def __init__(
        self,
        cfg: Config,
        acfg: AlertsConfig,
        *,
        now: Callable[[], datetime] = utcnow,
        writer: Writer | None = None,
    ) -> None:
        self.core = cfg
        self.cfg = acfg
        self.now = now
        self.store = Store(acfg.state_dir / "alerts.sqlite")
        self.key = ack_secret(acfg)
        self.stats: Counter[str] = Counter()
        self._writer = writer
        self._influx_warned = 0.0
        self.ctx = Context(mqtt=cfg.mqtt, subject_state=self.subject_state)
        self.ack_server: AckServer | None = None
        self.mqtt_ack: MqttSource | None = None

    def t(self) -> float:
        return self.now().timestamp()

    # --- 1. outbox ---------------------------------------------------------------

    def ingest(self) -> int:
        if not self.cfg.outbox.exists():
            return 0
        cursor = int(self.store.meta("cursor", "0") or 0)
        batch = read_outbox(self.cfg.outbox, cursor, limit=500)
        if not batch:
            return 0
        t = self.t()
        with self.store.tx() as db:
            for _oid, tr in batch:
                self._apply(db, tr, t)
            Store.set_meta(db, "cursor", str(batch[-1][0]))
        return len(batch)

    def _apply(self, db: sqlite3.Connection, tr: Transition, t: float) -> None:
        row = db.execute(
            "SELECT * FROM alerts WHERE key = ? AND status IN ('firing', 'acknowledged') "
            "ORDER BY id DESC LIMIT 1",
            (tr.key,),
        ).fetchone()
        if tr.firing:
            if row is not None:
                # docs/alerts.md#dedup: the same alert fired twice → one notification
                db.execute(
                    "UPDATE alerts SET duplicates = duplicates + 1 WHERE id = ?", (row["id"],)
                )
                self.stats["duplicates"] += 1
                log.info(
                    "duplicate firing of %s (alert #%s): not notified again", tr.key, row["id"]
                )
                return
            idx = self.cfg.route_for(tr.rule, tr.category, tr.severity.value, tr.district)
            route = self.cfg.route(idx)
            labels = {
                "rule": tr.rule,
                "category": tr.category,
                "subject": tr.subject,
                "subject_kind": tr.subject_kind,
                "district": tr.district or "",
                "severity": tr.severity.value,
            }
            gid: int | None = None
            if not route.digest:
                gkey = "|".join(f"{k}={labels[k]}" for k in route.group_by)
                g = db.execute(
                    "SELECT id FROM groups WHERE route = ? AND gkey = ? AND closed = 0",
                    (idx, gkey),
                ).fetchone()
                if g is None:
                    gid = int(
                        db.execute(
                            "INSERT INTO groups (route, gkey, created_at) VALUES (?, ?, ?)",
                            (idx, gkey, t),
                        ).lastrowid
                        or 0
                    )
                else:
                    gid = int(g["id"])
            cur = db.execute(
                "INSERT INTO alerts (key, rule, category, subject, subject_kind, district, "
                "severity, status, fired_at, received_at, message, message_en, record, route, "
                "group_id) VALUES (?, ?, ?, ?, ?, ?, ?, 'firing', ?, ?, ?, ?, ?, ?, ?)",
                (
                    tr.key,
                    tr.rule,
                    tr.category,
                    tr.subject,
                    tr.subject_kind,
                    tr.district,
                    tr.severity.value,
                    tr.event_time.timestamp(),
                    t,
                    tr.message,
                    tr.message_en,
                    tr.model_dump_json(),
                    idx,
                    gid,
                ),
            )
            new = dict(db.execute("SELECT * FROM alerts WHERE id = ?", (cur.lastrowid,)).fetchone())
            self._event(db, new, "firing", tr.event_time.timestamp())
            self.stats["firing"] += 1
        else:
            if row is None:
                log.info("resolved %s, which is not open here: nothing to do", tr.key)
                return
            db.execute(
                "UPDATE alerts SET status = 'resolved', resolved_at = ?, resolved_received_at = ? "
                "WHERE id = ?",
                (tr.event_time.timestamp(), t, row["id"]),
            )
            self._event(db, dict(row), "resolved", tr.event_time.timestamp())
            self.stats["resolved"] += 1

    def _event(self, db: sqlite3.Connection, a: dict[str, Any], event: str, at: float) -> None:
        if self.cfg.write_events:
            self.store.add_event_lines(db, [event_line(a, event, at)])

    # --- 2. decide ---------------------------------------------------------------

    def plan(self) -> int:
        """Create the notifications that are due now; how many were created."""
        t = self.t()
        made = 0
        open_alerts = self.store.query(
            "SELECT * FROM alerts WHERE status IN ('firing', 'acknowledged')"
        )
        silences = self.store.query("SELECT * FROM silences WHERE ends_at > ?", (t,))
        for g in self.store.query("SELECT * FROM groups WHERE closed = 0 ORDER BY id"):
            with self.store.tx() as db:
                made += self._plan_group(db, g, open_alerts, silences, t)
        with self.store.tx() as db:
            made += self._plan_digest(db, open_alerts, silences, t)
        return made

    def _plan_group(
        self,
        db: sqlite3.Connection,
        g: dict[str, Any],
        open_alerts: list[dict[str, Any]],
        silences: list[dict[str, Any]],
        t: float,
    ) -> int:
        policy = self.cfg.policy(self.cfg.route(int(g["route"])))
        members = self._members(db, g["id"], open_alerts, silences, t)
        progress = _Progress(g["step"], g["step_at"], g["loops"], g["last_sent_at"])
        if not members.active and progress.step_at is not None:
            # everything acknowledged or resolved: the escalation stops here; a new
            # alert in this group starts again from the first step
            progress.step, progress.step_at, progress.loops = 0, None, 0
        kind = self._due_kind(policy, members, progress, t)
        made = 0
        if kind is not None:
            made = self._send_group(
                db, g, kind, policy=policy, members=members, progress=progress, t=t
            )
        db.execute(
            "UPDATE groups SET step = ?, step_at = ?, loops = ?, last_sent_at = ? WHERE id = ?",
            (progress.step, progress.step_at, progress.loops, progress.last_sent, g["id"]),
        )
        self._close_if_done(db, g["id"])
        return made

    def _members(
        self,
        db: sqlite3.Connection,
        gid: int,
        open_alerts: list[dict[str, Any]],
        silences: list[dict[str, Any]],
        t: float,
    ) -> _Members:
        cfg = self.cfg
        rows = [
            dict(r)
            for r in db.execute(
                "SELECT * FROM alerts WHERE group_id = ? ORDER BY id", (gid,)
            ).fetchall()
        ]
        active = [
            a
            for a in rows
            if a["status"] == "firing" and suppression(cfg, a, open_alerts, silences, t) is None
        ]
        resolved_due = (
            [
                a
                for a in rows
                if a["status"] == "resolved" and a["notified"] and not a["resolved_notified"]
            ]
            if cfg.send_resolved
            else []
        )
        return _Members(active, [a for a in active if not a["notified"]], resolved_due)

    def _due_kind(
        self, policy: Escalation, members: _Members, progress: _Progress, t: float
    ) -> str | None:
        """Which notice the group is due now, if any; escalating moves ``progress`` on.

        ``firing`` for the first notice, new members or resolutions; ``escalation``
        when a step's time ran out unacknowledged; ``repeat`` for the reminder.
        """
        if self._news_due(members, progress.last_sent, t):
            return "firing"
        if not members.active or progress.step_at is None:
            return None
        if _escalate(policy, progress, t):
            return "escalation"
        last_sent = progress.last_sent
        if last_sent is not None and t >= last_sent + self.cfg.repeat_interval_min * 60:
            return "repeat"
        return None

    def _news_due(self, members: _Members, last_sent: float | None, t: float) -> bool:
        """New members or resolutions have waited ``group_wait_s``, and ``group_interval_s``
        has passed since the group's last notice."""
        if not members.new and not members.resolved_due:
            return False
        since: float = min(
            [a["received_at"] for a in members.new]
            + [a["resolved_received_at"] for a in members.resolved_due]
        )
        due = since + self.cfg.group_wait_s
        if last_sent is not None:
            due = max(due, last_sent + self.cfg.group_interval_s)
        return t >= due

    def _send_group(
        self,
        db: sqlite3.Connection,
        g: dict[str, Any],
        kind: str,
        *,
        policy: Escalation,
        members: _Members,
        progress: _Progress,
        t: float,
    ) -> int:
        """Notify the step's targets of the firing alerts, and everyone notified of the
        group before of the resolutions; how many notifications were created."""
        step = progress.step
        targets = self._step_targets(policy, step, g["gkey"])
        prev = [
            r["receiver"]
            for r in db.execute(
                "SELECT DISTINCT receiver FROM notifications WHERE group_id = ? "
                "AND kind != 'resolved'",
                (g["id"],),
            ).fetchall()
        ]
        firing = members.active if kind != "firing" or members.new else []
        made = 0
        for rec in dict.fromkeys([*targets, *prev]):
            f = firing if rec in targets else []
            r = members.resolved_due if rec in prev else []
            if f or r:
                self._notify(db, g["id"], rec, kind, step, f, r, g["gkey"], t)
                made += 1
        if firing:
            progress.last_sent = t
            if progress.step_at is None:
                progress.step_at = t
        db.executemany(
            "UPDATE alerts SET notified = 1 WHERE id = ?", [(a["id"],) for a in members.new]
        )
        db.executemany(
            "UPDATE alerts SET resolved_notified = 1 WHERE id = ?",
            [(a["id"],) for a in members.resolved_due],
        )
        return made

    def _step_targets(self, policy: Escalation, step: int, gkey: str) -> list[str]:
        targets = self.cfg.resolve_targets(policy.steps[step].targets, self.now())
        if not targets:
            log.error(
                "group %s step %d resolves to nobody (empty rota?): using %s",
                gkey,
                step + 1,
                self.cfg.default_receiver,
            )
            targets = [self.cfg.default_receiver]
        return targets

    def _close_if_done(self, db: sqlite3.Connection, gid: int) -> None:
        # a group closes when every member is resolved and, if it was announced, its
        # resolution too
        left = db.execute(
            "SELECT COUNT(*) FROM alerts WHERE group_id = ? AND NOT (status = 'resolved' AND "
            "(resolved_notified = 1 OR notified = 0 OR ? = 0))",
            (gid, int(self.cfg.send_resolved)),
        ).fetchone()[0]
        if left == 0:
            db.execute("UPDATE groups SET closed = 1 WHERE id = ?", (gid,))

    def _plan_digest(
        self,
        db: sqlite3.Connection,
        open_alerts: list[dict[str, Any]],
        silences: list[dict[str, Any]],
        t: float,
    ) -> int:
        nxt = db.execute("SELECT v FROM meta WHERE k = 'next_digest'").fetchone()
        if nxt is None:
            Store.set_meta(db, "next_digest", str(next_digest(self.cfg, t)))
            return 0
        if t < float(nxt["v"]):
            return 0
        made = 0
        pending = [
            dict(r)
            for r in db.execute(
                "SELECT * FROM alerts WHERE group_id IS NULL AND digested = 0 ORDER BY id"
            ).fetchall()
        ]
        by_route: dict[int, list[dict[str, Any]]] = {}
        for a in pending:
            if suppression(self.cfg, a, open_alerts, silences, t) is None:
                by_route.setdefault(int(a["route"]), []).append(a)
        for idx, items in by_route.items():
            route = self.cfg.route(idx)
            targets = self.cfg.resolve_targets(self.cfg.policy(route).steps[0].targets, self.now())
            for rec in targets or [self.cfg.default_receiver]:
                self._notify(db, None, rec, "digest", 0, items, [], route.name or f"route {idx}", t)
                made += 1
        db.executemany("UPDATE alerts SET digested = 1 WHERE id = ?", [(a["id"],) for a in pending])
        Store.set_meta(db, "next_digest", str(next_digest(self.cfg, t)))
        return made

    def _notify(  # noqa: PLR0917
        self,
        db: sqlite3.Connection,
        gid: int | None,
        receiver: str,
        kind: str,
        step: int,
        firing: list[dict[str, Any]],
        resolved: list[dict[str, Any]],
        group: str,
        t: float,
    ) -> None:
        ack_ids = [a["id"] for a in firing] if kind != "digest" else []
        nid = int(
            db.execute(
                "INSERT INTO notifications (group_id, receiver, kind, step, created_at, alert_ids, "
                "title, body, retry_key, next_at) VALUES (?, ?, ?, ?, ?, ?, '', '{}', ?, ?)",
                (gid, receiver, kind, step, t, json.dumps(ack_ids), str(uuid.uuid4()), t),
            ).lastrowid
            or 0
        )
        url = (
            ack_url(self.cfg.ack.base_url, self.key, nid, int(t + self.cfg.ack.link_ttl_h * 3600))
            if ack_ids
            else None
        )
        title, text, body = render(
            kind,
            firing,
            resolved,
            lang=self.cfg.lang,
            step=step,
            ack_url=url,
            notification_id=nid,
            receiver=receiver,
            group=group,
        )
        body["text"] = text
        db.execute(
            "UPDATE notifications SET title = ?, body = ? WHERE id = ?",
            (title, json.dumps(body, ensure_ascii=False), nid),
        )
        log.info("notification #%d (%s) to %s: %s", nid, kind, receiver, title)

    # --- 3. deliver --------------------------------------------------------------

    def deliver(self) -> int:
        t = self.t()
        done = 0
        for n in self.store.query(
            "SELECT * FROM notifications WHERE status = 'pending' AND next_at <= ? ORDER BY id",
            (t,),
        ):
            done += self._deliver_one(n, t)
        return done

    def _deliver_one(self, n: dict[str, Any], t: float) -> int:
        rec = self.cfg.receivers.get(n["receiver"])
        body = json.loads(n["body"])
        subjects = sorted(
            {(a["subject_kind"], a["subject"]) for a in body["alerts"] + body["resolved"]}
        )
        msg = Outgoing(
            id=n["id"],
            receiver=n["receiver"],
            kind=n["kind"],
            title=n["title"],
            text=body["text"],
            body=body,
            retry_key=n["retry_key"],
            subjects=subjects,
        )
        channels = rec.channels() if rec else []
        idx, attempts = int(n["channel_idx"]), int(n["attempts"])
        retry = self.cfg.retry
        while True:
            if idx >= len(channels):
                self._finish(
                    n["id"], "failed", None, f"no channel left for receiver {n['receiver']!r}"
                )
                log.error(
                    "notification #%d to %s FAILED on every channel (%s); see alerts show %s",
                    n["id"],
                    n["receiver"],
                    ", ".join(channels) or "none",
                    n["id"],
                )
                self.stats["notifications_failed"] += 1
                return 0
            ch = channels[idx]
            assert rec is not None
            try:
                detail = send(ch, rec, msg, self.ctx)
            except DeliveryError as exc:
                attempts += 1
                self.stats[f"failures_{ch}"] += 1
                self._attempt(n["id"], t, ch, False, str(exc))
                log.warning(
                    "notification #%d to %s via %s failed (attempt %d): %s",
                    n["id"],
                    n["receiver"],
                    ch,
                    attempts,
                    exc,
                )
                if exc.retryable and attempts < retry.attempts:
                    wait = retry.backoff_s * 2 ** (attempts - 1)
                    if exc.retry_after_s is not None:
                        wait = max(wait, exc.retry_after_s)  # Retry-After: never sooner
                    wait = min(wait, retry.max_backoff_s)
                    with self.store.tx() as db:
                        db.execute(
                            "UPDATE notifications SET channel_idx = ?, attempts = ?, next_at = ?, "
                            "last_error = ? WHERE id = ?",
                            (idx, attempts, t + wait, str(exc), n["id"]),
                        )
                    return 0
                idx, attempts = idx + 1, 0
                if idx < len(channels):
                    log.warning("notification #%d: falling back to %s", n["id"], channels[idx])
                    with self.store.tx() as db:
                        db.execute(
                            "UPDATE notifications SET channel_idx = ?, attempts = 0, "
                            "last_error = ? WHERE id = ?",
                            (idx, str(exc), n["id"]),
                        )
                continue
            self._attempt(n["id"], t, ch, True, detail)
            self._finish(n["id"], "sent", ch, None, t)
            self.stats["notifications_sent"] += 1
            return 1

    def _attempt(self, nid: int, t: float, ch: str, ok: bool, detail: str) -> None:
        with self.store.tx() as db:
            db.execute(
                "INSERT INTO attempts (notification_id, at, channel, ok, detail) "
                "VALUES (?, ?, ?, ?, ?)",
                (nid, t, ch, int(ok), detail[:1000]),
            )

    def _finish(
        self, nid: int, status: str, ch: str | None, error: str | None, t: float | None = None
    ) -> None:
        with self.store.tx() as db:
            db.execute(
                "UPDATE notifications SET status = ?, channel = ?, sent_at = ?, "
                "last_error = COALESCE(?, last_error) WHERE id = ?",
                (status, ch, t, error, nid),
            )

    def subject_state(self, kind: str, subject: str) -> dict[str, Any]:
        rows = self.store.query(
            "SELECT * FROM alerts WHERE subject_kind = ? AND subject = ? AND status IN "
            "('firing', 'acknowledged') ORDER BY id",
            (kind, subject),
        )
        return {
            "subject": subject,
            "subject_kind": kind,
            "updated": iso(self.t()),
            "alerts": [
                {
                    "id": a["id"],
                    "key": a["key"],
                    "rule": a["rule"],
                    "severity": a["severity"],
                    "status": a["status"],
                    "since": iso(a["fired_at"]),
                    "acked_by": a["acked_by"],
                    "message": a["message"],
                }
                for a in rows
            ],
        }

    # --- 4. InfluxDB events --------------------------------------------------------

    def write_events(self) -> int:
        if not self.cfg.write_events:
            return 0
        rows = self.store.query("SELECT id, line FROM events ORDER BY id LIMIT 5000")
        if not rows:
            return 0
        if self._writer is None:
            self._writer = make_writer(self.core.influx)
        try:
            self._writer.write([r["line"] for r in rows])
        except WriteError as exc:
            if exc.bad_data:
                raise
            t = self.t()
            if t - self._influx_warned > 300:
                self._influx_warned = t
                log.warning("alert events not written to InfluxDB (kept, retried): %s", exc)
            return 0
        with self.store.tx() as db:
            db.execute("DELETE FROM events WHERE id <= ?", (rows[-1]["id"],))
        return len(rows)

    # --- the loop ----------------------------------------------------------------

    def tick(self) -> None:
        self.ingest()
        self.plan()
        self.deliver()
        self.write_events()

    def _on_mqtt_ack(self, m: Message) -> None:
        try:
            data = json.loads(m.payload)
            ids = data["id"] if isinstance(data["id"], list) else [data["id"]]
            by = str(data.get("by") or "mqtt")
            changed = self.store.acknowledge([int(i) for i in ids], by, "mqtt", self.t())
            log.info("acknowledged by %s via MQTT: alerts %s", by, [a["id"] for a in changed])
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignored ack message on %s: %s (%r)", m.topic, exc, m.payload[:200])
        assert self.mqtt_ack is not None
        self.mqtt_ack.ack(m.token)

    def start_listeners(self) -> None:
        if self.cfg.ack.port:
            self.ack_server = AckServer(
                self.store, self.key, self.cfg.ack.listen, self.cfg.ack.port, self.t
            ).start()
            log.info(
                "ack links served on http://%s:%d/ack", self.cfg.ack.listen, self.ack_server.port
            )
        if self.cfg.ack.mqtt_topic:
            m = self.core.mqtt
            mcfg = m.model_copy(
                update={
                    "topic_prefix": self.cfg.ack.mqtt_topic,
                    "lorawan_topics": [],
                    "shared_group": "",
                    "client_id": f"{m.client_id}-alerts"[:128],
                    "receive_maximum": 100,
                }
            )
            self.mqtt_ack = MqttSource(mcfg, self.cfg.state_dir, self._on_mqtt_ack)
            self.mqtt_ack.start()

    def stop_listeners(self) -> None:
        if self.ack_server is not None:
            self.ack_server.stop()
        if self.mqtt_ack is not None:
            self.mqtt_ack.stop()

    def run(self, stop: threading.Event) -> None:
        self.start_listeners()
        log.info(
            "alerts service started: outbox %s, state %s, %d receivers, %d routes",
            self.cfg.outbox,
            self.store.path,
            len(self.cfg.receivers),
            len(self.cfg.routes),
        )
        try:
            while not stop.is_set():
                try:
                    self.tick()
                except (sqlite3.OperationalError, OSError):
                    # e.g. the rules database locked for longer than the busy timeout:
                    # nothing was committed half-way, the next tick tries again
                    log.exception("alerts tick failed; retrying in %.0f s", self.cfg.poll_s)
                stop.wait(self.cfg.poll_s)
        finally:
            self.stop_listeners()
            if self._writer is not None:
                self._writer.close()
            log.info("alerts service stopped: %s", dict(self.stats))
            self.store.close()
