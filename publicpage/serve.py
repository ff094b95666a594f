"""``yukimizu public serve DIR``: a small static server for the built site.

For local use and small towns without nginx; it is also what benchmarks/public.py
measures. Files are served from memory (re-read when their inode, size or mtime
changes: the builder replaces them atomically, so a new inode means a new file),
HTTP/1.1 keep-alive, ``ETag``/``If-None-Match`` for the page's one-minute revalidation.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import mimetypes
import os
import posixpath
import socket
import stat
import threading
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".geojson": "application/geo+json",
    ".png": "image/png",
    ".md": "text/plain; charset=utf-8",
}


def cache_control(rel: str) -> str:
    """Data changes every minute; the page a little slower; Leaflet never (versioned)."""
    if rel.startswith("data/"):
        return "public, max-age=30"
    if rel.startswith("vendor/"):
        return "public, max-age=86400"
    return "public, max-age=60"


@dataclass(frozen=True)
class _Entry:
    key: tuple[int, int, int]  # inode, size, mtime_ns
    body: bytes
    etag: str
    ctype: str
    cache: str

    @functools.cached_property
    def ok_head(self) -> bytes:
        """The 200 response's head for a keep-alive connection, built once per file."""
        return (
            "HTTP/1.1 200 OK\r\nServer: yukimizu-public\r\n"
            f"ETag: {self.etag}\r\nCache-Control: {self.cache}\r\n"
            f"Content-Type: {self.ctype}\r\nX-Content-Type-Options: nosniff\r\n"
            f"Content-Length: {len(self.body)}\r\n\r\n"
        ).encode("latin-1")


class FileCache:
    """Bytes of the files under ``root``, checked against a stat on every request."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    def resolve(self, url_path: str) -> str | None:
        """A request path → a relative file path inside root, or None (outside, bad)."""
        path = urllib.parse.unquote(url_path.split("?", 1)[0].split("#", 1)[0])
        norm = posixpath.normpath("/" + path).lstrip("/")
        if norm in ("", "."):
            norm = "index.html"
        if norm.startswith("..") or any(p.startswith(".") for p in norm.split("/")):
            return None  # no parent dirs, no dot files (the builder's temp files)
        return norm

    def get(self, rel: str) -> _Entry | None:
        full = self.root / rel
        try:
            st = os.stat(full)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        key = (st.st_ino, st.st_size, st.st_mtime_ns)
        entry = self._entries.get(rel)
        if entry is not None and entry.key == key:
            return entry
        body = full.read_bytes()
        ctype = (
            TYPES.get(full.suffix)
            or mimetypes.guess_type(full.name)[0]
            or "application/octet-stream"
        )
        entry = _Entry(
            key,
            body,
            f'"{st.st_ino:x}-{st.st_mtime_ns:x}-{len(body):x}"',
            ctype,
            cache_control(rel),
        )
        with self._lock:
            self._entries[rel] = entry
        return entry


_REASONS = {
    200: "OK",
    304: "Not Modified",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
}
MAX_HEAD = 16 * 1024
IDLE_TIMEOUT_S = 30.0  # keep-alive connections idle longer are closed (slow clients)


class _Http(asyncio.Protocol):
    """One connection: HTTP/1.0 and 1.1, GET and HEAD, keep-alive, pipelining."""

    def __init__(self, files: FileCache, loop: asyncio.AbstractEventLoop) -> None:
        self.files = files
        self.loop = loop
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.idle: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.idle is not None:
            self.idle.cancel()
        self.transport = None

    def _arm(self) -> None:
        if self.idle is not None:
            self.idle.cancel()
        self.idle = self.loop.call_later(IDLE_TIMEOUT_S, self._timeout)

    def _timeout(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self._arm()
        while self.transport is not None:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > MAX_HEAD:
                    self._send(431, b"", {}, keep=False, body=True)
                return
            head, self.buf = self.buf[:end], self.buf[end + 4 :]
            self._handle(head)

    def _handle(self, head: bytes) -> None:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            self._send(400, b"bad request\n", {}, keep=False, body=True)
            return
        method, target, version = parts
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        conn = headers.get("connection", "").lower()
        keep = conn == "keep-alive" if version == "HTTP/1.0" else conn != "close"
        if method not in ("GET", "HEAD"):
            self._send(405, b"method not allowed\n", {"Allow": "GET, HEAD"}, keep=keep, body=True)
            return
        rel = self.files.resolve(target)
        entry = None if rel is None else self.files.get(rel)
        if entry is None:
            self._send(404, b"not found\n", {}, keep=keep, body=method == "GET")
            return
        common = {"ETag": entry.etag, "Cache-Control": entry.cache}
        if headers.get("if-none-match") == entry.etag:
            self._send(304, b"", common, keep=keep, body=False)
            return
        if keep:
            assert self.transport is not None
            self.transport.write(entry.ok_head + entry.body if method == "GET" else entry.ok_head)
            return
        common |= {"Content-Type": entry.ctype, "X-Content-Type-Options": "nosniff"}
        self._send(200, entry.body, common, keep=keep, body=method == "GET")

    def _send(
        self, status: int, content: bytes, headers: dict[str, str], *, keep: bool, body: bool
    ) -> None:
        assert self.transport is not None
        head = [f"HTTP/1.1 {status} {_REASONS[status]}", "Server: yukimizu-public"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        head.append(f"Content-Length: {len(content) if status != 304 else 0}")
        if not keep:
            head.append("Connection: close")
        data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        self.transport.write(data + content if body and status != 304 else data)
        if not keep:
            self.transport.close()


class Server:
    """The static server on an asyncio loop in the calling thread.

    An event loop rather than a thread per connection: with 500 visitors on keep-alive
    connections, 500 threads contending for the GIL answered at 2,200 req/s with p99
    ~230 ms in benchmarks/public.py; one loop serves far more (docs/public.md#load).
    ``serve_forever``/``shutdown``/``server_close`` mirror socketserver's, so the
    server runs in a thread in tests.
    """

    def __init__(self, root: Path, host: str, port: int) -> None:
        self.files = FileCache(root)
        self.loop = asyncio.new_event_loop()
        self.sock = socket.create_server((host, port), backlog=1024, reuse_port=False)
        self.server_port: int = self.sock.getsockname()[1]
        self._stopped = threading.Event()

    def serve_forever(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(
            self.loop.create_server(
                lambda: _Http(self.files, self.loop), sock=self.sock, backlog=1024
            )
        )
        try:
            self.loop.run_forever()
        finally:
            server.close()
            self.loop.run_until_complete(server.wait_closed())
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop serve_forever (from another thread) and wait for it."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._stopped.wait(10)

    def server_close(self) -> None:
        self.sock.close()
        if not self.loop.is_running():
            self.loop.close()


def make_server(root: Path, host: str, port: int) -> Server:
    return Server(root, host, port)
