"""Web Push subscriptions for "tell me when my road is done" (docs/public.md#web-push).

A subscription is what the browser's ``PushSubscription.toJSON()`` gives (the push
service's endpoint URL and the two keys of RFC 8291) plus the segment ids the resident
chose; nothing else is stored — no address, no user agent, no time of day beyond the
expiry. :func:`parse_subscription` checks a request body field by field (the error
names the field); :class:`PushStore` keeps them in SQLite (core.sqlite) until the end
of the season. The sender is publicpage.pushsend.
"""

from __future__ import annotations

import base64
import binascii
import re
import sqlite3
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from core.sqlite import Schema, open_db
from publicpage.config import PushConfig
from publicpage.snapshot import JST

__all__ = [
    "Due",
    "PushStore",
    "Subscription",
    "SubscriptionError",
    "b64url_decode",
    "parse_endpoint",
    "parse_subscription",
    "season_end_ms",
]

MAX_ENDPOINT = 1024  # FCM's are ~190 characters, Mozilla's ~250, Apple's ~200
SEGMENT_ID = re.compile(r"[A-Za-z0-9_.-]{1,32}")


class SubscriptionError(ValueError):
    """A subscription request that cannot be used; the message names the field."""


@dataclass(frozen=True, slots=True)
class Subscription:
    endpoint: str
    p256dh: str  # base64url, the browser's P-256 public key (65 bytes, uncompressed)
    auth: str  # base64url, the 16-byte authentication secret
    segments: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Due:
    """One subscription with segments plowed since its last notice."""

    endpoint: str
    p256dh: str
    auth: str
    plowed: tuple[tuple[str, int], ...]  # (segment, plowed at ms)


def b64url_decode(text: str) -> bytes:
    """base64url with or without padding (browsers send it without)."""
    if not re.fullmatch(r"[A-Za-z0-9_-]*={0,2}", text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def parse_endpoint(endpoint: Any, services: Sequence[str]) -> str:
    """The push endpoint URL, if it belongs to one of the allowed push services.

    The sender POSTs to this URL, so an arbitrary one would let anyone make the town's
    server send requests to any host (SSRF): only the listed push services' hosts
    (or a subdomain of one), over https; plain http only to a listed loopback host
    (a local push service, the tests' receiver).
    """
    if not isinstance(endpoint, str) or not endpoint:
        raise SubscriptionError("endpoint: must be a URL")
    if len(endpoint) > MAX_ENDPOINT:
        raise SubscriptionError(f"endpoint: longer than {MAX_ENDPOINT} characters")
    try:
        url = urllib.parse.urlsplit(endpoint)
        host = (url.hostname or "").lower()
        _ = url.port
    except ValueError:
        raise SubscriptionError("endpoint: not a URL") from None
    if url.username or url.password or not host:
        raise SubscriptionError("endpoint: not a push service URL")
    listed = any(host == s or host.endswith("." + s) for s in services)
    loopback = host in ("127.0.0.1", "localhost", "::1")
    if not listed or not (url.scheme == "https" or (url.scheme == "http" and loopback)):
        raise SubscriptionError("endpoint: not one of the allowed push services")
    return endpoint


def parse_subscription(
    body: bytes, pcfg: PushConfig, known_segments: Iterable[str] | None = None
) -> Subscription:
    """A subscription from a request body, or SubscriptionError naming the field."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise SubscriptionError("body: not JSON") from None
    if not isinstance(doc, dict):
        raise SubscriptionError("body: must be a JSON object")
    endpoint = parse_endpoint(doc.get("endpoint"), pcfg.services)
    keys = doc.get("keys")
    if not isinstance(keys, dict):
        raise SubscriptionError("keys: must be an object with p256dh and auth")
    p256dh, auth = keys.get("p256dh"), keys.get("auth")
    for name, value, size in (("p256dh", p256dh, 65), ("auth", auth, 16)):
        try:
            ok = isinstance(value, str) and len(value) < 200 and len(b64url_decode(value)) == size
        except (ValueError, binascii.Error):
            ok = False
        if not ok:
            raise SubscriptionError(f"keys.{name}: must be {size} bytes in base64url")
    assert isinstance(p256dh, str) and isinstance(auth, str)
    if b64url_decode(p256dh)[0] != 4:
        raise SubscriptionError("keys.p256dh: must be an uncompressed P-256 point")
    segs = doc.get("segments")
    if not isinstance(segs, list) or not 1 <= len(segs) <= pcfg.max_segments:
        raise SubscriptionError(f"segments: must be a list of 1 to {pcfg.max_segments} ids")
    if not all(isinstance(s, str) and SEGMENT_ID.fullmatch(s) for s in segs):
        raise SubscriptionError("segments: not a segment id")
    if known_segments is not None:
        known = set(known_segments)
        if any(s not in known for s in segs):
            raise SubscriptionError("segments: unknown segment id")
    return Subscription(endpoint, p256dh, auth, tuple(dict.fromkeys(segs)))


def season_end_ms(now_ms: int, month_day: str) -> int:
    """The end (24:00 JST) of the next ``MM-DD`` at or after now: when subscriptions
    made now expire."""
    month, day = (int(x) for x in month_day.split("-"))
    now = datetime.fromtimestamp(now_ms / 1000, JST)
    for year in (now.year, now.year + 1):
        end = datetime(year, month, day, tzinfo=JST) + timedelta(days=1)
        if end > now:
            return int(end.timestamp() * 1000)
    raise AssertionError("unreachable")  # pragma: no cover


SCHEMA = Schema(
    [
        """CREATE TABLE IF NOT EXISTS push_subscription (
            endpoint TEXT PRIMARY KEY,
            p256dh TEXT NOT NULL,
            auth TEXT NOT NULL,
            expires_ms INTEGER NOT NULL,
            failures INTEGER NOT NULL DEFAULT 0)""",
        # notified_ms: plowings up to this time are not news (the time of subscribing,
        # then the plowing last notified)
        """CREATE TABLE IF NOT EXISTS push_segment (
            endpoint TEXT NOT NULL,
            segment TEXT NOT NULL,
            notified_ms INTEGER NOT NULL,
            PRIMARY KEY (endpoint, segment))""",
        """CREATE TABLE IF NOT EXISTS push_host (
            host TEXT PRIMARY KEY,
            blocked_until_ms INTEGER NOT NULL)""",
    ]
)


class PushStore:
    """The subscriptions, in one SQLite file shared by ``public serve`` (writes them)
    and ``public run`` (sends and drops them)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db: sqlite3.Connection = open_db(path, SCHEMA, timeout_s=5.0)

    def close(self) -> None:
        self.db.close()

    def count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM push_subscription").fetchone()[0])

    def subscribe(self, sub: Subscription, now_ms: int, expires_ms: int, limit: int) -> str:
        """Add or update; ``"created"``, ``"updated"`` or ``"full"`` (at ``limit``)."""
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self._purge(now_ms)
            old = self.db.execute(
                "SELECT 1 FROM push_subscription WHERE endpoint = ?", (sub.endpoint,)
            ).fetchone()
            if old is None and self.count() >= limit:
                return "full"
            self.db.execute(
                "INSERT INTO push_subscription (endpoint, p256dh, auth, expires_ms, failures)"
                " VALUES (?, ?, ?, ?, 0) ON CONFLICT (endpoint) DO UPDATE SET"
                " p256dh = excluded.p256dh, auth = excluded.auth,"
                " expires_ms = excluded.expires_ms, failures = 0",
                (sub.endpoint, sub.p256dh, sub.auth, expires_ms),
            )
            marks = ",".join("?" * len(sub.segments))
            self.db.execute(
                f"DELETE FROM push_segment WHERE endpoint = ? AND segment NOT IN ({marks})",
                (sub.endpoint, *sub.segments),
            )
            self.db.executemany(
                "INSERT OR IGNORE INTO push_segment (endpoint, segment, notified_ms)"
                " VALUES (?, ?, ?)",
                [(sub.endpoint, s, now_ms) for s in sub.segments],
            )
            return "updated" if old else "created"

    def unsubscribe(self, endpoint: str) -> bool:
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            return self._drop(endpoint)

    def _drop(self, endpoint: str) -> bool:
        self.db.execute("DELETE FROM push_segment WHERE endpoint = ?", (endpoint,))
        cur = self.db.execute("DELETE FROM push_subscription WHERE endpoint = ?", (endpoint,))
        return cur.rowcount > 0

    def drop(self, endpoint: str) -> None:
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self._drop(endpoint)

    def _purge(self, now_ms: int) -> int:
        gone = [
            str(r[0])
            for r in self.db.execute(
                "SELECT endpoint FROM push_subscription WHERE expires_ms <= ?", (now_ms,)
            )
        ]
        for endpoint in gone:
            self._drop(endpoint)
        return len(gone)

    def purge_expired(self, now_ms: int) -> int:
        """Forget subscriptions past the end of their season; how many."""
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            return self._purge(now_ms)

    def segments(self, endpoint: str) -> dict[str, int]:
        return {
            str(s): int(n)
            for s, n in self.db.execute(
                "SELECT segment, notified_ms FROM push_segment WHERE endpoint = ?", (endpoint,)
            )
        }

    def due(self, plowed_ms: dict[str, int], limit: int) -> list[Due]:
        """Subscriptions with a segment plowed after its last notice (at most ``limit``)."""
        out: dict[str, list[tuple[str, int]]] = {}
        keys: dict[str, tuple[str, str]] = {}
        rows = self.db.execute(
            "SELECT s.endpoint, s.p256dh, s.auth, g.segment, g.notified_ms"
            " FROM push_segment g JOIN push_subscription s USING (endpoint)"
            " ORDER BY s.endpoint, g.segment"
        )
        for endpoint, p256dh, auth, seg, notified in rows:
            at = plowed_ms.get(seg)
            if at is None or at <= notified:
                continue
            if endpoint not in out and len(out) >= limit:
                break
            out.setdefault(endpoint, []).append((seg, at))
            keys[endpoint] = (p256dh, auth)
        return [Due(e, *keys[e], tuple(p)) for e, p in out.items()]

    def notified(self, due: Due) -> None:
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.executemany(
                "UPDATE push_segment SET notified_ms = max(notified_ms, ?)"
                " WHERE endpoint = ? AND segment = ?",
                [(at, due.endpoint, seg) for seg, at in due.plowed],
            )
            self.db.execute(
                "UPDATE push_subscription SET failures = 0 WHERE endpoint = ?", (due.endpoint,)
            )

    def failed(self, endpoint: str, drop_after: int) -> bool:
        """Count a failed send; drop the subscription at ``drop_after`` in a row (True)."""
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute(
                "UPDATE push_subscription SET failures = failures + 1 WHERE endpoint = ?",
                (endpoint,),
            )
            row = self.db.execute(
                "SELECT failures FROM push_subscription WHERE endpoint = ?", (endpoint,)
            ).fetchone()
            if row is not None and int(row[0]) >= drop_after:
                return self._drop(endpoint)
            return False

    def blocked_until(self, host: str) -> int:
        row = self.db.execute(
            "SELECT blocked_until_ms FROM push_host WHERE host = ?", (host,)
        ).fetchone()
        return int(row[0]) if row else 0

    def block(self, host: str, until_ms: int) -> None:
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute(
                "INSERT INTO push_host (host, blocked_until_ms) VALUES (?, ?)"
                " ON CONFLICT (host) DO UPDATE SET blocked_until_ms = excluded.blocked_until_ms",
                (host, until_ms),
            )
