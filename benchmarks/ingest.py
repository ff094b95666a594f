"""Ingest throughput, latency and burst benchmark against private Mosquitto and InfluxDB.

    .venv/bin/python -m benchmarks.ingest [--n 100000] [--quick]

Starts its own Mosquitto and InfluxDB 1.x (devtools.localstack, free loopback ports, a temp
dir) and measures, in one run:

1. ceiling: a bare paho subscriber (MQTT v5, QoS 1, ReceiveMaximum 65535, auto ack) that
   only counts N readings published at full speed; measured first and again last, and
   "% of ceiling" uses the higher run (this shared 2-core box drifts between runs);
2. naive: a paho subscriber doing one synchronous HTTP POST /write per message;
3. ingest: ``python -m cli ingest`` as a separate process with the sample config;
   time from the first publish until ``COUNT(seq)`` reaches N, every seq checked;
4. latency at a fixed rate: publish time → first seen by a poller querying InfluxDB;
5. burst: 100,000 readings as fast as the broker takes them, every one checked.

Every figure uses the same publishers, so "% of bare paho" compares like with like. By
default one process running :class:`benchmarks.common.RawPublisher` (flow-controlled QoS 1
over a plain socket, ~45,000 msg/s here): a paho publisher process manages only
~2,500-8,000 msg/s on this machine and would be the bottleneck while taking CPU from the
subscriber under test (``--publisher paho`` uses ``core.publish.Publisher``).
``--set ingest.flush_interval_s=0.1`` tries a config override on every ingest process.

Exit status 1 when a reading was lost or duplicated, 0 otherwise (targets are reported,
not enforced). The last line is the summary::

    ingest: <N> readings/s (<P>% of bare paho), p99 <L> ms, peak RSS <M> MB
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from benchmarks.common import (
    IngestProcess,
    PublisherPool,
    PublishJob,
    PublishReport,
    SeqCheck,
    check_seqs,
    count_points,
    ingest_env,
    percentile,
    publish_rate,
    seq_rows,
    steady_rate,
    wait_count,
)
from core.mqtt import BufferedClient, fast_publish_decode
from devtools.localstack import InfluxDB1, Mosquitto

TARGET_RATE = 15_000.0
TARGET_PCT = 60.0
TARGET_RSS_MB = 250.0
LATENCY_POLL_S = 0.02


@dataclass
class Row:
    name: str
    rate: float
    notes: str
    of_ceiling: bool = True


@dataclass
class Bench:
    mosquitto: Mosquitto
    influx: InfluxDB1
    work: Path
    publishers: int
    client: str
    overrides: dict[str, str] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    peak_rss_mb: float = 0.0
    _n: int = 0

    def tag(self, what: str) -> str:
        self._n += 1
        return f"b{os.getpid()}{what}{self._n}"

    def base_ms(self) -> int:
        # Distinct past timestamps, one per seq: well inside max_future_s and after 2000.
        return int(time.time() * 1000) - 86_400_000

    def progress(self, text: str) -> None:
        print(f"# {text}", flush=True)


# --------------------------------------------------------------------------- 1. ceiling


def _subscriber(client_id: str, fast: bool = False) -> mqtt.Client:
    cls = BufferedClient if fast else mqtt.Client
    return cls(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)


def _connect_and_subscribe(
    client: mqtt.Client, port: int, topic: str, receive_maximum: int | None
) -> None:
    subscribed = threading.Event()

    def on_connect(c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if not reason.is_failure:
            c.subscribe(topic, qos=1)

    def on_subscribe(_c: mqtt.Client, _u: Any, _m: Any, _r: Any, _p: Any) -> None:
        subscribed.set()

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    props = None
    if receive_maximum is not None:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.ReceiveMaximum = receive_maximum
    client.connect("127.0.0.1", port, keepalive=60, clean_start=True, properties=props)
    client.loop_start()
    if not subscribed.wait(15):
        client.loop_stop()
        raise RuntimeError(f"subscriber did not get a SUBACK for {topic}")


def bench_ceiling(b: Bench, n: int, run: str, record: bool = True, fast: bool = False) -> float:
    """A subscriber that only counts; ``fast``: with ingest's paho fast path."""
    if fast:
        with fast_publish_decode() as active:
            if not active:  # fast_path_available() logged why
                return 0.0
            return _bench_ceiling(b, n, run, record, fast)
    return _bench_ceiling(b, n, run, record, fast)


def _bench_ceiling(b: Bench, n: int, run: str, record: bool, fast: bool) -> float:
    tag = b.tag("c")
    topic = f"{tag}/snow/ST01"
    got = 0
    last = 0.0
    done = threading.Event()

    def on_message(_c: mqtt.Client, _u: Any, _m: mqtt.MQTTMessage) -> None:
        nonlocal got, last
        got += 1
        if got >= n:
            last = time.time()
            done.set()

    client = _subscriber(f"{tag}-bare", fast)
    client.on_message = on_message
    _connect_and_subscribe(client, b.mosquitto.port, topic, 65_535)
    try:
        pool = PublisherPool(
            PublishJob("127.0.0.1", b.mosquitto.port, (topic,), 0, n, b.base_ms(), client=b.client),
            k=b.publishers,
        )
        t0 = pool.go()
        done.wait(max(60.0, n / 1000))
        reports = pool.join()
    finally:
        client.disconnect()
        client.loop_stop()
    if not done.is_set():
        b.failures.append(f"ceiling: received {got} of {n}")
        last = time.time()
    rate = got / (last - t0)
    if not record:
        return rate
    name = "paho + ingest's fast path (transport)" if fast else "bare paho subscriber (ceiling"
    b.rows.append(
        Row(
            f"{name}, {run})" if not fast else f"{name}",
            rate,
            f"{got} msgs; publishers {_pub_note(reports)}",
            of_ceiling=not fast,
        )
    )
    b.progress(f"ceiling ({run}): {rate:,.0f} msg/s")
    return rate


def _pub_note(reports: Sequence[PublishReport]) -> str:
    return f"{len(reports)}× → {publish_rate(reports):,.0f} msg/s acked"


# --------------------------------------------------------------------------- 2. naive


def bench_naive(b: Bench, n: int) -> None:
    tag = b.tag("n")
    topic = f"{tag}/snow/ST01"
    b.influx.create_database(tag)
    conn = http.client.HTTPConnection("127.0.0.1", b.influx.port, timeout=10)
    path = f"/write?db={tag}&precision=ms"
    written = 0
    errors = 0
    last = 0.0
    done = threading.Event()

    def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        # What a first attempt looks like: parse, format, POST, wait, next message.
        nonlocal written, errors, last
        try:
            d = json.loads(msg.payload)
            line = (
                f"snow_depth,device=ST01 depth_cm={float(d['depth_cm'])},"
                f"seq={int(d['seq'])}i {int(d['time'])}"
            )
            conn.request("POST", path, body=line.encode())
            resp = conn.getresponse()
            resp.read()
            if resp.status == 204:
                written += 1
            else:
                errors += 1
        except (OSError, http.client.HTTPException, ValueError, KeyError):  # counted
            errors += 1
            conn.close()
        if written + errors >= n:
            last = time.time()
            done.set()

    client = _subscriber(f"{tag}-naive")
    client.on_message = on_message
    _connect_and_subscribe(client, b.mosquitto.port, topic, None)
    try:
        pool = PublisherPool(
            PublishJob("127.0.0.1", b.mosquitto.port, (topic,), 0, n, b.base_ms()), k=1
        )
        t0 = pool.go()
        done.wait(max(60.0, n / 200))
        pool.join()
    finally:
        client.disconnect()
        client.loop_stop()
        conn.close()
    if not done.is_set():
        last = time.time()
    stored = count_points(b.influx, tag)
    rate = written / (last - t0)
    if stored != n:
        b.failures.append(f"naive: {stored} of {n} stored")
    b.rows.append(
        Row(
            "naive Python (1 POST /write per msg)",
            rate,
            f"{n} msgs, keep-alive HTTP; {stored} stored, {errors} errors",
        )
    )
    b.progress(f"naive: {rate:,.0f} readings/s")


# --------------------------------------------------------------------------- 3./5. ingest


@dataclass
class IngestResult:
    rate: float
    steady: float
    check: SeqCheck
    rss_mb: float
    summary: dict[str, int]
    reports: list[PublishReport]


def _start_ingest(b: Bench, tag: str) -> IngestProcess:
    b.influx.create_database(tag)
    env = ingest_env(tag, b.mosquitto.port, b.influx.url, b.work / tag / "state", b.overrides)
    ing = IngestProcess(env, b.work / f"{tag}.log")
    ing.start()
    return ing


def run_ingest(b: Bench, what: str, n: int) -> IngestResult:
    """Publish n readings at full speed to a running ingest; time until all are queryable."""
    tag = b.tag(what)
    ing = _start_ingest(b, tag)
    pool: PublisherPool | None = None
    try:
        pool = PublisherPool(
            PublishJob(
                "127.0.0.1",
                b.mosquitto.port,
                (f"{tag}/snow/ST01",),
                0,
                n,
                b.base_ms(),
                client=b.client,
            ),
            k=b.publishers,
        )
        t0 = pool.go()
        done_at, samples = wait_count(b.influx, tag, n, timeout_s=max(60.0, n / 1000))
        reports = pool.join()
        rss = ing.read_peak_rss()
    finally:
        if pool is not None:
            pool.kill()
        summary = ing.stop()
    got = samples[-1][1] if samples else 0
    if done_at is None:
        b.failures.append(f"{what}: {got} of {n} queryable before the timeout")
        done_at = samples[-1][0] if samples else time.time()
    check = check_seqs([s for _, s in seq_rows(b.influx, tag)], n)
    if not check.ok:
        b.failures.append(f"{what}: {check}")
    if summary.get("received", n) != n:
        b.failures.append(f"{what}: ingest received {summary.get('received')} messages for {n}")
    b.peak_rss_mb = max(b.peak_rss_mb, rss)
    return IngestResult(got / (done_at - t0), steady_rate(samples, n), check, rss, summary, reports)


def bench_sustained(b: Bench, n: int) -> IngestResult:
    r = run_ingest(b, "s", n)
    b.rows.append(
        Row(
            "yukimizu ingest (separate process)",
            r.rate,
            f"{n} readings; steady 10–90 % {r.steady:,.0f}/s; {r.check}; "
            f"received={r.summary.get('received', '?')} written={r.summary.get('written', '?')}; "
            f"peak RSS {r.rss_mb:.0f} MB; publishers {_pub_note(r.reports)}",
        )
    )
    b.progress(f"ingest: {r.rate:,.0f} readings/s, peak RSS {r.rss_mb:.0f} MB, {r.check}")
    return r


def bench_burst(b: Bench, n: int) -> IngestResult:
    r = run_ingest(b, "b", n)
    took = n / r.rate if r.rate else float("nan")
    b.rows.append(
        Row(
            f"burst {n:,} → all queryable",
            r.rate,
            f"fully ingested in {took:.2f} s; {r.check}; broker took them at "
            f"{publish_rate(r.reports):,.0f} msg/s; peak RSS {r.rss_mb:.0f} MB",
        )
    )
    b.progress(f"burst: {n} in {took:.2f} s, {r.check}")
    return r


# --------------------------------------------------------------------------- 4. latency


class _LatencyPoller:
    """Polls InfluxDB every LATENCY_POLL_S in a thread and notes when each seq is first seen."""

    def __init__(self, b: Bench, tag: str, n: int, rate: float) -> None:
        self.b = b
        self.tag = tag
        self.n = n
        self.rate = rate
        self.seen: dict[int, float] = {}  # seq -> wall time the poller first saw it
        self.point_ms: dict[int, int] = {}  # seq -> the reading's time
        self.errors: list[str] = []
        self.polls = 0
        self.t0 = 0.0  # when the publisher started pacing; set by start()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="latency-poller", daemon=True)

    def start(self, t0: float) -> None:
        self.t0 = t0
        self.thread.start()

    def _run(self) -> None:
        lowest_unseen = 0
        next_at = time.monotonic()
        while not self.stop.is_set() and len(self.seen) < self.n:
            # The publisher paces seq s at t0 + s/rate or later and a reading's time is never
            # before its publish time, so every unseen seq has time >= this: nothing is missed
            # however InfluxDB orders visibility, and the answer stays small.
            cursor = int((self.t0 + lowest_unseen / self.rate) * 1000) - 1
            try:
                rows = seq_rows(self.b.influx, self.tag, f"time >= {cursor}ms")
            except (OSError, RuntimeError) as exc:  # InfluxError too; reported in the notes
                self.errors.append(str(exc))
                rows = []
            now = time.time()
            self.polls += 1
            for t, s in rows:
                if s not in self.seen:
                    self.seen[s] = now
                    self.point_ms[s] = t
            while lowest_unseen in self.seen:
                lowest_unseen += 1
            next_at += LATENCY_POLL_S
            time.sleep(max(0.0, next_at - time.monotonic()))
            next_at = max(next_at, time.monotonic())


def bench_latency(b: Bench, rate: float, seconds: float) -> float:
    """p99 latency (ms) from publish to first seen in InfluxDB by a 20 ms poller."""
    n = int(rate * seconds)
    tag = b.tag("l")
    # Four devices: InfluxDB keeps one point per series and millisecond, and at 2,000/s two
    # readings of one device would often share a millisecond.
    topics = [f"{tag}/snow/ST{i:02d}" for i in range(1, 5)]
    ing = _start_ingest(b, tag)
    poller = _LatencyPoller(b, tag, n, rate)
    seen = poller.seen
    pool: PublisherPool | None = None
    try:
        pool = PublisherPool(
            PublishJob(
                "127.0.0.1",
                b.mosquitto.port,
                tuple(topics),
                0,
                n,
                None,
                rate=rate,
                max_s=seconds * 3 + 30,
                client=b.client,
            ),
            k=1,
        )
        poller.start(pool.go())
        reports = pool.join()
        deadline = time.monotonic() + 30
        while len(seen) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        poller.stop.set()
        poller.thread.join(10)
        rss = ing.read_peak_rss()
    finally:
        poller.stop.set()
        if pool is not None:
            pool.kill()
        ing.stop()
    b.peak_rss_mb = max(b.peak_rss_mb, rss)
    check = check_seqs([s for _, s in seq_rows(b.influx, tag)], n)
    if not check.ok:
        b.failures.append(f"latency: {check}")
    lat = sorted((seen[s] - poller.point_ms[s] / 1000) * 1000 for s in seen)
    p50, p99 = percentile(lat, 50), percentile(lat, 99)
    achieved = sum(r.published for r in reports) / max(r.sent - r.started for r in reports)
    unseen = n - len(seen)
    b.rows.append(
        Row(
            f"latency @ {rate:,.0f}/s for {seconds:g} s",
            achieved,
            f"p50 {p50:.0f} / p99 {p99:.0f} / max {lat[-1] if lat else float('nan'):.0f} ms "
            f"(publish → seen by a {LATENCY_POLL_S * 1000:.0f} ms InfluxDB poller, "
            f"{poller.polls} polls: +≤{LATENCY_POLL_S * 1000:.0f} ms + query time); {check}"
            + (f"; {unseen} never seen by the poller" if unseen else "")
            + (f"; {len(poller.errors)} poll errors" if poller.errors else ""),
            of_ceiling=False,
        )
    )
    b.progress(f"latency: p50 {p50:.0f} ms, p99 {p99:.0f} ms")
    return p99


# --------------------------------------------------------------------------- main


def print_table(rows: Sequence[Row], ceiling: float) -> None:
    head = ("benchmark", "readings/s", "% of ceiling", "notes")
    cells = [
        (
            r.name,
            f"{r.rate:,.0f}",
            f"{100 * r.rate / ceiling:.0f} %" if r.of_ceiling and ceiling else "—",
            r.notes,
        )
        for r in rows
    ]
    w = [max(len(c[i]) for c in [head, *cells]) for i in range(3)]
    print()
    print(f"{head[0]:<{w[0]}}  {head[1]:>{w[1]}}  {head[2]:>{w[2]}}  {head[3]}")
    print(f"{'-' * w[0]}  {'-' * w[1]}  {'-' * w[2]}  {'-' * 5}")
    for c in cells:
        print(f"{c[0]:<{w[0]}}  {c[1]:>{w[1]}}  {c[2]:>{w[2]}}  {c[3]}")
    print()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ingest", description=__doc__)
    p.add_argument("--n", type=int, default=None, help="readings for ceiling and ingest")
    p.add_argument("--quick", action="store_true", help="small sizes (CI smoke test, < 1 min)")
    p.add_argument("--publishers", type=int, default=1, help="publisher processes")
    p.add_argument(
        "--publisher",
        choices=["raw", "paho"],
        default="raw",
        help="raw: a minimal socket QoS 1 publisher (~45,000 msg/s per process here); "
        "paho: core.publish.Publisher (~6,500 msg/s per process here)",
    )
    p.add_argument("--naive", type=int, default=None, help="messages for the naive baseline")
    p.add_argument("--burst", type=int, default=None, help="readings in the burst")
    p.add_argument("--latency-rate", type=float, default=2_000.0, help="msg/s")
    p.add_argument("--latency-s", type=float, default=None, help="seconds at that rate")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="ingest config override, TOML literal (e.g. ingest.flush_interval_s=0.1)",
    )
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, data)")
    args = p.parse_args(argv)
    args.overrides = {}
    for item in args.set:
        name, sep, value = item.partition("=")
        section, dot, key = name.partition(".")
        if not (sep and dot and section and key):
            p.error(f"--set {item!r}: expected SECTION.KEY=VALUE")
        args.overrides[f"YUKIMIZU_{section.upper()}__{key.upper()}"] = value
    q = args.quick
    args.n = args.n or (20_000 if q else 100_000)
    args.naive = args.naive or (1_000 if q else 5_000)
    args.burst = args.burst or (20_000 if q else 100_000)
    args.latency_s = args.latency_s or (3.0 if q else 10.0)
    if min(args.n, args.naive, args.burst, args.publishers) < 1:
        p.error("sizes must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="yukimizu-bench-"))
    mosq = Mosquitto(work / "mosquitto")
    influx = InfluxDB1(work / "influxdb")
    b = Bench(mosq, influx, work, args.publishers, args.publisher, args.overrides)
    t_start = time.monotonic()
    try:
        mosq.start()
        influx.start()
        b.progress(
            f"mosquitto :{mosq.port}, influxdb :{influx.port}, {os.cpu_count()} CPUs, "
            f"{args.publishers} × {args.publisher} publisher, load average "
            f"{' '.join(Path('/proc/loadavg').read_text().split()[:3])}, work dir {work}"
        )
        if args.overrides:
            b.progress(f"ingest overrides: {args.overrides}")
        # Measured first and last: this box's speed drifts between runs, and "% of ceiling"
        # uses the higher figure.
        bench_ceiling(b, min(args.n, 5_000), "warm-up", record=False)
        ceilings = [bench_ceiling(b, args.n, "first")]
        bench_naive(b, args.naive)
        sustained = bench_sustained(b, args.n)
        p99 = bench_latency(b, args.latency_rate, args.latency_s)
        bench_burst(b, args.burst)
        ceilings.append(bench_ceiling(b, args.n, "again at the end"))
        transport = bench_ceiling(b, args.n, "fast path", fast=True)
    finally:
        influx.stop()
        mosq.stop()
        if args.keep:
            print(f"# kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    ceiling = max(ceilings)
    print_table(b.rows, ceiling)
    pct = 100 * sustained.rate / ceiling if ceiling else 0.0
    targets = [
        (sustained.rate >= TARGET_RATE, f"≥ {TARGET_RATE:,.0f} readings/s"),
        (pct >= TARGET_PCT, f"≥ {TARGET_PCT:.0f} % of ceiling"),
        (b.peak_rss_mb < TARGET_RSS_MB, f"peak RSS < {TARGET_RSS_MB:.0f} MB"),
        (not b.failures, "nothing lost"),
    ]
    print("targets: " + ", ".join(f"{t} {'ok' if ok else 'MISSED'}" for ok, t in targets))
    for f in b.failures:
        print(f"FAILED: {f}")
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(f"(whole run {time.monotonic() - t_start:.0f} s; load average at the end {load})")
    if transport:
        print(
            f"ingest reaches {100 * sustained.rate / transport:.0f} % of a counting subscriber "
            f"on the same fast paho path ({transport:,.0f} msg/s)"
        )
    else:
        print("no fast-path figure: this paho is not one the fast path was tested on")
    print(
        f"ingest: {sustained.rate:.0f} readings/s ({pct:.0f}% of bare paho), "
        f"p99 {p99:.0f} ms, peak RSS {b.peak_rss_mb:.0f} MB",
        flush=True,
    )
    return 1 if b.failures else 0


if __name__ == "__main__":
    sys.exit(main())
