"""Benchmark: the public page under a crowd — N concurrent clients fetching the page
and the feed from ``yukimizu public serve``, with Python's plain ``http.server`` serving
the same files as the baseline in the same run.

    .venv/bin/python -m benchmarks.public [--clients 500] [--seconds 15] [--procs 1]

The site is built from a synthetic snapshot of the sample town (every road segment, a
working fleet, every station): the files are the ones a storm morning produces, no
InfluxDB needed. Each server runs in its own process; the load generator is asyncio
(one task per client, closed loop without think time: every client asks again as soon
as it has its answer — harsher than residents refreshing a page), HTTP/1.1 keep-alive
where the server allows it. Latency is per request from sending it (connecting
included when a server closes the connection) to the last byte. A request unanswered
after 10 s is an error; the first 2 s (the crowd connecting) are not measured, their
errors are counted.
Last line: ``public serve: <R> req/s, p99 <L> ms with <N> clients``.

Under attack (issue 15, docs/public.md#hostile-clients):

    .venv/bin/python -m benchmarks.public --attack 1000 [--nofile 1024] [--before DIR]

runs each server twice in the same run: the crowd alone (the baseline), then the crowd
beside one attacker holding ``--attack`` connections — ``--slow`` (default half) of them
slowloris (a head never finished, a line every 5 s), the others pipelining non-readers
(eight GETs of the largest file at a time, a 4 KB receive buffer, never a read) — each
reconnecting as soon as the server drops it. The server runs with its open-file limit
at ``--nofile`` (1,024, the limit the issue was measured at). Printed: the crowd's
figures, the server's peak RSS (from /proc, sampled every 0.2 s) and CPU, the bytes its
log grew, a probe's latency on fresh connections, what the attacker achieved.
``--before DIR`` also runs the server of another checkout (e.g. main) the same way; a
server passing ``--rss-cap-mb`` is killed (the machine is shared) and reported as such.
Last line: ``public serve under attack: p99 <L> ms, RSS <M> MB, log <K> KB …``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import multiprocessing as mp
import os
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from core.config import load_config, load_registry
from publicpage.build import FEED, write_site
from publicpage.config import PublicConfig
from publicpage.snapshot import HOUR_MS, Snapshot, band_for, now_ms

REPO = Path(__file__).resolve().parent.parent
PATHS = ("/", "/" + FEED)
TIMEOUT_S = 10.0  # a request unanswered this long counts as an error
WARMUP_S = 2.0  # measured from here: every client connected and asking


def build_site(out: Path) -> None:
    reg = load_registry(load_config(REPO / "config" / "yukimizu.toml", environ={}))
    at = now_ms()
    snap = Snapshot(at, data_ms=at - 30_000)
    for k, seg in enumerate(sorted(reg.routes.values(), key=lambda s: s.id)):
        plowed = at - (k % 9) * 3 * HOUR_MS
        snap.segments.append(
            {
                "id": seg.id,
                "name": seg.name,
                "priority": seg.priority,
                "coords": [list(c) for c in seg.coords],
                "last_plowed": None,
                "hours_since": (at - plowed) / HOUR_MS,
                "inferred": k % 7 == 0,
                "band": band_for(at - plowed).key,
            }
        )
    for pid, plow in reg.plows.items():
        lon, lat = next(iter(reg.routes.values())).coords[0]
        snap.plows.append(
            {
                "id": pid,
                "name": plow.name,
                "lon": lon,
                "lat": lat,
                "time": None,
                "speed_kmh": 20,
                "blade_down": True,
            }
        )
    for st in reg.stations.values():
        snap.stations.append(
            {
                "id": st.id,
                "name": st.name,
                "lon": st.lon,
                "lat": st.lat,
                "time": None,
                "depth_cm": 120,
                "new_24h_cm": 22,
            }
        )
    snap.dispatch = {"state": "working", "text": "本日 03:00 出動 — 優先路線 8/12 完了"}
    write_site(snap, PublicConfig(), out)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


async def _client(
    port: int, k: int, *, warm: float, until: float, lat: list[float], errors: list[str]
) -> None:
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    i = k
    while time.perf_counter() < until:
        path = PATHS[i % len(PATHS)]
        i += 1
        t0 = time.perf_counter()
        try:
            async with asyncio.timeout(TIMEOUT_S):
                if writer is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                assert reader is not None
                writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
                head = await reader.readuntil(b"\r\n\r\n")
                status = head[9:12]
                lower = head.lower()
                n = int(lower.split(b"content-length:")[1].split(b"\r\n")[0])
                await reader.readexactly(n)
            if status != b"200":
                errors.append(status.decode())
            if head.startswith(b"HTTP/1.0") or b"connection: close" in lower:
                writer.close()
                writer = None
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
            errors.append(type(exc).__name__)
            if writer is not None:
                writer.close()
            writer = None
            continue
        if t0 >= warm:  # the crowd arriving (500 connects at once) is not steady state
            lat.append(time.perf_counter() - t0)
    if writer is not None:
        writer.close()


def _load_proc(port: int, clients: int, seconds: float, start: float, q: mp.Queue) -> None:  # type: ignore[type-arg]
    async def main() -> tuple[list[float], list[str]]:
        lat: list[float] = []
        errors: list[str] = []
        await asyncio.sleep(max(0.0, start - time.time()))
        warm = time.perf_counter() + WARMUP_S
        until = warm + seconds
        await asyncio.gather(
            *(
                _client(port, k, warm=warm, until=until, lat=lat, errors=errors)
                for k in range(clients)
            )
        )
        return lat, errors

    q.put(asyncio.run(main()))


def measure(port: int, clients: int, seconds: float, procs: int) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    q: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    start = time.time() + 2.0
    share = [clients // procs + (1 if k < clients % procs else 0) for k in range(procs)]
    ps = [ctx.Process(target=_load_proc, args=(port, n, seconds, start, q)) for n in share]
    for p in ps:
        p.start()
    lat: list[float] = []
    errors: list[str] = []
    for _ in ps:
        got_lat, got_err = q.get(timeout=seconds + WARMUP_S + 120)
        lat += got_lat
        errors += got_err
    for p in ps:
        p.join()
    a = np.array(lat) * 1000
    return {
        "requests": float(len(a)),
        "rps": len(a) / seconds,
        "p50_ms": float(np.percentile(a, 50)) if len(a) else float("nan"),
        "p99_ms": float(np.percentile(a, 99)) if len(a) else float("nan"),
        "max_ms": float(a.max()) if len(a) else float("nan"),
        "errors": float(len(errors)),
    }


ATTACK_PATH = "/vendor/leaflet/leaflet.js"  # the largest file: most bytes per request


async def _slowloris(port: int, until: float, stats: collections.Counter[str]) -> None:
    loop = asyncio.get_running_loop()
    while time.monotonic() < until:
        s = socket.socket()
        s.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(s, ("127.0.0.1", port)), 5)
            stats["connects"] += 1
            await loop.sock_sendall(s, b"GET / HTTP/1.1\r\nHost: x\r\n")
            k = 0
            while time.monotonic() < until:
                await asyncio.sleep(5)
                await loop.sock_sendall(s, f"X-Slow-{k}: 1\r\n".encode())
                k += 1
        except TimeoutError:
            stats["connect_timeouts"] += 1
        except OSError:
            stats["dropped"] += 1
        finally:
            s.close()
        await asyncio.sleep(0.1)


async def _non_reader(port: int, until: float, stats: collections.Counter[str]) -> None:
    loop = asyncio.get_running_loop()
    burst = f"GET {ATTACK_PATH} HTTP/1.1\r\nHost: x\r\n\r\n".encode() * 8
    while time.monotonic() < until:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.setblocking(False)
        connected = False
        try:
            await asyncio.wait_for(loop.sock_connect(s, ("127.0.0.1", port)), 5)
            stats["connects"] += 1
            connected = True
            while time.monotonic() < until:
                await asyncio.wait_for(loop.sock_sendall(s, burst), until - time.monotonic())
                stats["requests"] += 8
                await asyncio.sleep(0.1)
        except TimeoutError:
            stats["connect_timeouts"] += not connected  # else: the run is over
        except OSError:
            stats["dropped"] += 1
        finally:
            s.close()
        await asyncio.sleep(0.1)


def _attack_proc(port: int, conns: int, slow: float, seconds: float, q: mp.Queue) -> None:  # type: ignore[type-arg]
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, conns + 256), hard))

    async def main() -> collections.Counter[str]:
        stats = collections.Counter(connects=0, dropped=0, requests=0, connect_timeouts=0)
        until = time.monotonic() + seconds
        tasks = [
            _slowloris(port, until, stats) if k < slow * conns else _non_reader(port, until, stats)
            for k in range(conns)
        ]
        await asyncio.gather(*tasks)
        stats["cpu_ms"] = int(time.process_time() * 1000)
        return stats

    q.put(asyncio.run(main()))


class RssWatch:
    """Peak RSS of a process, sampled every 0.2 s; kills it above ``cap_mb``."""

    def __init__(self, proc: subprocess.Popen[bytes], cap_mb: float) -> None:
        self.proc = proc
        self.cap_kb = cap_mb * 1024
        self.peak_kb = 0
        self.killed = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def rss_kb(self) -> int:
        try:
            text = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return 0
        return next((int(x.split()[1]) for x in text.splitlines() if x.startswith("VmRSS:")), 0)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            kb = self.rss_kb()
            self.peak_kb = max(self.peak_kb, kb)
            if kb > self.cap_kb and self.proc.poll() is None:
                self.killed = True
                self.proc.kill()

    def cpu_s(self) -> float:
        """User + system CPU seconds the process has used."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return float("nan")
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def reset(self) -> None:
        self.peak_kb = self.rss_kb()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)


class Probe:
    """One resident asking for the feed every 50 ms on a fresh connection, from its own
    thread: the server's responsiveness with less of the load generators' queueing."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.lat_ms: list[float] = []
        self.connect_ms: list[float] = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        req = f"GET /{FEED} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
        while not self._stop.wait(0.05):
            t0 = time.perf_counter()
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=TIMEOUT_S) as s:
                    self.connect_ms.append((time.perf_counter() - t0) * 1000)
                    s.sendall(req)
                    data = b""
                    while chunk := s.recv(65536):
                        data += chunk
                ok = data.startswith(b"HTTP/1.1 200")
            except OSError:
                ok = False
            if ok:
                self.lat_ms.append((time.perf_counter() - t0) * 1000)
            else:
                self.errors += 1

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join(TIMEOUT_S + 1)
        a = np.array(self.lat_ms)
        p99 = float(np.percentile(a, 99)) if len(a) else float("nan")
        c = np.array(self.connect_ms)
        cp99 = float(np.percentile(c, 99)) if len(c) else float("nan")
        return {
            "probe_p99_ms": p99,
            "probe_connect_p99_ms": cp99,
            "probe_n": float(len(a)),
            "probe_errors": float(self.errors),
        }


def run_attacked(
    name: str, cmd: list[str], cwd: Path, args: argparse.Namespace, log: Path
) -> dict[str, dict[str, float]]:
    """The crowd alone, then the crowd beside the attacker, against one server process."""
    port = free_port()
    nofile = args.nofile

    def limit() -> None:
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(nofile, hard), hard))

    env = {**os.environ, "PYTHONPATH": str(cwd)}
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [c.replace("{port}", str(port)) for c in cmd],
            cwd=cwd,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
            preexec_fn=limit,  # noqa: PLW1509 (setrlimit only, before exec)
        )
    wait_listening(port)
    watch = RssWatch(proc, args.rss_cap_mb)
    out: dict[str, dict[str, float]] = {}
    try:
        idle_kb = watch.rss_kb()
        cpu0, t0 = watch.cpu_s(), time.monotonic()
        probe = Probe(port)
        r = measure(port, args.clients, args.seconds, args.procs)
        r |= probe.stop()
        r["cpu_pct"] = 100 * (watch.cpu_s() - cpu0) / (time.monotonic() - t0)
        r |= {"rss_mb": watch.peak_kb / 1024, "rss_idle_mb": idle_kb / 1024}
        r["log_kb"] = log.stat().st_size / 1024
        out["alone"] = r
        # The attacker first (it holds its connections), then the crowd beside it.
        ctx = mp.get_context("spawn")
        q: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
        attack_s = args.seconds + WARMUP_S + 8.0
        log0 = log.stat().st_size
        watch.reset()
        attacker = ctx.Process(
            target=_attack_proc, args=(port, args.attack, args.slow, attack_s, q)
        )
        attacker.start()
        time.sleep(4.0)
        cpu0, t0 = watch.cpu_s(), time.monotonic()
        probe = Probe(port)
        r = measure(port, args.clients, args.seconds, args.procs)
        r |= probe.stop()
        r["cpu_pct"] = 100 * (watch.cpu_s() - cpu0) / (time.monotonic() - t0)
        got = q.get(timeout=attack_s + 120)
        attacker.join()
        r |= {"rss_mb": watch.peak_kb / 1024, "log_kb": (log.stat().st_size - log0) / 1024}
        r |= {f"attack_{k}": float(v) for k, v in got.items()}
        r["killed"] = float(watch.killed)
        out["attacked"] = r
    finally:
        watch.stop()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return out


def main_attack(args: argparse.Namespace, site: Path) -> None:
    ours = ["{python}", "-m", "cli", "public", "serve", str(site), "--port", "{port}"]
    servers: list[tuple[str, Path]] = [("yukimizu public serve", REPO)]
    if args.before is not None:
        servers.append((f"before ({args.before})", args.before))
    summary = None
    for name, cwd in servers:
        cmd = [c.replace("{python}", sys.executable) for c in ours]
        with tempfile.TemporaryDirectory(prefix="yukimizu-serve-") as tmp:
            logdir = args.log_dir or Path(tmp)
            log = logdir / f"{'before' if cwd != REPO else 'serve'}.log"
            res = run_attacked(name, cmd, cwd, args, log)
        for phase, r in res.items():
            extra = ""
            if phase == "attacked":
                extra = (
                    f"  attacker: {r['attack_connects']:.0f} connects, "
                    f"{r['attack_dropped']:.0f} dropped by the server, "
                    f"attacker CPU {r['attack_cpu_ms'] / 1000:.1f} s"
                    + ("  KILLED at the RSS cap" if r["killed"] else "")
                )
            print(
                f"{name:28s} {phase:8s} {r['rps']:7.0f} req/s  p50 {r['p50_ms']:7.1f} ms  "
                f"p99 {r['p99_ms']:8.1f} ms  errors {r['errors']:5.0f}  "
                f"peak RSS {r['rss_mb']:6.0f} MB  log +{r['log_kb']:8.1f} KB  "
                f"server CPU {r['cpu_pct']:3.0f}%  probe p99 {r['probe_p99_ms']:6.1f} ms "
                f"(connect {r['probe_connect_p99_ms']:.1f} ms, {r['probe_errors']:.0f} failed)"
                f"{extra}",
                flush=True,
            )
        if summary is None:
            summary = res["attacked"]
    assert summary is not None
    print(
        f"public serve under attack: p99 {summary['p99_ms']:.0f} ms, "
        f"RSS {summary['rss_mb']:.0f} MB, log {summary['log_kb']:.0f} KB, "
        f"{summary['errors']:.0f} errors with {args.clients} clients beside "
        f"{args.attack} attacking connections ({args.slow:.0%} slowloris, "
        f"open-file limit {args.nofile}, "
        f"cpus {os.cpu_count()}, load {os.getloadavg()[0]:.1f})"
    )


def run_server(cmd: Sequence[str], port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(list(cmd), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_listening(port)
    return proc


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.public", description=__doc__)
    p.add_argument("--clients", type=int, default=500)
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--procs", type=int, default=1, help="load generator processes")
    p.add_argument("--attack", type=int, default=0, help="attacking connections (0: none)")
    p.add_argument("--slow", type=float, default=0.5, help="share of slowloris attackers")
    p.add_argument("--nofile", type=int, default=1024, help="the server's open-file limit")
    p.add_argument("--before", type=Path, help="also run the server of this checkout")
    p.add_argument("--log-dir", type=Path, help="keep the servers' logs here")
    p.add_argument("--rss-cap-mb", type=float, default=2048, help="kill a server above this")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="yukimizu-public-bench-") as tmp:
        site = Path(tmp)
        build_site(site)
        sizes = {path: (site / (path.lstrip("/") or "index.html")).stat().st_size for path in PATHS}
        print(f"site: {', '.join(f'{k} {v} B' for k, v in sizes.items())}")
        if args.attack:
            main_attack(args, site)
            return 0
        servers = {
            "yukimizu public serve": [
                sys.executable,
                "-m",
                "cli",
                "public",
                "serve",
                str(site),
                "--port",
                "{port}",
            ],
            "baseline python -m http.server": [
                sys.executable,
                "-m",
                "http.server",
                "{port}",
                "--bind",
                "127.0.0.1",
                "--directory",
                str(site),
            ],
        }
        results = {}
        for name, cmd in servers.items():
            port = free_port()
            proc = run_server([c.replace("{port}", str(port)) for c in cmd], port)
            try:
                r = measure(port, args.clients, args.seconds, args.procs)
            finally:
                proc.terminate()
                proc.wait(10)
            results[name] = r
            print(
                f"{name:32s} {r['rps']:8.0f} req/s  p50 {r['p50_ms']:7.1f} ms  "
                f"p99 {r['p99_ms']:7.1f} ms  max {r['max_ms']:7.1f} ms  "
                f"errors {r['errors']:.0f}  ({r['requests']:.0f} requests, {args.clients} clients, "
                f"{args.seconds:.0f} s, cpus {os.cpu_count()})",
                flush=True,
            )
        ours = results["yukimizu public serve"]
        print(
            f"public serve: {ours['rps']:.0f} req/s, p99 {ours['p99_ms']:.0f} ms "
            f"with {args.clients} clients"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
