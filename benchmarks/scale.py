"""Per-core costs behind docs/scale.md: what 100,000 readings cost ingest, the broker
and InfluxDB in CPU seconds.

    .venv/bin/python -m benchmarks.scale [--n 100000]

Starts its own Mosquitto and InfluxDB 1.x, runs ``python -m cli ingest`` as deployed
(one process, the sample config), publishes N native JSON readings as fast as the
broker takes them (one RawPublisher process), waits until all N are queryable, and
reads the CPU time (user + system, /proc/<pid>/stat) each server process used
meanwhile. The rules engine's costs come from ``python -m benchmarks.rules``.
Last line: ``scale: ingest <I> CPU-s, broker <B> CPU-s, influxd <D> CPU-s per 100k readings``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.common import (
    IngestProcess,
    PublisherPool,
    PublishJob,
    check_seqs,
    ingest_env,
    seq_rows,
    wait_count,
)
from devtools.localstack import InfluxDB1, Mosquitto


def cpu_s(pid: int | None) -> float:
    """CPU seconds (user + system) the process has used so far."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--n", type=int, default=100_000)
    args = p.parse_args(argv)
    n = args.n
    with tempfile.TemporaryDirectory(prefix="yukimizu-bench-scale-") as tmp:
        work = Path(tmp)
        mosq, influx = Mosquitto(work / "mosquitto"), InfluxDB1(work / "influxdb")
        mosq.start()
        influx.start()
        try:
            tag = f"s{os.getpid()}"
            influx.create_database(tag)
            env = ingest_env(tag, mosq.port, influx.url, work / "state")
            ing = IngestProcess(env, work / "ingest.log")
            ing.start()
            pids = {"ingest": ing.process.pid, "broker": mosq.pid, "influxd": influx.pid}
            before = {k: cpu_s(v) for k, v in pids.items()}
            base_ms = int(time.time() * 1000) - 86_400_000
            job = PublishJob("127.0.0.1", mosq.port, (f"{tag}/snow/ST01",), 0, n, base_ms)
            pool = PublisherPool(job, k=1)
            t0 = pool.go()
            done_at, _samples = wait_count(influx, tag, n, timeout_s=max(60.0, n / 500))
            pool.join()
            used = {k: cpu_s(v) - before[k] for k, v in pids.items()}
            rss = ing.read_peak_rss()
            ing.stop()
            check = check_seqs([s for _, s in seq_rows(influx, tag)], n)
        finally:
            influx.stop()
            mosq.stop()
    if done_at is None:
        print(f"FAILED: not all {n} readings queryable before the timeout")
        return 1
    wall = done_at - t0
    per = {k: v / n * 100_000 for k, v in used.items()}
    print(
        f"{n:,} readings in {wall:.1f} s ({n / wall:,.0f}/s), {check}; ingest peak RSS "
        f"{rss:.0f} MB; load average {' '.join(Path('/proc/loadavg').read_text().split()[:3])}"
    )
    print(
        f"scale: ingest {per['ingest']:.2f} CPU-s, broker {per['broker']:.2f} CPU-s, "
        f"influxd {per['influxd']:.2f} CPU-s per 100k readings"
    )
    return 0 if check.ok else 1


if __name__ == "__main__":
    sys.exit(main())
