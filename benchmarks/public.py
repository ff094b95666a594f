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
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import tempfile
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


def run_server(cmd: Sequence[str], port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(list(cmd), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_listening(port)
    return proc


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.public", description=__doc__)
    p.add_argument("--clients", type=int, default=500)
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--procs", type=int, default=1, help="load generator processes")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="yukimizu-public-bench-") as tmp:
        site = Path(tmp)
        build_site(site)
        sizes = {path: (site / (path.lstrip("/") or "index.html")).stat().st_size for path in PATHS}
        print(f"site: {', '.join(f'{k} {v} B' for k, v in sizes.items())}")
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
