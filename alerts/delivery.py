"""Delivery: attempts, backoff, Retry-After, fallback, and rounds for failed criticals.

A decided notification (a ``notifications`` row, alerts/store.py) is delivered here,
one attempt per due row per tick; nothing sleeps. The schedule, all of it recorded in
the row so a restart resumes it (docs/alerts.md#channels):

- a channel that fails with a retryable error (connection refused, timeout, 429, 5xx)
  is tried again after ``retry.backoff_s`` doubling per attempt, never sooner than a
  ``Retry-After`` and never later than ``retry.max_backoff_s``, up to
  ``retry.attempts`` times;
- then, or at once on a permanent error (4xx, login refused, a LINE WORKS token
  refused twice), the receiver's next channel takes over;
- a notification that failed on every channel is ``failed``. If it names a critical
  alert it starts over from the first channel after each wait of
  ``retry.critical_rounds_min`` (2, 5, 10, 20, 30 minutes by default) while that
  alert is still firing and unacknowledged (docs/alerts.md#critical-retries).

What a failure or a success means for the lifecycle (the ``system.delivery_failed``
alert) is the service's business: it is told through ``on_failed``/``on_delivered``.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from alerts.channels import Context, DeliveryError, Outgoing, send
from alerts.config import AlertsConfig, Receiver, RetryConfig
from alerts.lineworks import TokenCache, send_lineworks
from alerts.store import Store

log = logging.getLogger(__name__)

# Delivery passes per tick: notifications made while delivering (a delivery_failed
# alert's) go out in the same tick, and the loop stays bounded.
PASSES = 3


def backoff_s(retry: RetryConfig, attempts: int, retry_after_s: float | None) -> float:
    """The wait before attempt ``attempts + 1`` on the same channel."""
    wait: float = retry.backoff_s * 2 ** (attempts - 1)
    if retry_after_s is not None:
        wait = max(wait, retry_after_s)  # Retry-After: never sooner
    return min(wait, retry.max_backoff_s)


def names_critical(n: dict[str, Any]) -> bool:
    """The notification calls someone to a critical alert (not a resolved notice)."""
    body = json.loads(n["body"])
    return any(a["severity"] == "critical" for a in body.get("alerts", []))


def next_round_at(retry: RetryConfig, rounds_failed: int, t: float) -> float | None:
    """When round ``rounds_failed + 1`` starts, after ``rounds_failed`` rounds failed."""
    schedule = retry.critical_rounds_min
    if rounds_failed > len(schedule):
        return None
    return t + schedule[rounds_failed - 1] * 60


def outgoing(n: dict[str, Any]) -> Outgoing:
    body = json.loads(n["body"])
    named = body["alerts"] + body["resolved"] + body.get("acknowledged", [])
    subjects = sorted({(a["subject_kind"], a["subject"]) for a in named})
    return Outgoing(
        id=n["id"],
        receiver=n["receiver"],
        kind=n["kind"],
        title=n["title"],
        text=body["text"],
        body=body,
        retry_key=n["retry_key"],
        subjects=subjects,
    )


def _none_failed(_n: dict[str, Any], _rounds: int, _retry_at: float | None, _t: float) -> None:
    return None


def _none_delivered(_n: dict[str, Any], _t: float) -> None:
    return None


@dataclass
class Delivery:
    cfg: AlertsConfig
    store: Store
    ctx: Context
    stats: Counter[str]
    # (notification row, rounds failed so far, next round or None, now): it failed
    # on every channel
    on_failed: Callable[[dict[str, Any], int, float | None, float], None] = _none_failed
    # (notification row, now): a channel accepted it
    on_delivered: Callable[[dict[str, Any], float], None] = _none_delivered
    # LINE WORKS access tokens, kept between notifications until shortly before expiry
    lineworks_tokens: TokenCache = field(default_factory=TokenCache)

    def send(self, ch: str, rec: Receiver, msg: Outgoing, t: float) -> str:
        if ch == "lineworks" and rec.lineworks:
            return send_lineworks(rec.lineworks, msg, self.lineworks_tokens, t)
        return send(ch, rec, msg, self.ctx)

    def run(self, t: float) -> int:
        """Start the rounds that are due, then deliver what is due; how many were sent."""
        self.start_rounds(t)
        done = 0
        seen: set[int] = set()
        for _ in range(PASSES):
            due = [n for n in self.store.due_notifications(t) if n["id"] not in seen]
            if not due:
                break
            for n in due:
                seen.add(n["id"])
                done += self.deliver_one(n, t)
        return done

    def start_rounds(self, t: float) -> None:
        for n in self.store.rounds_due(t):
            ids = json.loads(n["alert_ids"])
            if not self.store.alerts_still_firing(ids):
                self.store.end_rounds(n["id"])
                log.info(
                    "notification #%d: its alerts are acknowledged or resolved; no more rounds",
                    n["id"],
                )
                continue
            log.warning(
                "notification #%d to %s: round %d, from the first channel again",
                n["id"],
                n["receiver"],
                n["rounds"] + 1,
            )
            self.stats["critical_rounds"] += 1
            self.store.start_round(n["id"], t)

    def deliver_one(self, n: dict[str, Any], t: float) -> int:
        rec = self.cfg.receivers.get(n["receiver"])
        msg = outgoing(n)
        channels = rec.channels() if rec else []
        idx, attempts = int(n["channel_idx"]), int(n["attempts"])
        retry = self.cfg.retry
        while idx < len(channels):
            ch = channels[idx]
            assert rec is not None
            try:
                detail = self.send(ch, rec, msg, t)
            except DeliveryError as exc:
                attempts += 1
                self.stats[f"failures_{ch}"] += 1
                self.store.record_attempt(n["id"], t, ch, False, str(exc))
                log.warning(
                    "notification #%d to %s via %s failed (attempt %d): %s",
                    n["id"],
                    n["receiver"],
                    ch,
                    attempts,
                    exc,
                )
                if exc.retryable and attempts < retry.attempts:
                    self.stats[f"retried_{ch}"] += 1
                    wait = backoff_s(retry, attempts, exc.retry_after_s)
                    self.store.retry_later(n["id"], idx, attempts, t + wait, str(exc))
                    return 0
                idx, attempts = idx + 1, 0
                if idx < len(channels):
                    log.warning("notification #%d: falling back to %s", n["id"], channels[idx])
                    self.store.fall_back(n["id"], idx, str(exc))
                continue
            self.store.record_attempt(n["id"], t, ch, True, detail)
            self.store.mark_sent(n["id"], ch, t)
            self.stats["notifications_sent"] += 1
            self.stats[f"sent_{ch}"] += 1
            self.on_delivered(n, t)
            return 1
        self._failed(n, channels, t)
        return 0

    def _failed(self, n: dict[str, Any], channels: Sequence[str], t: float) -> None:
        retry_at = (
            next_round_at(self.cfg.retry, int(n["rounds"]) + 1, t) if names_critical(n) else None
        )
        rounds = self.store.mark_failed(
            n["id"], f"no channel left for receiver {n['receiver']!r}", retry_at
        )
        log.error(
            "notification #%d to %s FAILED on every channel (%s); see alerts show %s%s",
            n["id"],
            n["receiver"],
            ", ".join(channels) or "none",
            n["id"],
            f"; next round in {(retry_at - t) / 60:.0f} min" if retry_at is not None else "",
        )
        self.stats["notifications_failed"] += 1
        self.on_failed(n, rounds, retry_at, t)
