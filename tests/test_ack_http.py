"""The acknowledgement server against hostile clients (issue 15; docs/alerts.md#acknowledge):
Content-Length -1 / abc / huge refused before any token check, many unfinished requests
without a thread each and closed at their deadline, and the acknowledger being the
link's recipient whatever the form says. A real AckServer on 127.0.0.1, raw sockets."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from alerts.ack import LIMITS, MAX_BODY, AckServer
from alerts.service import AlertService
from tests.alerts_support import Clock, http_double, service, transition
from tests.http_probes import connect, exchange, read_all, rss_kb, statuses, wait_until


@dataclasses.dataclass
class Fired:
    svc: AlertService
    token: str


@pytest.fixture
def fired(tmp_path: Path) -> Fired:
    """One firing alert, notified to receiver "sato" by webhook: its link's token."""
    clock = Clock()
    with http_double() as hook:
        svc, out = service(
            tmp_path,
            {
                "ack": {"port": 0, "secret": "s3cret", "link_ttl_h": 1},
                "receivers": {"sato": {"webhook": {"url": hook.url}}},
                "routes": [{"receivers": ["sato"]}],
            },
            clock,
        )
        out.add(transition("snow.depth", "ST01"))
        svc.tick()
    link = urllib.parse.urlsplit(hook.requests[0].body["ack_url"])
    return Fired(svc, urllib.parse.parse_qs(link.query)["t"][0])


@contextlib.contextmanager
def ack_server(fired: Fired, **limits: object) -> Iterator[AckServer]:
    lim = dataclasses.replace(LIMITS, **limits)  # type: ignore[arg-type]
    srv = AckServer(fired.svc.store, fired.svc.key, "127.0.0.1", 0, fired.svc.t, limits=lim)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def _post(token: str, extra: str = "", body: str | None = None) -> bytes:
    form = body if body is not None else urllib.parse.urlencode({"t": token})
    head = (
        "POST /ack HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
    )
    if "Content-Length" not in extra:
        head += f"Content-Length: {len(form.encode())}\r\n"
    return (head + extra + "\r\n" + form).encode()


def _status(fired: Fired) -> str:
    row = fired.svc.store.one("SELECT status FROM alerts WHERE key = 'snow.depth:ST01'")
    assert row is not None
    return str(row["status"])


@pytest.mark.parametrize(
    ("value", "status"),
    [
        ("-1", 400),
        ("abc", 400),
        (str(MAX_BODY + 1), 413),
        ("99999999999999999999", 400),
        ("", 400),
    ],
)
def test_bad_content_length_is_refused_before_the_token_check(
    fired: Fired, value: str, status: int
) -> None:
    with ack_server(fired) as srv, connect(srv.port) as s:
        s.sendall(_post(fired.token, f"Content-Length: {value}\r\n", body=""))
        # Main's server read a "-1" body to EOF, holding the connection open: this one
        # answers at once although the client keeps its side open.
        data, how = read_all(s)
        assert statuses(data) == [status], data[:300]
        assert how == "eof"
    assert _status(fired) == "firing"


def test_content_length_minus_one_with_a_stream_behind_it_costs_no_memory(
    fired: Fired,
) -> None:
    """The old server read the body to EOF before the token check: 70 → 372 MB."""
    with ack_server(fired) as srv, connect(srv.port) as s:
        base = rss_kb(os.getpid())
        s.sendall(_post(fired.token, "Content-Length: -1\r\n", body=""))
        sent = 0
        chunk = b"x" * 65536
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for _ in range(1600):  # up to 100 MB, bounded
                s.sendall(chunk)
                sent += len(chunk)
        grown_mb = (rss_kb(os.getpid()) - base) / 1024
        assert sent < 1600 * len(chunk)  # cut off long before the stream ended
        assert grown_mb < 20


def test_many_unfinished_requests_hold_no_threads_and_do_not_lock_out(fired: Fired) -> None:
    """300 unfinished requests held 303 threads in main's server."""
    with ack_server(fired) as srv:
        threads = threading.active_count()
        held: list[socket.socket] = []
        try:
            for _ in range(300):
                s = connect(srv.port)
                s.sendall(b"POST /ack HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nt=")
                held.append(s)
            assert threading.active_count() == threads
            # The one with the link still gets through: stalled requests make room.
            page = _fetch_until_ok(srv.port, f"/ack?t={fired.token}")
            assert "snow.depth:ST01" in page
            assert srv.http.snapshot()["open"] <= LIMITS.connection_limit()
        finally:
            for s in held:
                s.close()


def _fetch_until_ok(port: int, path: str) -> str:
    got: list[str] = []

    def ok() -> bool:
        data, _how = exchange(
            port, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
        )
        if statuses(data) == [200]:
            got.append(data.decode())
            return True
        return False

    wait_until(ok, 20, f"GET {path} answered 200")
    return got[0]


def test_an_unfinished_request_is_answered_408_at_its_deadline(fired: Fired) -> None:
    with ack_server(fired, request_timeout_s=1.0) as srv, connect(srv.port) as s:
        s.sendall(b"POST /ack HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nt=")
        data, how = read_all(s)  # the socket's own timeout (10 s) would say "timeout"
        assert statuses(data) == [408] and how == "eof"
    assert _status(fired) == "firing"


def test_the_acknowledger_is_the_links_recipient(fired: Fired) -> None:
    with ack_server(fired) as srv:
        data, _ = exchange(
            srv.port, f"GET /ack?t={fired.token} HTTP/1.1\r\nConnection: close\r\n\r\n".encode()
        )
        assert statuses(data) == [200]
        page = data.decode()
        assert 'name="by"' not in page and "sato" in page  # no field to fill in
        assert _status(fired) == "firing"  # GET only shows
        body = urllib.parse.urlencode({"t": fired.token, "by": "mallory"})
        data, _ = exchange(srv.port, _post(fired.token, body=body))
        assert statuses(data) == [200] and b"(sato)" in data and b"mallory" not in data
    row = fired.svc.store.one("SELECT status, acked_by, ack_via FROM alerts")
    assert row == {"status": "acknowledged", "acked_by": "sato", "ack_via": "link"}


def test_bad_tokens_and_paths_get_the_one_403_page(fired: Fired) -> None:
    with ack_server(fired) as srv:
        pages = []
        for token in ("", "1.2.3", fired.token + "x", "%00", "a" * 3000):
            data, _ = exchange(
                srv.port, _post(fired.token, body=urllib.parse.urlencode({"t": token}))
            )
            assert statuses(data) == [403]
            pages.append(data.partition(b"\r\n\r\n")[2])
        assert len(set(pages)) == 1 and b"ST01" not in pages[0]
        data, _ = exchange(srv.port, b"GET /%00 HTTP/1.1\r\n\r\n")
        assert statuses(data) == [400]
        data, _ = exchange(srv.port, b"PUT /ack HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        assert statuses(data) == [405]
    assert _status(fired) == "firing"
