"""Raw-socket probes of hostile and broken HTTP clients (issue 15), shared by the
``public serve`` and acknowledgement-server tests (the load figures are
benchmarks/public.py's). Everything here talks to a real server on 127.0.0.1."""

from __future__ import annotations

import os
import re
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import REPO

STATUS = re.compile(rb"HTTP/1\.[01] (\d{3}) ")


def connect(port: int, timeout: float = 10.0) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return s


def read_all(s: socket.socket, limit: int = 1 << 22) -> tuple[bytes, str]:
    """Read until the server closes: (bytes, how it ended: 'eof' | 'reset' | 'timeout')."""
    out = b""
    while len(out) < limit:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            return out, "reset"
        except TimeoutError:
            return out, "timeout"
        if not chunk:
            return out, "eof"
        out += chunk
    return out, "limit"


def exchange(port: int, data: bytes, timeout: float = 10.0) -> tuple[bytes, str]:
    """Send ``data`` on a new connection and read until the server closes it."""
    with connect(port, timeout) as s:
        s.sendall(data)
        return read_all(s)


def statuses(data: bytes) -> list[int]:
    return [int(m.group(1)) for m in STATUS.finditer(data)]


def get(port: int, path: str = "/", timeout: float = 10.0) -> tuple[int, bytes]:
    """One HTTP/1.0-style request (Connection: close): status and body."""
    data, how = exchange(
        port, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode(), timeout
    )
    assert how == "eof", (how, data[:200])
    head, _, body = data.partition(b"\r\n\r\n")
    return statuses(head)[0], body


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


@dataclass
class Served:
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    def rss_kb(self) -> int:
        return rss_kb(self.proc.pid)


@contextmanager
def public_serve(site: Path, log: Path, *extra: str, nofile: int | None = None) -> Iterator[Served]:
    """``yukimizu public serve SITE`` as a subprocess on a free port, its log in ``log``."""

    def limit() -> None:
        if nofile is not None:
            _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard))

    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli", "public", "serve", str(site), "--port", "0", *extra],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=err,
            preexec_fn=limit,  # noqa: PLW1509 (only setrlimit, before exec)
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        m = re.search(r":(\d+)/", line)
        assert m, f"no port in {line!r}; log: {log.read_text()[-2000:]}"
        yield Served(int(m.group(1)), proc, log)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def wait_until(cond: object, timeout_s: float, what: str) -> None:
    """Poll ``cond()`` until true; fail naming ``what`` after ``timeout_s``."""
    assert callable(cond)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout_s} s: {what}")
