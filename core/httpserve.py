"""A small HTTP/1.1 server on one asyncio event loop, built to stay up against clients
that do not play along (docs/public.md#hostile-clients).

Used by ``public serve`` (the residents' page) and the alerts acknowledgement links.
A handler is a plain function ``Request -> Response`` called on the loop thread; it
must not block for long (a memory cache, a SQLite query). What the server enforces,
whatever the handler does:

- **Backpressure.** Responses go out through the transport; while its write buffer is
  above ``write_high`` the connection neither reads nor answers more requests, and a
  large body is handed over in chunks, so memory per connection stays around the
  high-water mark however many requests a client pipelines without reading.
- **Pipelining cap.** A client with more than ``max_pipeline`` requests sent ahead of
  their answers, or one not taking its answers that still has more than a head's
  worth of bytes waiting, is disconnected.
- **Deadlines.** A request's head and body must arrive within ``request_timeout_s`` of
  its first byte (slowloris: trickling bytes does not extend it; answered with 408); a
  keep-alive connection may sit idle ``idle_timeout_s``; a client that takes nothing
  of a pending response for ``send_timeout_s`` is disconnected. Checked once a second.
- **Connection limit.** At ``max_connections`` (default: the open-file limit minus a
  reserve) a new connection first displaces the connection that has made no progress
  for longest, if that is more than ``evict_after_s`` (an idle keep-alive, a trickling
  head, a non-reader); otherwise it gets ``503`` with ``Retry-After`` and is closed
  without its request being read.
- **Framing.** Request line, headers and target are checked (NUL, a path segment over
  255 bytes, bad percent-encoding or UTF-8 → 400); ``Content-Length`` must be digits
  and at most ``max_body_bytes`` (else 400/413); ``Transfer-Encoding`` is refused
  (501). Whenever a request's body is not read, the connection is closed after the
  answer, so a body is never parsed as the next request.
- **Quiet failure.** Accept errors (EMFILE when out of file descriptors) and handler
  exceptions are logged at most once a minute per kind with a count of the ones
  suppressed, accept errors without a traceback.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import gc
import logging
import re
import resource
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

REASONS = {
    200: "OK",
    201: "Created",
    304: "Not Modified",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Content Too Large",
    414: "URI Too Long",
    415: "Unsupported Media Type",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
}
FD_RESERVE = 64  # descriptors kept free beside the connections (listening socket, files, logs)
REFUSING = 32  # refused connections held open at most (a moment each, so the 503 is read)
REFUSE_LINGER_S = 0.25  # that moment: long enough for the 503 to arrive, short enough
# not to hold descriptors (at the descriptor budget, accepting pauses until one closes)
MAX_SEGMENT = 255  # bytes in one path segment (NAME_MAX): longer is a 400, not an OSError


@dataclass(frozen=True)
class Limits:
    """What one server allows a client; every figure is per connection unless named."""

    max_connections: int | None = None  # None: RLIMIT_NOFILE soft - FD_RESERVE - REFUSING
    max_head_bytes: int = 16 * 1024
    max_body_bytes: int = 0  # 0: requests with a body are refused (413) and closed
    methods: frozenset[str] = frozenset({"GET", "HEAD"})
    request_timeout_s: float = 10.0  # first byte of a request → its last byte
    idle_timeout_s: float = 30.0  # keep-alive: waiting for the next request
    send_timeout_s: float = 30.0  # a pending response not drained at all for this long
    evict_after_s: float = 0.25  # at the limit, displace a connection stalled this long
    max_pipeline: int = 16  # requests received ahead of their answers
    max_requests: int = 1000  # then the connection is closed (Connection: close)
    write_high: int = 32 * 1024  # transport write buffer: stop at this …
    write_low: int = 8 * 1024  # … and go on below this
    chunk: int = 16 * 1024  # a body over ``inline`` goes to the transport in these pieces
    inline: int = 32 * 1024  # a body up to this is written with its head in one piece
    # The kernel's send buffer per connection (SO_SNDBUF; Linux doubles it). Left to
    # autotuning a non-reader made the server copy megabytes into each of its sockets.
    sndbuf: int | None = 64 * 1024
    server_name: str = "yukimizu"

    def connection_limit(self) -> int:
        if self.max_connections is not None:
            return self.max_connections
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            soft = 65536
        return max(8, min(soft, 65536) - FD_RESERVE - REFUSING)

    def fd_budget(self, connections: int) -> int:
        if self.max_connections is not None:
            return connections + REFUSING
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        return max(connections + REFUSING, min(soft, 65536) - FD_RESERVE // 4)


@dataclass(slots=True)
class Request:
    method: str
    target: str  # as sent
    path: str  # percent-decoded, without the query; checked (no NUL, segments ≤ 255 B)
    query: str  # raw, after '?'
    version: str  # HTTP/1.0 | HTTP/1.1
    headers: Mapping[str, str]  # lower-case names
    body: bytes = b""


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    # A complete head built once (status line … Content-Length, ending in CRLF CRLF) for
    # the hot path; the server adds ``Connection: close`` itself when it closes.
    head: bytes | None = None
    send_body: bool = True  # False for HEAD and 304: the head's Content-Length stays


def simple(status: int, text: str = "", ctype: str = "text/plain; charset=utf-8") -> Response:
    body = (text or f"{status} {REASONS.get(status, '')}\n").encode()
    return Response(status, body, [("Content-Type", ctype)])


class RateLimitedLog:
    """At most one record per key per ``every_s``, saying how many were suppressed."""

    def __init__(self, logger: logging.Logger, every_s: float = 60.0) -> None:
        self.logger = logger
        self.every_s = every_s
        self._last: dict[str, float] = {}
        self._suppressed: collections.Counter[str] = collections.Counter()

    def __call__(
        self, key: str, msg: str, *args: object, exc_info: BaseException | None = None
    ) -> bool:
        now = time.monotonic()
        if now - self._last.get(key, -1e18) < self.every_s:
            self._suppressed[key] += 1
            return False
        self._last[key] = now
        n = self._suppressed.pop(key, 0)
        if n:
            msg += f" ({n} more like this suppressed in the last {self.every_s:.0f} s)"
        self.logger.warning(msg, *args, exc_info=exc_info)
        return True


class BadRequest(Exception):
    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status


_PLAIN_PATH = re.compile(r"/[A-Za-z0-9._~/-]{0,255}")  # the common case: nothing to decode
_CTL = re.compile(r"[\x00-\x1f\x7f]")


def check_path(target: str) -> tuple[str, str]:
    """A request target → (decoded path, raw query); BadRequest(400) if unusable."""
    raw, _, query = target.partition("?")
    if _PLAIN_PATH.fullmatch(raw):
        return raw, query
    if not raw.startswith("/"):
        raise BadRequest(400, "target must start with /")
    raw = raw.partition("#")[0]
    data = urllib.parse.unquote_to_bytes(raw)
    if b"\x00" in data:
        raise BadRequest(400, "NUL in path")
    if any(len(seg) > MAX_SEGMENT for seg in data.split(b"/")):
        raise BadRequest(400, f"path segment longer than {MAX_SEGMENT} bytes")
    try:
        path = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(400, "path is not UTF-8") from None
    if _CTL.search(path):
        raise BadRequest(400, "control character in path")
    return path, query


_METHOD = re.compile(r"[A-Z]{1,16}")
_BAD_IN_HEAD = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # in a head with its CRLFs taken out


def _parse_head(head: bytes, limits: Limits) -> Request:
    text = head.decode("latin-1")
    if _BAD_IN_HEAD.search(text.replace("\r\n", "\t")):
        raise BadRequest(400, "control character or bare CR/LF in the head")
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or parts[2] not in ("HTTP/1.1", "HTTP/1.0"):
        raise BadRequest(400, "bad request line")
    method, target, version = parts
    if not _METHOD.fullmatch(method):
        raise BadRequest(400, "bad method")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or " " in name or "\t" in name:
            raise BadRequest(400, "bad header line")
        key = name.lower()
        value = value.strip(" \t")
        old = headers.get(key)
        if old is not None:
            if key == "content-length" and old != value:
                raise BadRequest(400, "conflicting Content-Length")
            value = value if key == "content-length" else old + ", " + value
        headers[key] = value
    path, query = check_path(target)
    return Request(method, target, path, query, version, headers)


class Stats(collections.Counter[str]):
    """Counters of what the server refused or cut off (``stats()`` copies them)."""


class _Conn(asyncio.Protocol):
    """One connection: waiting (idle, or a partial request in ``buf``), sending (a
    response not yet handed to the transport completely, ``out``), lingering (answered
    and closing: our side shut, what the client still sends is read and dropped for a
    moment so it gets the answer rather than a reset)."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.limits = server.limits
        self.loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.out: collections.deque[memoryview] = collections.deque()
        self.close_after = False  # close once ``out`` is handed over
        self.eof = False  # the client has finished sending
        self.lingering = 0  # bytes dropped while lingering; -1 when not lingering
        self.paused = False  # the transport's write buffer is above the high-water mark
        self.reading = True
        self.requests = 0
        self.deadline = 0.0
        self.deadline_kind = "idle"

    # -- asyncio callbacks -----------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.lingering = -1
        now = self.loop.time()
        self._set_deadline("idle", now + self.limits.request_timeout_s)
        if not self.server.admit(self, now):
            self.server.refuse(transport)
            return
        self.transport = transport
        transport.set_write_buffer_limits(high=self.limits.write_high, low=self.limits.write_low)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.forget(self)
        self.transport = None
        self.out.clear()
        self.buf = b""

    def pause_writing(self) -> None:
        self.paused = True
        self._set_deadline("send", self.loop.time() + self.limits.send_timeout_s)

    def resume_writing(self) -> None:
        self.paused = False
        now = self.loop.time()
        self.server.touch(self, now)
        self._flush()
        if self.transport is None or self.paused:
            return
        if self.lingering < 0 and not self.out:
            self._wait_next(now)
            self._run()

    def data_received(self, data: bytes) -> None:
        if self.transport is None:
            return
        if self.lingering >= 0:
            self.lingering += len(data)
            if self.lingering > self.limits.max_head_bytes + self.limits.max_body_bytes:
                self.abort()
            return
        if not self.buf and not self.out and self.deadline_kind == "idle":
            self._set_deadline("request", self.loop.time() + self.limits.request_timeout_s)
        self.buf += data
        if self.buf.count(b"\r\n\r\n") > self.limits.max_pipeline:
            # More requests sent ahead of their answers than any real client does.
            self.server.stats["pipeline_cut"] += 1
            self.abort()
            return
        self._run()

    def eof_received(self) -> bool | None:
        self.eof = True
        if self.lingering >= 0:
            return None  # done: close
        self._run()  # answer what it asked, then close
        return True

    # -- the work --------------------------------------------------------------------
    def _set_deadline(self, kind: str, at: float) -> None:
        self.deadline_kind = kind
        self.deadline = at

    def _wait_next(self, now: float) -> None:
        if self.buf:
            self._set_deadline("request", now + self.limits.request_timeout_s)
        else:
            self._set_deadline("idle", now + self.limits.idle_timeout_s)

    def _run(self) -> None:
        try:
            self._process()
        except Exception as exc:  # noqa: BLE001 (logged with its traceback; costs one connection, not the server)
            self.server.errlog("internal", "http: internal error: %r", exc, exc_info=exc)
            self.abort()

    def _process(self) -> None:
        lim = self.limits
        while self.transport is not None and not self.paused and not self.out:
            if self.close_after or self.transport.is_closing():  # closing: nothing more
                return
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > lim.max_head_bytes:
                    self._reply_and_close(simple(431), count="head_too_large")
                elif self.eof:
                    self.transport.close()
                    self.transport = None
                return
            if end > lim.max_head_bytes:
                self._reply_and_close(simple(431), count="head_too_large")
                return
            try:
                req = _parse_head(self.buf[:end], lim)
            except BadRequest as exc:
                self._reply_and_close(simple(exc.status, f"{exc}\n"), count="bad_request")
                return
            n = self._body_length(req)
            if n < 0:
                return  # refused and closing
            total = end + 4 + n
            if len(self.buf) < total:
                if self.eof:
                    self.abort()
                return  # the body is still coming, within the request deadline
            body = self.buf[end + 4 : total]
            self.buf = self.buf[total:]
            if n:
                req = Request(req.method, req.target, req.path, req.query, req.version,
                              req.headers, body)  # fmt: skip
            self._respond(req)
        self._hold_back()

    def _hold_back(self) -> None:
        lim = self.limits
        if self.transport is not None and (self.paused or self.out):
            # The client is not taking its answers: read no more, and cut off one that
            # keeps sending requests anyway (a pipelining non-reader).
            if self.reading:
                self.transport.pause_reading()
                self.reading = False
            if len(self.buf) > lim.max_head_bytes + lim.max_body_bytes:
                self.server.stats["pipeline_cut"] += 1
                self.abort()
        elif self.transport is not None and not self.reading:
            self.transport.resume_reading()
            self.reading = True

    def _body_length(self, req: Request) -> int:
        """The body's length per Content-Length; -1 after refusing the request."""
        lim = self.limits
        if "transfer-encoding" in req.headers:
            self._reply_and_close(simple(501, "Transfer-Encoding is not supported\n"), "bad_body")
            return -1
        text = req.headers.get("content-length")
        if text is None:
            return 0
        if not text.isascii() or not text.isdigit() or len(text) > 15:
            self._reply_and_close(simple(400, "bad Content-Length\n"), "bad_body")
            return -1
        n = int(text)
        if n > lim.max_body_bytes:
            if req.method not in lim.methods:  # say what is wrong first: the method
                resp = simple(405)
                resp.headers.append(("Allow", ", ".join(sorted(lim.methods))))
                self._reply_and_close(resp, "bad_method")
            else:
                self._reply_and_close(simple(413), "bad_body")
            return -1
        return n

    def _respond(self, req: Request) -> None:
        lim = self.limits
        self.requests += 1
        conn = req.headers.get("connection", "").lower()
        keep = conn == "keep-alive" if req.version == "HTTP/1.0" else conn != "close"
        keep = keep and self.requests < lim.max_requests
        if req.method not in lim.methods:
            resp = simple(405)
            resp.headers.append(("Allow", ", ".join(sorted(lim.methods))))
        else:
            try:
                resp = self.server.handler(req)
            except Exception as exc:  # noqa: BLE001 (logged with its traceback, answered 500)
                self.server.errlog(
                    f"handler:{type(exc).__name__}",
                    "http: handler failed on %s %r: %r",
                    req.method,
                    req.target[:200],
                    exc,
                    exc_info=exc,
                )
                resp = simple(500)
                keep = False
        if req.method == "HEAD":
            resp.send_body = False
        now = self.loop.time()
        self.server.touch(self, now)
        self._send(resp, keep)
        if keep and self.transport is not None and not self.paused:
            self._wait_next(now)

    def _send(self, resp: Response, keep: bool) -> None:
        head = resp.head
        if head is None:
            lines = [f"HTTP/1.1 {resp.status} {REASONS.get(resp.status, 'Unknown')}"]
            lines.append(f"Server: {self.limits.server_name}")
            lines += [f"{k}: {v}" for k, v in resp.headers]
            lines.append(f"Content-Length: {len(resp.body) if resp.status != 304 else 0}")
            head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if not keep:
            head = head[:-2] + b"Connection: close\r\n\r\n"
            self.close_after = True
        body = resp.body if resp.send_body and resp.status != 304 else b""
        assert self.transport is not None
        if len(body) <= self.limits.inline:
            self.transport.write(head + body if body else head)
        else:
            self.transport.write(head)
            self.out.append(memoryview(body))
        self._flush()

    def _flush(self) -> None:
        t = self.transport
        if t is None:
            return
        while self.out and not self.paused:
            if t.is_closing():
                self.transport = None
                self.out.clear()
                return
            mv = self.out[0]
            piece, rest = mv[: self.limits.chunk], mv[self.limits.chunk :]
            if rest:
                self.out[0] = rest
            else:
                self.out.popleft()
            t.write(piece)
        if not self.out and self.close_after and self.lingering < 0:
            self._linger()

    def _linger(self) -> None:
        """Answered and closing: shut our side after the answer, drop what still comes
        for a moment (a body we did not read), then close."""
        t = self.transport
        assert t is not None
        self.buf = b""
        if self.eof:
            t.close()
            self.transport = None
            return
        self.lingering = 0
        t.write_eof()
        self._set_deadline("linger", self.loop.time() + 2.0)
        if not self.reading:
            t.resume_reading()
            self.reading = True

    def _reply_and_close(self, resp: Response, count: str) -> None:
        self.server.stats[count] += 1
        self.buf = b""
        self._send(resp, keep=False)

    def expire(self, now: float) -> None:
        """Called by the sweep when ``deadline`` has passed."""
        t = self.transport
        if t is None:
            return
        kind = self.deadline_kind
        self.server.stats[f"timeout_{kind}"] += 1
        if kind == "request" and not self.out and not self.paused:
            self._reply_and_close(simple(408), count="timeout_answered")
        elif kind == "idle":
            t.close()
            self.transport = None
        else:
            self.abort()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
            self.transport = None


class HttpServer:
    """``handler`` served on ``host:port`` (0: a free port, see ``port``).

    ``serve_forever()`` runs the loop in the calling thread until ``shutdown()`` (from
    another thread); ``start()`` runs it in a daemon thread.
    """

    def __init__(
        self,
        handler: Callable[[Request], Response],
        host: str,
        port: int,
        limits: Limits | None = None,
        *,
        name: str = "http",
    ) -> None:
        self.handler = handler
        self.limits = limits or Limits()
        self.name = name
        self.max_connections = self.limits.connection_limit()
        self.loop = asyncio.new_event_loop()
        self.loop.set_exception_handler(self._on_loop_error)
        self.sock = socket.create_server((host, port), backlog=1024)
        self.port: int = self.sock.getsockname()[1]
        self.conns: collections.OrderedDict[_Conn, float] = collections.OrderedDict()
        self.stats = Stats()
        self.errlog = RateLimitedLog(log)
        self.refusal = (
            b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\nContent-Type: text/plain\r\n"
            b"Content-Length: 20\r\nConnection: close\r\n\r\nserver busy, retry\r\n"
        )
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._refusing = 0  # refused connections waiting to be closed
        self._fds = 0  # accepted sockets not yet closed
        # Accepting pauses at this many open sockets: the open-file limit with a little
        # kept for files and logs, or (a limit set by hand) the limit and the refusals.
        self._fd_budget = self.limits.fd_budget(self.max_connections)
        self._accepting = False
        self._stopping = False

    # -- connection bookkeeping (loop thread) ----------------------------------------
    def admit(self, conn: _Conn, now: float) -> bool:
        if len(self.conns) >= self.max_connections:
            victim, since = next(iter(self.conns.items()))
            if now - since < self.limits.evict_after_s:
                return False
            self.stats["evicted"] += 1
            self.conns.pop(victim)
            victim.abort()
        self.conns[conn] = now
        return True

    def refuse(self, transport: asyncio.Transport) -> None:
        """503 and close. Shut our side first and close a moment later (at most
        ``REFUSING`` at a time), so a client that already sent its request reads
        the 503 rather than a reset."""
        self.stats["refused"] += 1
        transport.write(self.refusal)
        if self._refusing >= REFUSING:
            transport.close()
            return
        self._refusing += 1
        transport.write_eof()

        def done() -> None:
            self._refusing -= 1
            transport.abort()

        self.loop.call_later(REFUSE_LINGER_S, done)

    def touch(self, conn: _Conn, now: float) -> None:
        if conn in self.conns:
            self.conns[conn] = now
            self.conns.move_to_end(conn)

    def forget(self, conn: _Conn) -> None:
        self.conns.pop(conn, None)
        self._fds -= 1
        if not self._accepting and self._fds < self._fd_budget and not self._stopping:
            self._resume_accepting()

    # -- accepting: synchronous, so descriptors are counted before they exist -------------
    def _accept_ready(self) -> None:
        for _ in range(64):
            if self._fds >= self._fd_budget:
                self.stats["accept_paused"] += 1
                self._pause_accepting()  # resumed when a connection closes
                return
            try:
                sock, _addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.stats["accept_error"] += 1
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self.errlog(
                        f"accept:{exc.errno}",
                        "%s: accept failed: %s (%d connections open); retrying in 1 s",
                        self.name,
                        exc.strerror,
                        len(self.conns),
                    )
                    self._pause_accepting()
                    self.loop.call_later(1.0, self._resume_accepting)
                    return
                self.errlog(f"accept:{exc.errno}", "%s: accept failed: %r", self.name, exc)
                continue  # e.g. ECONNABORTED: that client is gone, the next may not be
            self._fds += 1
            self.stats["accepted"] += 1
            sock.setblocking(False)
            if self.limits.sndbuf:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.limits.sndbuf)
            self.loop.create_task(self._connect(sock))

    async def _connect(self, sock: socket.socket) -> None:
        try:
            await self.loop.connect_accepted_socket(lambda: _Conn(self), sock)
        except OSError as exc:  # the client left before its transport existed
            log.debug("%s: connection lost at once: %r", self.name, exc)
            sock.close()
            self._fds -= 1

    def _pause_accepting(self) -> None:
        if self._accepting:
            self.loop.remove_reader(self.sock.fileno())
            self._accepting = False

    def _resume_accepting(self) -> None:
        if not self._accepting and not self._stopping:
            self.loop.add_reader(self.sock.fileno(), self._accept_ready)
            self._accepting = True

    def _sweep(self) -> None:
        now = self.loop.time()
        for conn in [c for c in self.conns if c.deadline < now]:
            conn.expire(now)
        self._sweeper = self.loop.call_later(1.0, self._sweep)

    def _on_loop_error(self, loop: asyncio.AbstractEventLoop, ctx: dict[str, Any]) -> None:
        exc = ctx.get("exception")
        msg = str(ctx.get("message", "event loop error"))
        self.errlog(f"loop:{msg}", "%s: %s: %r", self.name, msg, exc, exc_info=exc)

    # -- running ---------------------------------------------------------------------
    def serve_forever(self) -> None:
        # Everything loaded so far lives as long as the process: out of the collector's
        # way, so a full collection under a churn of connections stays short.
        gc.freeze()
        asyncio.set_event_loop(self.loop)
        self.sock.setblocking(False)
        self._resume_accepting()
        self._sweeper = self.loop.call_later(1.0, self._sweep)
        try:
            self.loop.run_forever()
        finally:
            self._stopping = True
            if self._sweeper is not None:
                self._sweeper.cancel()
            self._pause_accepting()
            for conn in list(self.conns):
                conn.abort()
            self.loop.run_until_complete(asyncio.sleep(0))  # let the aborts finish
            log.info("%s: stopped: %s", self.name, dict(self.stats))
            self._stopped.set()

    def start(self) -> HttpServer:
        self._thread = threading.Thread(target=self.serve_forever, name=self.name, daemon=True)
        self._thread.start()
        return self

    def shutdown(self) -> None:
        """Stop serve_forever (from another thread) and wait for it."""
        with contextlib.suppress(RuntimeError):  # loop already closed
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._stopped.wait(10)
        if self._thread is not None:
            self._thread.join(5)

    def close(self) -> None:
        self.sock.close()
        if not self.loop.is_running() and not self.loop.is_closed():
            self.loop.close()

    def snapshot(self) -> dict[str, int]:
        """Open connections and the counters (for logs and tests)."""
        return {"open": len(self.conns), **self.stats}
