"""Shared pieces of the benchmarks: publisher processes, an ingest subprocess, InfluxDB probes.

A load generator must not be the bottleneck nor steal the subscriber's CPU. On this 2-core
machine one paho publisher process (``core.publish.Publisher``) managed 2,400-8,500 QoS 1
msg/s (docs/architecture.md#publishing says ~14,000 elsewhere), :class:`RawPublisher` ~45,000.
:class:`PublisherPool` runs publishers in processes started together behind a barrier.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import queue
import re
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path
from typing import Any, Protocol

from core.config import MqttConfig
from core.publish import Publisher, PublishError
from devtools import processes
from devtools.localstack import InfluxDB1, mqtt_varint

REPO = Path(__file__).resolve().parent.parent
SAMPLE_CONFIG = REPO / "config" / "yukimizu.toml"
SNOW = "snow_depth"


def payload(seq: int, time_ms: int) -> bytes:
    """A native JSON snow reading; ``time`` in epoch milliseconds, ``seq`` numbers it."""
    return b'{"time":%d,"depth_cm":%.1f,"seq":%d}' % (time_ms, (seq % 6000) / 10, seq)


# --------------------------------------------------------------------------- publishers


@dataclass(frozen=True)
class PublishJob:
    """One publisher process's share: seqs ``first_seq .. first_seq+count-1``.

    ``base_ms``: the reading's time is ``base_ms + seq`` (distinct per seq). ``None``: it is
    the wall-clock publish time in ms, made strictly increasing per device (InfluxDB keeps
    one point per series and millisecond), so it is at most a few ms after the real publish.
    ``rate``: messages per second; ``None``: as fast as the broker acknowledges.
    """

    host: str
    port: int
    topics: tuple[str, ...]  # round robin by seq
    first_seq: int
    count: int
    base_ms: int | None
    rate: float | None = None
    window: int = 1_000
    max_s: float = 300.0
    client: str = "raw"  # or "paho": core.publish.Publisher


@dataclass(frozen=True)
class PublishReport:
    first_seq: int
    published: int  # acknowledged by the broker
    started: float  # wall clock
    sent: float  # last publish() returned
    acked: float  # broker acknowledged all
    error: str | None = None


def _mqtt_str(b: bytes) -> bytes:
    return len(b).to_bytes(2, "big") + b


class RawPublisher:
    """MQTT 3.1.1 QoS 1 over a plain socket, for load generation only.

    paho costs tens of microseconds of Python per QoS 1 publish (6,000-8,500 msg/s per
    process measured here), and on 2 cores every publisher process takes CPU from the
    subscriber under test. This one writes PUBLISH packets in chunks, reads PUBACKs in
    bulk and keeps at most ``window`` unacknowledged, so it needs a fraction of the CPU.
    Mosquitto acknowledges one connection's packets in order, which is checked.
    """

    def __init__(
        self, host: str, port: int, client_id: str, window: int = 1_000, timeout_s: float = 30
    ) -> None:
        if not 1 <= window < 65_535:
            raise ValueError("window must be 1..65534 (16-bit packet ids)")
        self.window = window
        self.published = 0
        self.flush_each = False
        self._buf: list[bytes] = []
        self._inflight = 0
        self._next_id = 1
        self._ack_id = 1
        self._rx = b""
        self._sock = socket.create_connection((host, port), timeout=timeout_s)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # CONNECT, MQTT 3.1.1, clean session, keepalive 0 (off: no PINGREQ needed)
        body = _mqtt_str(b"MQTT") + bytes([4, 0x02, 0, 0]) + _mqtt_str(client_id.encode())
        self._sock.sendall(b"\x10" + mqtt_varint(len(body)) + body)
        connack = self._recv_exact(4)
        if connack[0] != 0x20 or connack[3] != 0:
            self._sock.close()
            raise ConnectionError(f"broker refused the connection: CONNACK {connack.hex()}")

    def _recv_exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self._sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("broker closed the connection")
            data += chunk
        return data

    def publish(self, topic: str, payload: bytes) -> None:
        t = topic.encode()
        pid = self._next_id
        self._next_id = pid % 65_535 + 1
        head = b"\x32" + mqtt_varint(4 + len(t) + len(payload)) + _mqtt_str(t)
        self._buf.append(head + pid.to_bytes(2, "big") + payload)
        self._inflight += 1
        if self.flush_each or len(self._buf) >= 64:
            self._send()
        while self._inflight >= self.window:
            self._send()
            self._read_acks()

    def _send(self) -> None:
        if self._buf:
            self._sock.sendall(b"".join(self._buf))
            self._buf.clear()

    def _read_acks(self) -> None:
        data = self._sock.recv(65_536)
        if not data:
            raise ConnectionError("broker closed the connection")
        rx = self._rx + data
        i = 0
        while len(rx) - i >= 4:
            if rx[i] != 0x40 or rx[i + 1] != 2:
                raise ConnectionError(f"unexpected packet from the broker: {rx[i : i + 4].hex()}")
            pid = int.from_bytes(rx[i + 2 : i + 4], "big")
            if pid != self._ack_id:
                raise ConnectionError(f"PUBACK {pid} out of order (expected {self._ack_id})")
            self._ack_id = pid % 65_535 + 1
            self._inflight -= 1
            self.published += 1
            i += 4
        self._rx = rx[i:]

    def close(self) -> None:
        """Wait for every PUBACK, then DISCONNECT."""
        try:
            self._send()
            while self._inflight:
                self._read_acks()
            self._sock.sendall(b"\xe0\x00")
        finally:
            self._sock.close()


class _Pub(Protocol):
    published: int

    def publish(self, topic: str, payload: bytes) -> None: ...

    def close(self) -> None: ...


def _connect(job: PublishJob) -> _Pub:
    if job.client == "paho":
        return Publisher(MqttConfig(host=job.host, port=job.port), window=job.window)
    raw = RawPublisher(job.host, job.port, f"bench-pub-{os.getpid()}", window=job.window)
    raw.flush_each = job.rate is not None  # paced: every message leaves at once
    return raw


def _publish_worker(
    job: PublishJob, ready: mp.Queue[int | str], start: MpEvent, results: mp.Queue[PublishReport]
) -> None:
    try:
        pub = _connect(job)
    except (PublishError, OSError) as exc:  # reported to the parent, which fails the run
        ready.put(f"{type(exc).__name__}: {exc}")
        return
    ready.put(os.getpid())
    if not start.wait(60):
        pub.close()
        return
    t0 = time.time()
    deadline = t0 + job.max_s
    last_ms: dict[str, int] = {}
    topics = job.topics
    error: str | None = None
    try:
        for i in range(job.count):
            seq = job.first_seq + i
            topic = topics[seq % len(topics)]
            if job.rate is not None:
                delay = t0 + i / job.rate - time.time()
                if delay > 0:
                    time.sleep(delay)
            if job.base_ms is None:
                ms = max(last_ms.get(topic, 0) + 1, int(time.time() * 1000))
                last_ms[topic] = ms
            else:
                ms = job.base_ms + seq
            pub.publish(topic, payload(seq, ms))
            if not i % 1000 and time.time() > deadline:
                error = f"gave up after {job.max_s:g} s at {i} of {job.count}"
                break
        t_sent = time.time()
        pub.close()  # waits for every PUBACK
    except (PublishError, OSError) as exc:
        error = f"{type(exc).__name__}: {exc}"
        t_sent = time.time()
    results.put(PublishReport(job.first_seq, pub.published, t0, t_sent, time.time(), error))


class PublisherPool:
    """``k`` publisher processes splitting ``whole`` (its seqs and its rate) between them;
    :meth:`go` releases them together."""

    def __init__(self, whole: PublishJob, *, k: int) -> None:
        ctx = mp.get_context("spawn")
        self._ready: mp.Queue[int | str] = ctx.Queue()
        self._results: mp.Queue[PublishReport] = ctx.Queue()
        self._start = ctx.Event()
        n = whole.count
        self.n = n
        self.max_s = whole.max_s
        self._procs: list[mp.process.BaseProcess] = []
        per, extra = divmod(n, k)
        first = whole.first_seq
        share = None if whole.rate is None else whole.rate / k
        for j in range(k):
            count = per + (1 if j < extra else 0)
            job = replace(whole, first_seq=first, count=count, rate=share)
            first += count
            p = ctx.Process(
                target=_publish_worker,
                args=(job, self._ready, self._start, self._results),
                name=f"publisher-{j}",
                daemon=True,
            )
            p.start()
            self._procs.append(p)
        for _ in range(k):
            try:
                got = self._ready.get(timeout=30)
            except queue.Empty:
                self.kill()
                raise RuntimeError("publisher processes did not connect within 30 s") from None
            if isinstance(got, str):
                self.kill()
                raise RuntimeError(f"publisher failed to connect: {got}")

    def go(self) -> float:
        """Release the publishers; returns the wall-clock start time."""
        t0 = time.time()
        self._start.set()
        return t0

    def join(self) -> list[PublishReport]:
        reports: list[PublishReport] = []
        deadline = time.monotonic() + self.max_s + 60
        for _ in self._procs:
            try:
                reports.append(self._results.get(timeout=max(1.0, deadline - time.monotonic())))
            except queue.Empty:
                break
        for p in self._procs:
            p.join(max(0.1, deadline - time.monotonic()))
        self.kill()
        if len(reports) < len(self._procs):
            raise RuntimeError("a publisher process did not report")
        errors = [r.error for r in reports if r.error]
        if errors:
            raise RuntimeError(f"publisher failed: {errors[0]}")
        return reports

    def kill(self) -> None:
        for p in self._procs:
            if p.is_alive():
                p.kill()
                p.join(5)


def publish_rate(reports: Sequence[PublishReport]) -> float:
    """Messages per second the broker acknowledged, over the whole publish."""
    n = sum(r.published for r in reports)
    span = max(r.acked for r in reports) - min(r.started for r in reports)
    return n / span if span > 0 else 0.0


# --------------------------------------------------------------------------- ingest process


def ingest_env(
    tag: str,
    mqtt_port: int,
    influx_url: str,
    state_dir: Path,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Environment overrides (TOML literals) pointing the sample config at private services."""
    env = {
        "YUKIMIZU_CONFIG": str(SAMPLE_CONFIG),
        "YUKIMIZU_MQTT__HOST": '"127.0.0.1"',
        "YUKIMIZU_MQTT__PORT": str(mqtt_port),
        "YUKIMIZU_MQTT__TOPIC_PREFIX": f'"{tag}"',
        "YUKIMIZU_MQTT__CLIENT_ID": f'"ingest-{tag}"',
        "YUKIMIZU_MQTT__LORAWAN_TOPICS": f'["{tag}-lora/application/+/device/+/event/up"]',
        "YUKIMIZU_INFLUX__URL": f'"{influx_url}"',
        "YUKIMIZU_INFLUX__DATABASE": f'"{tag}"',
        "YUKIMIZU_INGEST__STATE_DIR": f'"{state_dir}"',
    }
    env.update(extra or {})
    return env


_SUMMARY = re.compile(r"ingest stopped: (.*)$", re.MULTILINE)


class IngestProcess:
    """``python -m cli ingest`` as deployed (:class:`devtools.processes.IngestProcess`),
    plus what a benchmark reads from it: peak RSS and the final summary line."""

    def __init__(self, env: Mapping[str, str], log_path: Path) -> None:
        self.process = processes.IngestProcess(env, log_path)
        self.peak_rss_mb = 0.0
        self.summary: dict[str, int] = {}

    def start(self, timeout_s: float = 30.0) -> None:
        """Start and wait until it is ready (subscribed: the broker's SUBACK arrived)."""
        self.process.start(timeout_s)

    def log(self) -> str:
        return self.process.log()

    def read_peak_rss(self) -> float:
        """VmHWM (peak resident set) from /proc, in MB; call before :meth:`stop`."""
        with contextlib.suppress(OSError):  # already gone: the last reading stands
            status = Path(f"/proc/{self.process.pid}/status").read_text()
            for line in status.splitlines():
                if line.startswith("VmHWM:"):
                    self.peak_rss_mb = max(self.peak_rss_mb, int(line.split()[1]) / 1024)
        return self.peak_rss_mb

    def stop(self, timeout_s: float = 30.0) -> dict[str, int]:
        """SIGTERM (ingest flushes, acks, disconnects), then parse its final summary."""
        if self.process.proc is None:
            return {}
        self.process.stop(timeout_s)
        m = _SUMMARY.search(self.log())
        if m:
            self.summary = {
                k: int(v) for k, v in (kv.split("=", 1) for kv in m.group(1).split()) if v.isdigit()
            }
        return self.summary


# --------------------------------------------------------------------------- InfluxDB probes


def count_points(influx: InfluxDB1, db: str, measurement: str = SNOW) -> int:
    return influx.count(measurement, "seq", db)


def seq_rows(influx: InfluxDB1, db: str, where: str = "") -> list[tuple[int, int]]:
    """(time_ms, seq) of every snow point (one query; fails if InfluxDB truncated it)."""
    q = f'SELECT "seq" FROM "{SNOW}"' + (f" WHERE {where}" if where else "")
    result: dict[str, Any] = influx.query(q, db, epoch="ms")
    first = result["results"][0]
    out: list[tuple[int, int]] = []
    for s in first.get("series", []):
        # 1.6.7 leaves "partial" set on a series it merged from 10,000-row chunks: ignore it
        # and let the caller count the rows.
        out += [(int(t), int(v)) for t, v in s["values"]]
    if first.get("partial"):
        raise RuntimeError("InfluxDB truncated the result (max-row-limit)")
    return out


@dataclass(frozen=True)
class SeqCheck:
    expected: int
    rows: int
    missing: int
    duplicated: int
    unexpected: int

    @property
    def ok(self) -> bool:
        bad = self.missing or self.duplicated or self.unexpected
        return self.rows == self.expected and not bad

    def __str__(self) -> str:
        if self.ok:
            return f"all {self.expected} seqs exactly once"
        return (
            f"{self.rows} rows for {self.expected} seqs: missing {self.missing}, "
            f"duplicated {self.duplicated}, unexpected {self.unexpected}"
        )


def check_seqs(seqs: Sequence[int], n: int) -> SeqCheck:
    seen: dict[int, int] = {}
    for s in seqs:
        seen[s] = seen.get(s, 0) + 1
    missing = sum(1 for s in range(n) if s not in seen)
    duplicated = sum(1 for c in seen.values() if c > 1)
    unexpected = sum(1 for s in seen if not 0 <= s < n)
    return SeqCheck(n, len(seqs), missing, duplicated, unexpected)


def wait_count(
    influx: InfluxDB1, db: str, n: int, timeout_s: float, interval_s: float = 0.05
) -> tuple[float | None, list[tuple[float, int]]]:
    """Poll COUNT until it reaches n; returns (wall time it did or None, [(time, count)])."""
    samples: list[tuple[float, int]] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        c = count_points(influx, db)
        now = time.time()
        samples.append((now, c))
        if c >= n:
            return now, samples
        time.sleep(interval_s)
    return None, samples


def steady_rate(samples: Sequence[tuple[float, int]], n: int) -> float:
    """Readings/s between 10 % and 90 % of n (ramp-up and tail excluded)."""
    lo = next((s for s in samples if s[1] >= n * 0.1), None)
    hi = next((s for s in samples if s[1] >= n * 0.9), None)
    if lo is None or hi is None or hi[0] <= lo[0]:
        return 0.0
    return (hi[1] - lo[1]) / (hi[0] - lo[0])


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted sequence."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, round(p / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[k]
