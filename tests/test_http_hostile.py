"""``public serve`` against hostile and broken clients (issue 15; docs/public.md#hostile-clients):
slowloris, a pipelining client that never reads, more connections than allowed, running
out of file descriptors, NUL and oversized path segments, request bodies that must not
become the next request, bad Content-Length. Real servers on 127.0.0.1, raw sockets;
behaviours asserted, not speed (that is benchmarks/public.py)."""

from __future__ import annotations

import contextlib
import select
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.httpserve import Limits
from publicpage.serve import Server
from tests.http_probes import (
    connect,
    exchange,
    get,
    public_serve,
    read_all,
    statuses,
    wait_until,
)

BIG = 1 << 20  # a 1 MB file: what a non-reader asks for again and again


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hostile-site")
    (root / "index.html").write_text("<!doctype html><title>除雪状況</title>" + "x" * 2000)
    (root / "data").mkdir()
    (root / "data" / "feed.geojson").write_text('{"type": "FeatureCollection"}' + " " * 19000)
    (root / "vendor").mkdir()
    (root / "vendor" / "big.js").write_bytes(b"/* big */" + b"a" * (BIG - 9))
    return root


@contextlib.contextmanager
def running(site: Path, **limits: object) -> Iterator[Server]:
    server = Server(site, "127.0.0.1", 0, Limits(**limits))  # type: ignore[arg-type]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _req(path: str, extra: str = "", method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode("latin-1")


# --- framing ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        "/%00",
        "/index.html%00.png",
        "/" + "a" * 256,
        "/data/" + "%61" * 256,
        "/%ff%fe",
        "/a%0d%0ab",
    ],
)
def test_bad_paths_are_answered_400_not_dropped(site: Path, target: str) -> None:
    with running(site) as server:
        data, how = exchange(server.server_port, _req(target))
        assert statuses(data) == [400], data[:300]
        assert how == "eof"
        # and the server is fine
        assert get(server.server_port, "/")[0] == 200


def test_a_255_byte_segment_is_just_not_found(site: Path) -> None:
    with running(site) as server:
        assert get(server.server_port, "/" + "a" * 255)[0] == 404


def test_a_post_body_is_never_parsed_as_the_next_request(site: Path) -> None:
    smuggled = _req("/index.html", "X-Smuggled: 1\r\n")
    with running(site) as server:
        post = _req("/", f"Content-Length: {len(smuggled)}\r\n", method="POST")
        data, how = exchange(server.server_port, post + smuggled)
        assert statuses(data) == [405] and b"Connection: close" in data, data[:400]
        assert how == "eof"
        # A GET carrying a body: refused and closed, the body not read as a request.
        data, how = exchange(
            server.server_port, _req("/", f"Content-Length: {len(smuggled)}\r\n") + smuggled
        )
        assert statuses(data) == [413] and how == "eof"
        # Chunked bodies are not supported at all: refused, closed.
        data, how = exchange(
            server.server_port, _req("/", "Transfer-Encoding: chunked\r\n") + b"0\r\n\r\n"
        )
        assert statuses(data) == [501] and how == "eof"
        # Without a body the framing is unambiguous and the connection goes on.
        data, how = exchange(
            server.server_port,
            _req("/", "Content-Length: 0\r\n", method="POST")
            + _req("/index.html", "Connection: close\r\n"),
        )
        assert statuses(data) == [405, 200]


@pytest.mark.parametrize(
    ("value", "status"),
    [("-1", 400), ("abc", 400), ("1e3", 400), ("99999999999999999999", 400), ("100000", 413)],
)
def test_bad_or_huge_content_length(site: Path, value: str, status: int) -> None:
    with running(site) as server:
        data, how = exchange(server.server_port, _req("/", f"Content-Length: {value}\r\n"))
        assert statuses(data) == [status] and how == "eof"


def test_malformed_heads_get_400(site: Path) -> None:
    with running(site) as server:
        for raw in (
            b"GET /\r\n\r\n",
            b"GET / HTTP/2.0\r\n\r\n",
            b"GET index.html HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nno colon here\r\n\r\n",
            b"G\x00T / HTTP/1.1\r\n\r\n",
        ):
            data, how = exchange(server.server_port, raw)
            assert statuses(data) == [400] and how == "eof", raw
        data, how = exchange(server.server_port, b"GET / HTTP/1.1\r\nX: " + b"a" * 20000)
        assert statuses(data) == [431] and how == "eof"


# --- slow and non-reading clients -------------------------------------------------


def test_slowloris_is_answered_408_and_closed_at_the_deadline(site: Path) -> None:
    """Trickling a header line every 0.2 s does not extend the 1 s request deadline."""
    with running(site, request_timeout_s=1.0) as server, connect(server.server_port) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        got = b""
        for k in range(100):  # 20 s of trickling at most
            ready, _, _ = select.select([s], [], [], 0.2)
            if ready:
                got, how = read_all(s)
                break
            try:
                s.sendall(f"X-Slow-{k}: 1\r\n".encode())
            except (BrokenPipeError, ConnectionResetError):
                break
        assert statuses(got) == [408], got[:300]
        assert how == "eof"
        assert server.http.stats["timeout_request"] >= 1


def test_idle_keepalive_connection_is_closed(site: Path) -> None:
    with running(site, idle_timeout_s=1.0) as server, connect(server.server_port) as s:
        s.sendall(_req("/"))
        data, how = read_all(s)  # the answer, then (after the idle timeout) the close
        assert statuses(data) == [200] and how == "eof"


def test_pipelining_non_reader_keeps_memory_bounded(site: Path, tmp_path: Path) -> None:
    """Forty clients each ask for a 1 MB file eight at a time, over and over, and never
    read: the server stops reading them (backpressure) instead of buffering answers.
    Main's server grew by hundreds of MB on one such client (issue 15)."""
    with public_serve(site, tmp_path / "serve.log") as srv:
        assert get(srv.port, "/vendor/big.js")[0] == 200  # cached: the baseline holds it
        base = srv.rss_kb()
        socks = [connect(srv.port) for _ in range(40)]
        for s in socks:
            s.setblocking(False)
        burst = _req("/vendor/big.js") * 8
        peak = base
        sent = 0
        try:
            for _round in range(60):  # bounded: at most 60 bursts per client
                for s in socks:
                    with contextlib.suppress(BlockingIOError, ConnectionError):
                        sent += s.send(burst)
                peak = max(peak, srv.rss_kb())
                time.sleep(0.05)
            # A resident's browser is still served during the attack.
            assert get(srv.port, "/")[0] == 200
            peak = max(peak, srv.rss_kb())
        finally:
            for s in socks:
                s.close()
        requested_mb = sent // len(burst) * 8
        assert requested_mb > 40 * 8  # the attack really asked for more than 320 MB
        growth_mb = (peak - base) / 1024
        assert growth_mb < 40, f"RSS grew {growth_mb:.0f} MB under {requested_mb} MB asked"
        assert "Traceback" not in srv.log.read_text()


def test_more_pipelined_requests_than_the_cap_cut_the_connection(site: Path) -> None:
    with running(site) as server, connect(server.server_port) as s:
        s.sendall(_req("/") * 100)
        data, how = read_all(s)
        assert len(statuses(data)) < 100 and how in ("eof", "reset")
        assert server.http.stats["pipeline_cut"] == 1
        assert get(server.server_port, "/")[0] == 200


# --- too many connections ---------------------------------------------------------


def test_connection_limit_refuses_with_503(site: Path) -> None:
    with running(site, max_connections=8, evict_after_s=3600) as server:
        held = [connect(server.server_port) for _ in range(8)]
        try:
            wait_until(lambda: server.http.snapshot()["open"] == 8, 10, "8 connections open")
            data, how = exchange(server.server_port, b"")
            assert statuses(data) == [503] and b"Retry-After: 5" in data and how == "eof"
            held.pop().close()
            wait_until(lambda: server.http.snapshot()["open"] == 7, 10, "one closed")
            assert get(server.server_port, "/")[0] == 200
        finally:
            for s in held:
                s.close()
        assert server.http.stats["refused"] == 1


def test_at_the_limit_a_stalled_connection_makes_room(site: Path) -> None:
    with running(site, max_connections=8, evict_after_s=0.2) as server:
        held = [connect(server.server_port) for _ in range(8)]
        try:
            for s in held:
                s.sendall(b"GET / HTTP/1.1\r\n")  # slowloris: never finished
            wait_until(lambda: server.http.snapshot()["open"] == 8, 10, "8 connections open")
            time.sleep(0.3)  # older than evict_after_s
            assert get(server.server_port, "/")[0] == 200
            assert server.http.stats["evicted"] == 1
            assert server.http.stats["refused"] == 0
        finally:
            for s in held:
                s.close()


def test_out_of_file_descriptors_logs_one_line_not_a_traceback_each(
    site: Path, tmp_path: Path
) -> None:
    """An explicit connection limit above the open-file limit: accept fails with EMFILE.
    Main's server wrote a traceback per failed accept (151 MB of log in a minute)."""
    with public_serve(site, tmp_path / "serve.log", "--max-connections", "1000", nofile=64) as srv:
        held: list[socket.socket] = []
        try:
            for _ in range(120):  # the kernel completes handshakes the server cannot accept
                held.append(connect(srv.port))
            wait_until(lambda: "Too many open files" in srv.log.read_text(), 10, "EMFILE logged")
            time.sleep(2.5)  # the loop retries accepting every second
        finally:
            for s in held:
                s.close()
        wait_until(lambda: _answers(srv.port), 20, "served again once the clients left")
        log = srv.log.read_text()
        assert "Traceback" not in log
        assert log.count("Too many open files") <= 2, log[-2000:]


def _answers(port: int) -> bool:
    try:
        return get(port, "/", timeout=2)[0] == 200
    except (OSError, AssertionError):
        return False


def test_default_connection_limit_stays_below_the_open_file_limit(
    site: Path, tmp_path: Path
) -> None:
    with public_serve(site, tmp_path / "serve.log", nofile=128) as srv:
        held: list[socket.socket] = []
        try:
            for _ in range(200):
                held.append(connect(srv.port))
            # At once: served, or refused with a 503 (a reset if refusals pile up).
            data, _how = exchange(srv.port, _req("/", "Connection: close\r\n"))
            assert statuses(data) in ([200], [503], [])
            time.sleep(0.5)  # the held ones are now stalled: a newcomer displaces one
            assert get(srv.port, "/")[0] == 200
        finally:
            for s in held:
                s.close()
        log = srv.log.read_text()
        assert "Too many open files" not in log and "Traceback" not in log
        assert "at most 32 connections" in log  # 128 - 64 reserved - 32 refusing


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_ends_public_serve_cleanly(
    site: Path, tmp_path: Path, sig: signal.Signals
) -> None:
    """systemd's SIGTERM and a Ctrl-C both stop the server through core.signals: exit 0,
    the signal logged, no traceback."""
    with public_serve(site, tmp_path / "serve.log") as srv:
        assert get(srv.port, "/")[0] == 200
        srv.proc.send_signal(sig)
        assert srv.proc.wait(15) == 0
    log = (tmp_path / "serve.log").read_text()
    assert f"received {sig.name}: stopping" in log
    assert "Traceback" not in log
