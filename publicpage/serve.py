"""``yukimizu public serve DIR``: a small static server for the built site.

For local use and small towns without nginx; it is also what benchmarks/public.py
measures. Files are served from memory (re-read when their inode, size or mtime
changes: the builder replaces them atomically, so a new inode means a new file),
HTTP/1.1 keep-alive, ``ETag``/``If-None-Match`` for the page's one-minute revalidation.
The HTTP side, and what it does against hostile clients, is core.httpserve. With
``[public.push]`` configured it also takes Web Push subscriptions (publicpage.pushserve).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import mimetypes
import os
import posixpath
import stat
import threading
from dataclasses import dataclass
from pathlib import Path

import orjson

from core.httpserve import HttpServer, Limits, Request, Response, simple
from publicpage.pushserve import PushEndpoint

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

    def resolve(self, path: str) -> str | None:
        """A decoded request path → a relative file path inside root, or None (outside,
        a dot file)."""
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


class Server:
    """The static server (core.httpserve) on an event loop in the calling thread.

    An event loop rather than a thread per connection: with 500 visitors on keep-alive
    connections, 500 threads contending for the GIL answered at 2,200 req/s with p99
    ~230 ms in benchmarks/public.py; one loop serves far more (docs/public.md#load).
    ``serve_forever``/``shutdown``/``server_close`` mirror socketserver's, so the
    server runs in a thread in tests. The limits against hostile clients are
    core.httpserve's (docs/public.md#hostile-clients).
    """

    def __init__(
        self,
        root: Path,
        host: str,
        port: int,
        limits: Limits | None = None,
        push: PushEndpoint | None = None,
    ) -> None:
        self.files = FileCache(root)
        self.push = push
        self._known: tuple[str, set[str] | None] = ("", None)
        if push is not None:
            push.known_segments = self.known_segments
            # POST (subscriptions only) with a small body; everything else as before.
            limits = dataclasses.replace(
                limits or Limits(server_name="yukimizu-public"),
                methods=frozenset({"GET", "HEAD", "POST"}),
                max_body_bytes=push.pcfg.max_body_bytes,
            )
        self.http = HttpServer(
            self.handle, host, port, limits or Limits(server_name="yukimizu-public"), name="public"
        )
        self.server_port: int = self.http.port

    def known_segments(self) -> set[str] | None:
        """The segment ids of the built site (data/status.json), None before a build."""
        entry = self.files.get("data/status.json")
        if entry is None:
            return None
        if self._known[0] != entry.etag:
            doc = orjson.loads(entry.body)
            self._known = (entry.etag, {str(s["id"]) for s in doc.get("segments", [])})
        return self._known[1]

    def handle(self, req: Request) -> Response:
        if self.push is not None and req.path.startswith("/push/"):
            return self.push.handle(req)
        if req.method == "POST":
            resp = simple(405)
            resp.headers.append(("Allow", "GET, HEAD"))
            return resp
        rel = self.files.resolve(req.path)
        try:
            entry = None if rel is None else self.files.get(rel)
        except OSError as exc:  # e.g. a name too long for the file system
            log.debug("public: %r: %s", req.path[:200], exc)
            entry = None
        if entry is None:
            return simple(404, "not found\n")
        if req.headers.get("if-none-match") == entry.etag:
            return Response(304, headers=[("ETag", entry.etag), ("Cache-Control", entry.cache)])
        return Response(200, entry.body, head=entry.ok_head)

    def serve_forever(self) -> None:
        self.http.serve_forever()

    def shutdown(self) -> None:
        """Stop serve_forever (from another thread) and wait for it."""
        self.http.shutdown()

    def server_close(self) -> None:
        self.http.close()


def make_server(
    root: Path, host: str, port: int, limits: Limits | None = None, push: PushEndpoint | None = None
) -> Server:
    return Server(root, host, port, limits, push)
