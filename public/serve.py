"""``yukimizu public serve DIR``: a small threaded static server for the built site.

For local use and small towns without nginx; it is also what benchmarks/public.py
measures. Files are served from memory (re-read when their inode, size or mtime
changes: the builder replaces them atomically, so a new inode means a new file),
HTTP/1.1 keep-alive, ``ETag``/``If-None-Match`` for the page's one-minute revalidation.
"""

from __future__ import annotations

import logging
import mimetypes
import os
import posixpath
import threading
import urllib.parse
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

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
        if not os.path.isfile(full):
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


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a page load is several requests
    server_version = "yukimizu-public"
    sys_version = ""
    files: ClassVar[FileCache]

    def do_GET(self) -> None:
        self._serve(body=True)

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def _serve(self, *, body: bool) -> None:
        rel = self.files.resolve(self.path)
        entry = None if rel is None else self.files.get(rel)
        if entry is None:
            self._plain(HTTPStatus.NOT_FOUND, b"not found\n", body)
            return
        if self.headers.get("If-None-Match") == entry.etag:
            self.send_response(HTTPStatus.NOT_MODIFIED)
            self.send_header("ETag", entry.etag)
            self.send_header("Cache-Control", entry.cache)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", entry.ctype)
        self.send_header("Content-Length", str(len(entry.body)))
        self.send_header("ETag", entry.etag)
        self.send_header("Cache-Control", entry.cache)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if body:
            self.wfile.write(entry.body)

    def _plain(self, status: HTTPStatus, text: bytes, body: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        if body:
            self.wfile.write(text)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    # The default backlog of 5 drops connections when a crowd arrives at once.
    request_queue_size = 1024


def make_server(root: Path, host: str, port: int) -> Server:
    handler = type("BoundHandler", (Handler,), {"files": FileCache(root)})
    return Server((host, port), handler)
