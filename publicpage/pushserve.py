"""The subscription endpoint of ``public serve`` (docs/public.md#web-push).

``GET /push/key`` gives the VAPID public key the browser subscribes with;
``POST /push/subscribe`` stores ``{endpoint, keys, segments}``;
``POST /push/unsubscribe`` forgets ``{endpoint}``. Beside core.httpserve's limits
(a body of at most ``max_body_bytes``, deadlines, connection limit):

- a token bucket of ``subscribe_per_min`` POSTs a minute for the whole server (429
  with Retry-After when empty): the store's writes are bounded whoever asks;
- at most ``max_subscriptions`` stored (503 when full), ``max_segments`` each;
- answers are a few bytes and never echo the request, so a request cannot be turned
  into a larger answer (no amplification); only an allowed push service's URL is
  accepted as an endpoint, so the sender cannot be aimed at another host.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import orjson

from core.httpserve import Request, Response, simple
from publicpage.config import PushConfig
from publicpage.push import (
    PushStore,
    SubscriptionError,
    parse_endpoint,
    parse_subscription,
    season_end_ms,
)

log = logging.getLogger(__name__)

__all__ = ["PushEndpoint", "TokenBucket"]

OK = b'{"ok":true}'


class TokenBucket:
    """``rate_per_min`` tokens a minute, at most ``rate_per_min`` held."""

    def __init__(self, rate_per_min: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate_s = rate_per_min / 60.0
        self.cap = float(rate_per_min)
        self.tokens = self.cap
        self.clock = clock
        self.at = clock()

    def take(self) -> float:
        """0.0 if a token was taken, else the seconds until there is one."""
        now = self.clock()
        self.tokens = min(self.cap, self.tokens + (now - self.at) * self.rate_s)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate_s


def _json(status: int, body: bytes) -> Response:
    return Response(
        status, body, [("Content-Type", "application/json"), ("Cache-Control", "no-store")]
    )


def _error(status: int, why: str) -> Response:
    return _json(status, orjson.dumps({"error": why}))


class PushEndpoint:
    """Handles ``/push/*`` on the loop thread (a SQLite write of a few rows each)."""

    def __init__(
        self,
        pcfg: PushConfig,
        store: PushStore,
        public_key: str,
        known_segments: Callable[[], set[str] | None] = lambda: None,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self.pcfg = pcfg
        self.store = store
        self.key = public_key.encode()
        self.known_segments = known_segments
        self.clock_ms = clock_ms
        self.bucket = TokenBucket(pcfg.subscribe_per_min)

    def handle(self, req: Request) -> Response:
        refused = self._refuse(req)
        if refused is not None:
            return refused
        if req.path == "/push/key":
            return Response(
                200, self.key, [("Content-Type", "text/plain"), ("Cache-Control", "max-age=3600")]
            )
        try:
            if req.path == "/push/unsubscribe":
                return self._unsubscribe(req.body)
            return self._subscribe(req.body)
        except SubscriptionError as exc:
            return _error(400, str(exc))

    def _refuse(self, req: Request) -> Response | None:
        """The answer to a request that is not served, or None."""
        if req.path == "/push/key":
            return None if req.method in ("GET", "HEAD") else simple(405)
        if req.path not in ("/push/subscribe", "/push/unsubscribe"):
            return simple(404)
        if req.method != "POST":
            resp = simple(405)
            resp.headers.append(("Allow", "POST"))
            return resp
        if req.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return _error(415, "content-type: must be application/json")
        wait_s = self.bucket.take()
        if wait_s:
            resp = _error(429, "too many requests")
            resp.headers.append(("Retry-After", str(max(1, round(wait_s)))))
            return resp
        return None

    def _subscribe(self, body: bytes) -> Response:
        sub = parse_subscription(body, self.pcfg, self.known_segments())
        now = self.clock_ms()
        result = self.store.subscribe(
            sub, now, season_end_ms(now, self.pcfg.season_end), self.pcfg.max_subscriptions
        )
        if result == "full":
            log.warning("push: %d subscriptions, refusing more", self.pcfg.max_subscriptions)
            resp = _error(503, "subscriptions full")
            resp.headers.append(("Retry-After", "3600"))
            return resp
        return _json(201 if result == "created" else 200, OK)

    def _unsubscribe(self, body: bytes) -> Response:
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise SubscriptionError("body: not JSON") from None
        if not isinstance(doc, dict):
            raise SubscriptionError("body: must be a JSON object")
        endpoint = parse_endpoint(doc.get("endpoint"), self.pcfg.services)
        self.store.unsubscribe(endpoint)
        return _json(200, OK)  # the same whether it was stored: no oracle
