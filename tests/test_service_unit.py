"""The service's ack discipline, with a fake transport and writer behind their seams."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from core.config import Config, load_config
from core.influx import WriteError
from core.message import Message
from ingest.service import Ingest
from tests.conftest import SAMPLE_CONFIG, wait_for

NOW = time.time()


class FakeSource:
    def __init__(self, deliver: Callable[[Message], None]) -> None:
        self.deliver = deliver
        self.acked: list[Any] = []
        self.reconnects = 0
        self.session_lost = 0
        self.stopped = False

    def start(self) -> None:
        pass

    def pause(self) -> None:
        pass

    def ack(self, token: Any) -> None:
        self.acked.append(token)

    def stop(self) -> None:
        self.stopped = True


class FakeWriter:
    def __init__(self) -> None:
        self.up = True
        self.lines: list[str] = []
        self.calls = 0

    def write(self, lines: Sequence[str]) -> None:
        self.calls += 1
        if not self.up:
            raise WriteError("InfluxDB unreachable: test", None, False)
        bad = [ln for ln in lines if "seq=13i" in ln]
        if bad:
            raise WriteError(f"InfluxDB rejected the batch (400): {bad[0]}", 400, True)
        self.lines.extend(ln for ln in lines if ln.startswith("snow_depth"))

    def close(self) -> None:
        pass

    def describe(self) -> str:
        return "fake"


def make(cfg: Config, writer: FakeWriter) -> tuple[Ingest, FakeSource]:
    sources: list[FakeSource] = []

    def factory(deliver: Callable[[Message], None]) -> FakeSource:
        sources.append(FakeSource(deliver))
        return sources[0]

    ing = Ingest(cfg, writer=writer, source_factory=factory)
    return ing, sources[0]


def cfg_for(tmp_path: Path, **ingest: str) -> Config:
    env = {
        "YUKIMIZU_INGEST__STATE_DIR": f'"{tmp_path}"',
        "YUKIMIZU_INGEST__RETRY_INTERVAL_S": "0.05",
    }
    env.update({f"YUKIMIZU_INGEST__{k.upper()}": v for k, v in ingest.items()})
    return load_config(SAMPLE_CONFIG, environ=env)


def msg(i: int, good: bool = True) -> Message:
    body = {"time": NOW - 100 + i, "depth_cm": 1.0, "seq": i} if good else {"depth_cm": "x"}
    return Message("yukimizu/snow/ST01", json.dumps(body).encode(), NOW, token=i)


def start(ing: Ingest) -> tuple[threading.Event, threading.Thread]:
    stop = threading.Event()
    t = threading.Thread(target=ing.run, args=(stop,), daemon=True)
    t.start()
    return stop, t


def test_acks_follow_arrival_order_and_bad_points_cost_only_themselves(tmp_path: Path) -> None:
    writer = FakeWriter()
    ing, src = make(cfg_for(tmp_path), writer)
    for i in range(40):
        src.deliver(msg(i, good=(i % 10 != 5)))
    stop, t = start(ing)
    wait_for(lambda: len(src.acked) == 40, what="all acked")
    stop.set()
    t.join(10)
    assert src.acked == list(range(40))
    seqs = sorted(int(ln.split("seq=")[1].split("i")[0]) for ln in writer.lines)
    assert seqs == [i for i in range(40) if i % 10 != 5 and i != 13]
    assert ing.stats.by_reason == {"validation": 4, "influx_rejected": 1}


def test_nothing_acked_while_influx_down_and_spool_full(tmp_path: Path) -> None:
    writer = FakeWriter()
    writer.up = False
    ing, src = make(cfg_for(tmp_path, spool_max_bytes="1024", shutdown_timeout_s="0.5"), writer)
    for i in range(200):
        src.deliver(msg(i))
    stop, t = start(ing)
    # The first batch fills the spool and is acked: it is durable there.
    wait_for(lambda: not ing.spool.has_room(), what="spool full")
    wait_for(lambda: len(src.acked) == 200, what="spooled batch acked")
    # Now nothing is durable anywhere: ingest must hold these back.
    for i in range(200, 260):
        src.deliver(msg(i))
    time.sleep(1.0)
    assert len(src.acked) == 200
    assert ing.stats.received == 260
    stop.set()
    t.join(10)
    assert len(src.acked) == 200, "acked a message that is nowhere durable"
    assert src.stopped
