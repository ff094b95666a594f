"""The alerts service: outbox → alerts → groups → notifications → channels.

Each :meth:`AlertService.tick` does four things, every one a transaction in the state
database (alerts/store.py, which holds all the SQL), so a process killed between any
two resumes where it was:

1. read new transitions from the rules outbox (cursor and alerts in one transaction);
   a firing transition for a key that is already open is a duplicate (counted, not
   notified again); a record that is not a valid transition is set aside
   (``rejected_outbox``) and the service reads on;
2. per notification group (route + ``group_by`` labels, alerts/matching.py): decide
   the first notice (after ``group_wait_s``), notices of new members
   (``group_interval_s`` after the last), escalation to the next step when still
   unacknowledged after the step's ``after_min``, reminders every
   ``repeat_interval_min``, and resolved notices; silenced and inhibited alerts are
   left out; the morning digest; and one notice 「○○さんが確認しました」 to everyone a
   notice about an alert reached, when someone acknowledged it (from the ack link, the
   CLI or MQTT: whatever wrote ``acked_at`` into the store);
3. deliver due notifications (alerts/delivery.py: attempts, backoff, Retry-After,
   fallback, rounds for a failed critical); a critical notice that failed on every
   channel raises ``system.delivery_failed`` to the other receivers;
4. write pending ``alert_event`` points to InfluxDB; points InfluxDB refuses are
   set aside (``rejected_events``), never retried for ever; and, every
   ``metrics_interval_s``, the service's own figures (``yukimizu_alerts``,
   ``yukimizu_alerts_channel``: docs/alerts.md#own-figures).

Time comes from an injected ``now()`` so tests drive escalation with a fake clock.
Semantics follow Alertmanager (grouping, repeat, inhibition, silences) and PagerDuty
(triggered → acknowledged → resolved, escalation by delay and loops); see docs/alerts.md.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from alerts.ack import CALLBACK_PATH, AckServer, LineWorksAcks, ack_url
from alerts.channels import Context
from alerts.config import CHANNELS, JST, AlertsConfig, Escalation, ack_secret
from alerts.delivery import Delivery
from alerts.matching import (
    delivery_failed_targets,
    digest_targets,
    group_key,
    route_of,
    step_targets,
    suppression,
)
from alerts.render import Notice, iso, render, render_ack
from alerts.schema import UNACKED_AFTER_S, event_line, stats_lines
from alerts.store import NewNotification, Store
from core.config import Config
from core.influx import WriteError, Writer, make_writer
from core.message import Message
from core.mqtt import MqttSource
from rules.transitions import Transition, read_outbox

log = logging.getLogger(__name__)

__all__ = ["DELIVERY_FAILED", "AlertService", "next_digest", "suppression", "utcnow"]

OPEN = ("firing", "acknowledged")
DELIVERY_FAILED = "system.delivery_failed"
EVENTS_BATCH = 5000


def utcnow() -> datetime:
    return datetime.now(UTC)


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


def by_of(a: dict[str, Any]) -> str:
    """Who acknowledged ``a``, as they gave their name."""
    return str(a["acked_by"] or "?")


def _fields(tr: Transition, t: float) -> dict[str, Any]:
    """A firing transition as the columns of a new alert row."""
    return {
        "key": tr.key,
        "rule": tr.rule,
        "category": tr.category,
        "subject": tr.subject,
        "subject_kind": tr.subject_kind,
        "district": tr.district,
        "severity": tr.severity.value,
        "fired_at": tr.event_time.timestamp(),
        "received_at": t,
        "message": tr.message,
        "message_en": tr.message_en,
        "record": tr.model_dump_json(),
    }


def _delivery_failed_fields(
    n: dict[str, Any], rounds: int, retry_at: float | None, t: float
) -> dict[str, Any]:
    receiver = n["receiver"]
    title = n["title"]
    later_ja = f"{(retry_at - t) / 60:.0f}分後に再送します" if retry_at else "再送は終了しました"
    later_en = f"retrying in {(retry_at - t) / 60:.0f} min" if retry_at else "no more retries"
    return {
        "key": f"{DELIVERY_FAILED}:{receiver}",
        "rule": DELIVERY_FAILED,
        "category": "system",
        "subject": receiver,
        "subject_kind": "receiver",
        "district": None,
        "severity": "critical",
        "fired_at": t,
        "received_at": t,
        "message": (
            f"{receiver} への重大通知 #{n['id']} がどの経路でも届きませんでした"
            f" ({rounds}回目、{later_ja}): {title}"
        ),
        "message_en": (
            f"critical notification #{n['id']} to {receiver} failed on every channel"
            f" (round {rounds}, {later_en}): {title}"
        ),
        "record": json.dumps({"notification_id": n["id"], "receiver": receiver}),
    }


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
        self._metrics_warned = 0.0
        self._metrics_at: float | None = None  # when the figures were last written
        self._ack_s: list[float] = []  # time to acknowledge, since the last figures
        self.ctx = Context(mqtt=cfg.mqtt, subject_state=self.subject_state)
        self.delivery = Delivery(
            acfg,
            self.store,
            self.ctx,
            self.stats,
            on_failed=self._delivery_failed,
            on_delivered=self._delivered,
        )
        self.ack_server: AckServer | None = None
        self.mqtt_ack: MqttSource | None = None

    def t(self) -> float:
        return self.now().timestamp()

    # --- 1. outbox ---------------------------------------------------------------

    def ingest(self) -> int:
        """Apply the outbox records after the cursor; how many were read.

        Records that are not valid transitions are set aside in ``rejected_outbox``
        in the same transaction that moves the cursor past them, and logged once:
        they would fail again at every start (docs/alerts.md#bad-outbox-records).
        """
        if not self.cfg.outbox.exists():
            return 0
        cursor = int(self.store.meta("cursor", "0") or 0)
        batch = read_outbox(self.cfg.outbox, cursor, limit=500)
        if batch.recreated:
            # Keeping the cursor would skip every transition of the new state database
            # in silence; re-reading it whole is safe, firings of open alerts merge.
            log.warning(
                "the rules outbox %s holds no record after #%d: its state was recreated; "
                "reading it from the start",
                self.cfg.outbox,
                cursor,
            )
            with self.store.tx() as db:
                Store.set_meta(db, "cursor", "0")
            cursor = 0
            batch = read_outbox(self.cfg.outbox, cursor, limit=500)
        if batch.last_id == cursor:
            return 0
        t = self.t()
        with self.store.tx() as db:
            for _oid, tr in batch.transitions:
                self._apply(db, tr, t)
            Store.reject_outbox(db, batch.bad, t)
            Store.set_meta(db, "cursor", str(batch.last_id))
        for bad in batch.bad:
            log.error(
                "outbox record #%d of %s is not a valid transition (set aside in "
                "rejected_outbox, see alerts show): %s; record (%d bytes): %r",
                bad.id,
                self.cfg.outbox,
                bad.reason,
                bad.size,
                bad.raw[:300],
            )
            self.stats["outbox_rejected"] += 1
        return len(batch.transitions) + len(batch.bad)

    def _apply(self, db: sqlite3.Connection, tr: Transition, t: float) -> None:
        if tr.firing:
            self._fire(db, _fields(tr, t), tr.event_time.timestamp())
            return
        row = Store.open_alert(db, tr.key)
        if row is None:
            log.info("resolved %s, which is not open here: nothing to do", tr.key)
            return
        Store.resolve_alert(db, row["id"], tr.event_time.timestamp(), t)
        self._event(db, row, "resolved", tr.event_time.timestamp())
        self.stats["resolved"] += 1

    def _fire(
        self, db: sqlite3.Connection, fields: dict[str, Any], at: float, *, grouped: bool = True
    ) -> dict[str, Any] | None:
        """Open an alert, or count a duplicate (None) when its key is open already.

        ``grouped=False`` keeps it out of groups and digests: whoever raises it
        notifies for it (the delivery_failed alert)."""
        row = Store.open_alert(db, fields["key"])
        if row is not None:
            # docs/alerts.md#dedup: the same alert fired twice → one notification
            Store.count_duplicate(db, row["id"])
            self.stats["duplicates"] += 1
            log.info(
                "duplicate firing of %s (alert #%s): not notified again", fields["key"], row["id"]
            )
            return None
        idx = route_of(self.cfg, fields)
        route = self.cfg.route(idx)
        gid: int | None = None
        if grouped and not route.digest:
            gid = Store.group_for(db, idx, group_key(route, fields), fields["received_at"])
        extra = {} if grouped else {"notified": 1, "digested": 1}
        new = Store.insert_alert(db, {**fields, **extra, "route": idx, "group_id": gid})
        self._event(db, new, "firing", at)
        self.stats["firing"] += 1
        return new

    def _event(self, db: sqlite3.Connection, a: dict[str, Any], event: str, at: float) -> None:
        if self.cfg.write_events:
            self.store.add_event_lines(db, [event_line(a, event, at)])

    # --- 2. decide ---------------------------------------------------------------

    def plan(self) -> int:
        """Create the notifications that are due now; how many were created."""
        t = self.t()
        made = 0
        open_alerts = self.store.open_alerts()
        silences = self.store.active_silences(t)
        for g in self.store.open_groups():
            with self.store.tx() as db:
                made += self._plan_group(db, g, open_alerts, silences, t)
        with self.store.tx() as db:
            made += self._plan_digest(db, open_alerts, silences, t)
        with self.store.tx() as db:
            made += self._plan_ack_notices(db, open_alerts, silences, t)
        return made

    def _plan_ack_notices(
        self,
        db: sqlite3.Connection,
        open_alerts: list[dict[str, Any]],
        silences: list[dict[str, Any]],
        t: float,
    ) -> int:
        """docs/alerts.md#who-took-it: per acknowledgement (who, when), one notice to
        each receiver that a notice naming one of its alerts reached, on the channel
        that reached them; not to the one who acknowledged. Decided once: the alerts
        are marked in the same transaction. A silenced (or inhibited) alert is left out
        of it. How many notifications were created."""
        due = Store.ack_notices_due(db)
        if not due:
            return 0
        acks: dict[tuple[str, float], list[dict[str, Any]]] = {}
        for a in due:
            self.stats["acknowledged"] += 1
            if self.cfg.write_metrics:  # emptied by each metrics point
                self._ack_s.append(max(a["acked_at"] - a["received_at"], 0.0))
            why = suppression(self.cfg, a, open_alerts, silences, t)
            if why is not None:
                log.info("alert #%d acknowledged by %s: no notice (%s)", a["id"], by_of(a), why)
                continue
            acks.setdefault((by_of(a), float(a["acked_at"])), []).append(a)
        made = 0
        for (by, at), alerts in acks.items():
            by_id = {a["id"]: a for a in alerts}
            told: dict[str, tuple[str | None, list[dict[str, Any]]]] = {}
            for n in Store.reached(db, by_id):
                _old, seen = told.get(n["receiver"], (None, []))
                if by_id[n["alert_id"]] not in seen:
                    seen.append(by_id[n["alert_id"]])
                told[n["receiver"]] = (n["channel"], seen)  # the latest channel wins
            for rec, (channel, seen) in told.items():
                if self._is_acker(rec, by):
                    continue
                self._notify_ack(db, rec, channel, sorted(seen, key=lambda a: a["id"]), by, at, t)
                made += 1
        Store.mark_ack_noticed(db, [a["id"] for a in due])
        return made

    def _is_acker(self, receiver: str, by: str) -> bool:
        rec = self.cfg.receivers.get(receiver)
        return by in (receiver, rec.label if rec else None)

    def _notify_ack(  # noqa: PLR0917
        self,
        db: sqlite3.Connection,
        receiver: str,
        channel: str | None,
        acked: list[dict[str, Any]],
        by: str,
        at: float,
        t: float,
    ) -> None:
        rec = self.cfg.receivers.get(receiver)
        chans: list[str] = list(rec.channels()) if rec else []
        idx = chans.index(channel) if channel in chans else 0
        new = NewNotification(None, receiver, "ack", str(uuid.uuid4()), channel_idx=idx)
        nid = Store.add_notification(db, new, t)
        title, text, body = render_ack(
            acked, by=by, at=at, lang=self.cfg.lang, notification_id=nid, receiver=receiver
        )
        body["text"] = text
        Store.set_text(db, nid, title, body)
        self.stats["ack_notices"] += 1
        log.info("notification #%d (ack) to %s via %s: %s", nid, receiver, channel, title)

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
        Store.save_group_progress(
            db, g["id"], progress.step, progress.step_at, progress.loops, progress.last_sent
        )
        Store.close_group_if_done(db, g["id"], self.cfg.send_resolved)
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
        rows = Store.group_members(db, gid)
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
        targets = step_targets(self.cfg, policy, step, self.now(), g["gkey"])
        prev = Store.group_receivers(db, g["id"])
        firing = members.active if kind != "firing" or members.new else []
        made = 0
        for rec in dict.fromkeys([*targets, *prev]):
            f = firing if rec in targets else []
            r = members.resolved_due if rec in prev else []
            if f or r:
                self._notify(db, g["id"], Notice(kind, rec, g["gkey"], f, r, step), t)
                made += 1
        if firing:
            progress.last_sent = t
            if progress.step_at is None:
                progress.step_at = t
            if kind in ("escalation", "repeat"):
                self.stats[f"{kind}s"] += 1
        Store.mark_notified(db, [a["id"] for a in members.new])
        Store.mark_resolved_notified(db, [a["id"] for a in members.resolved_due])
        return made

    def _plan_digest(
        self,
        db: sqlite3.Connection,
        open_alerts: list[dict[str, Any]],
        silences: list[dict[str, Any]],
        t: float,
    ) -> int:
        nxt = Store.get_meta(db, "next_digest")
        if nxt is None:
            Store.set_meta(db, "next_digest", str(next_digest(self.cfg, t)))
            return 0
        if t < float(nxt):
            return 0
        made = 0
        pending = Store.undigested(db)
        by_route: dict[int, list[dict[str, Any]]] = {}
        for a in pending:
            if suppression(self.cfg, a, open_alerts, silences, t) is None:
                by_route.setdefault(int(a["route"]), []).append(a)
        for idx, items in by_route.items():
            route = self.cfg.route(idx)
            for rec in digest_targets(self.cfg, route, self.now()):
                self._notify(
                    db, None, Notice("digest", rec, route.name or f"route {idx}", items), t
                )
                made += 1
        Store.mark_digested(db, [a["id"] for a in pending])
        Store.set_meta(db, "next_digest", str(next_digest(self.cfg, t)))
        return made

    def _notify(self, db: sqlite3.Connection, gid: int | None, notice: Notice, t: float) -> None:
        firing = notice.firing
        ack_ids = [a["id"] for a in firing] if notice.kind != "digest" else []
        new = NewNotification(
            gid, notice.receiver, notice.kind, str(uuid.uuid4()), notice.step, ack_ids
        )
        nid = Store.add_notification(db, new, t)
        url = (
            ack_url(self.cfg.ack.base_url, self.key, nid, int(t + self.cfg.ack.link_ttl_h * 3600))
            if ack_ids
            else None
        )
        title, text, body = render(notice, lang=self.cfg.lang, ack_url=url, notification_id=nid)
        body["text"] = text
        Store.set_text(db, nid, title, body)
        log.info("notification #%d (%s) to %s: %s", nid, notice.kind, notice.receiver, title)

    # --- 3. deliver --------------------------------------------------------------

    def deliver(self) -> int:
        return self.delivery.run(self.t())

    def _delivery_failed(
        self, n: dict[str, Any], rounds: int, retry_at: float | None, t: float
    ) -> None:
        """A notification failed on every channel: for a critical one, raise
        ``system.delivery_failed`` (once per receiver while open) to the others."""
        body = json.loads(n["body"])
        critical = [a for a in body.get("alerts", []) if a["severity"] == "critical"]
        if not critical or all(a["rule"] == DELIVERY_FAILED for a in critical):
            return  # not critical, or itself a delivery_failed notice: no alert about it
        fields = _delivery_failed_fields(n, rounds, retry_at, t)
        log.error("%s: %s", DELIVERY_FAILED, fields["message_en"])
        with self.store.tx() as db:
            alert = self._fire(db, fields, t, grouped=False)
            if alert is None:
                return
            targets = delivery_failed_targets(self.cfg, n["receiver"])
            for rec in targets:
                self._notify(db, None, Notice("firing", rec, fields["key"], [alert]), t)
        self.stats["delivery_failed"] += 1
        if not targets:
            log.error(
                "%s: no other receiver to tell (see alerts.delivery_failed_to)", fields["key"]
            )

    def _delivered(self, n: dict[str, Any], t: float) -> None:
        """A notification reached its receiver: a delivery_failed alert about that
        receiver is resolved (and the resolution announced)."""
        key = f"{DELIVERY_FAILED}:{n['receiver']}"
        with self.store.tx() as db:
            row = Store.open_alert(db, key)
            if row is None:
                return
            Store.resolve_alert(db, row["id"], t, t)
            self._event(db, row, "resolved", t)
            resolved = {**row, "status": "resolved", "resolved_at": t}
            if self.cfg.send_resolved:
                for rec in delivery_failed_targets(self.cfg, n["receiver"]):
                    self._notify(db, None, Notice("resolved", rec, key, [], [resolved]), t)
        log.info("%s resolved: notification #%d reached %s", key, n["id"], n["receiver"])
        self.stats["resolved"] += 1

    def subject_state(self, kind: str, subject: str) -> dict[str, Any]:
        rows = self.store.subject_open_alerts(kind, subject)
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
        """Write pending alert_event points; how many InfluxDB took.

        InfluxDB away (no answer, 5xx, auth): the points stay and are retried next
        tick. InfluxDB refusing points (400/422, 413 too large): the batch is halved
        until each refused line stands alone; those are logged and moved to
        ``rejected_events`` with InfluxDB's reason, and the rest are written.
        """
        if not self.cfg.write_events:
            return 0
        rows = self.store.pending_events(EVENTS_BATCH)
        if not rows:
            return 0
        if self._writer is None:
            self._writer = make_writer(self.core.influx)
        written: list[int] = []
        rejected: list[tuple[int, str, int | None, str]] = []
        try:
            self._write_split(rows, written, rejected)
        except WriteError as exc:
            t = self.t()
            if t - self._influx_warned > 300:
                self._influx_warned = t
                log.warning("alert events not written to InfluxDB (kept, retried): %s", exc)
        finally:
            if written:
                self.store.events_written(written)
            if rejected:
                self.store.reject_events(rejected, self.t())
        return len(written)

    def _write_split(
        self,
        rows: Sequence[dict[str, Any]],
        written: list[int],
        rejected: list[tuple[int, str, int | None, str]],
    ) -> None:
        """Write ``rows``; on a refusal, each half again (bounded: at most 2·len writes).
        A WriteError that is not a refusal propagates: InfluxDB is away."""
        assert self._writer is not None
        try:
            self._writer.write([r["line"] for r in rows])
        except WriteError as exc:
            if not exc.bad_data:
                raise
            if len(rows) > 1:
                mid = len(rows) // 2
                self._write_split(rows[:mid], written, rejected)
                self._write_split(rows[mid:], written, rejected)
                return
            r = rows[0]
            log.error(
                "InfluxDB refused alert_event #%d (set aside in rejected_events, "
                "see alerts show): %s; line: %s",
                r["id"],
                exc,
                r["line"][:300],
            )
            self.stats["events_rejected"] += 1
            rejected.append((int(r["id"]), r["line"], exc.status, str(exc)))
            return
        written.extend(int(r["id"]) for r in rows)

    # --- 5. own figures -----------------------------------------------------------

    def metrics_lines(self, t: float) -> list[str]:
        """The service's counters and the state database's gauges now (and the times
        to acknowledge seen since the previous call, which it forgets)."""
        open_alerts = self.store.open_alerts()
        silences = self.store.active_silences(t)
        unacked = [
            a
            for a in open_alerts
            if a["status"] == "firing"
            and a["severity"] == "critical"
            and a["received_at"] <= t - UNACKED_AFTER_S
            and suppression(self.cfg, a, open_alerts, silences, t) is None
        ]
        gauges = {
            "open_firing": sum(1 for a in open_alerts if a["status"] == "firing"),
            "open_acknowledged": sum(1 for a in open_alerts if a["status"] == "acknowledged"),
            "unacked_critical": len(unacked),
            "pending_notifications": self.store.status_counts("notifications").get("pending", 0),
        }
        channels: dict[str, dict[str, int]] = {}
        for key, n in self.stats.items():
            what, _, ch = key.partition("_")
            if ch in CHANNELS and what in ("sent", "failures", "retried"):
                channels.setdefault(ch, {})["failed" if what == "failures" else what] = n
        ack_s, self._ack_s = self._ack_s, []
        return stats_lines(self.stats, gauges, ack_s, channels, t)

    def write_metrics(self, *, force: bool = False) -> bool:
        """Every ``metrics_interval_s`` (or now, with ``force``): the figures to InfluxDB.
        InfluxDB away or refusing: logged (at most every 5 min) and dropped; the
        counters are cumulative, so the next point carries on."""
        if not self.cfg.write_metrics:
            return False
        t = self.t()
        last = self._metrics_at
        if not force and last is not None and t < last + self.cfg.metrics_interval_s:
            return False
        self._metrics_at = t
        lines = self.metrics_lines(t)
        if self._writer is None:
            self._writer = make_writer(self.core.influx)
        try:
            self._writer.write(lines)
        except WriteError as exc:
            if t - self._metrics_warned > 300:
                self._metrics_warned = t
                log.warning("alerts' own figures not written to InfluxDB (dropped): %s", exc)
            return False
        return True

    # --- the loop ----------------------------------------------------------------

    def tick(self) -> None:
        self.ingest()
        self.plan()
        self.deliver()
        self.write_events()
        self.write_metrics()

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
            lw = LineWorksAcks.from_receivers(self.cfg.receivers, self.cfg.ack.link_ttl_h * 3600)
            self.ack_server = AckServer(
                self.store,
                self.key,
                self.cfg.ack.listen,
                self.cfg.ack.port,
                self.t,
                lineworks=lw if lw.secrets else None,
            ).start()
            log.info(
                "ack links served on http://%s:%d/ack", self.cfg.ack.listen, self.ack_server.port
            )
            if lw.secrets:
                log.info(
                    "LINE WORKS callback on http://%s:%d%s for bot(s) %s",
                    self.cfg.ack.listen,
                    self.ack_server.port,
                    CALLBACK_PATH,
                    ", ".join(sorted(lw.secrets)),
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
            try:
                self.write_metrics(force=True)  # the last figures: what happened since
            except (sqlite3.Error, OSError):
                log.exception("alerts' last figures not written")
            if self._writer is not None:
                self._writer.close()
            log.info("alerts service stopped: %s", dict(self.stats))
            self.store.close()
