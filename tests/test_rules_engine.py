"""The engine's promises, on a real InfluxDB: exactly-once transitions across restarts,
re-evaluation and duplicated deliveries; late data at its event time; a backtest equal
to what the live scheduler produced.

A small family written here (the family contract is the seam) keeps these tests about
the engine; tests/test_rules_scenarios.py runs the real families on simulated towns.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import pandas as pd
import pytest

from core.config import InfluxConfig, load_config, load_registry
from core.influxql import InfluxQuery, QueryError
from devtools.localstack import InfluxDB1
from rules import backtest
from rules.config import RulesConfig
from rules.engine import Engine, steps
from rules.model import HOUR_MS, MINUTE_MS, Family, Finding, Output
from rules.sources import LiveSource, RecordedSource, normalise
from rules.state import MemoryState, SqliteState
from rules.transitions import Category, Severity, Status, read_outbox
from sensors.registry import Registry
from tests.conftest import SAMPLE_CONFIG

T0 = 1_768_400_000_000 - 1_768_400_000_000 % HOUR_MS  # 2026-01-14, on the hour


class HighUse(Family):
    """Fires while a meter's hourly use exceeds 100 L (event time: the hour's end)."""

    name: ClassVar[str] = "test"
    category: ClassVar[Category] = "water"
    inputs: ClassVar[dict[str, tuple[str, ...]]] = {"water_meter": ("register_l",)}

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.last: dict[str, tuple[int, float]] = {}

    def feed(self, measurement: str, frame: pd.DataFrame, out: Output) -> None:
        for dev, t, reg in zip(frame["device"], frame["time"], frame["register_l"], strict=True):
            prev = self.last.get(dev)
            self.last[dev] = (int(t), float(reg))
            if prev is None:
                continue
            use = float(reg) - prev[1]
            out.finding(
                Finding(
                    rule="test.high_use",
                    category="water",
                    subject=dev,
                    subject_kind="meter",
                    active=use > 100,
                    at_ms=int(t),
                    severity=Severity.WARNING,
                    values={"use_l": use},
                    message=f"{dev}: 1 時間に {use:.0f} L",
                )
            )
        out.point("water_hourly", {"device": "x"}, {"use_l": 1.0}, int(frame["time"].max()))


def _lines(device: str, uses: Sequence[float], start_ms: int, lag_s: float = 5.0) -> list[str]:
    reg = 1000.0
    out = []
    for i, u in enumerate([0.0, *uses]):
        reg += u
        out.append(
            f"water_meter,device={device},district=本町 register_l={reg},lag_s={lag_s} "
            f"{start_ms + i * HOUR_MS}"
        )
    return out


@pytest.fixture
def setup(influx: InfluxDB1, tag: str) -> tuple[Registry, RulesConfig, InfluxQuery]:
    cfg = load_config(SAMPLE_CONFIG, environ={})
    influx.create_database(tag)
    client = InfluxQuery(InfluxConfig(url=influx.url, database=tag, create_database=False))
    rcfg = RulesConfig(interval_s=600, lookback_h=36, warmup_days=0, write_derived=True)
    return load_registry(cfg), rcfg, client


def _live(
    registry: Registry, rcfg: RulesConfig, state: SqliteState | MemoryState, client: InfluxQuery
) -> Engine:
    return Engine(registry, rcfg, state, [HighUse])


def test_restart_reevaluation_and_duplicates_fire_once(
    setup: tuple[Registry, RulesConfig, InfluxQuery], influx: InfluxDB1, tag: str, tmp_path: Path
) -> None:
    registry, rcfg, client = setup
    influx.write(_lines("M001", [10, 150, 160, 5, 5], T0), tag)
    db = tmp_path / "rules.sqlite"
    src = LiveSource(client)
    eng = _live(registry, rcfg, SqliteState(db), client)
    first = eng.cycle(T0 + 3 * HOUR_MS, src, emit_after_ms=T0)
    assert [(t.status, t.event_time.hour) for t in first.transitions] == [
        (Status.FIRING, pd.Timestamp(T0 + 2 * HOUR_MS, unit="ms").hour)
    ]
    # Same window again, then a "restart" (a new engine on the same file), then the
    # same points delivered twice: nothing new.
    assert eng.cycle(T0 + 3 * HOUR_MS + 600_000, src).transitions == []
    eng.state.close()
    influx.write(_lines("M001", [10, 150, 160], T0), tag)
    eng = _live(registry, rcfg, SqliteState(db), client)
    assert eng.warm
    assert eng.cycle(T0 + 3 * HOUR_MS + 1_200_000, src).transitions == []
    later = eng.cycle(T0 + 6 * HOUR_MS, src)
    assert [t.status for t in later.transitions] == [Status.RESOLVED]
    assert later.transitions[0].event_time == pd.Timestamp(T0 + 4 * HOUR_MS, unit="ms", tz="UTC")
    eng.state.close()
    outbox = read_outbox(db).transitions
    assert [t.status for _i, t in outbox] == [Status.FIRING, Status.RESOLVED]
    assert [i for i, _t in outbox] == sorted(i for i, _t in outbox)


def test_a_late_daily_batch_fires_once_at_the_right_event_time(
    setup: tuple[Registry, RulesConfig, InfluxQuery], influx: InfluxDB1, tag: str
) -> None:
    registry, rcfg, client = setup
    # 24 hourly values, uploaded together 2 h after the last one (lag grows backwards).
    uses = [5.0] * 10 + [300.0] + [5.0] * 13
    lines = []
    for i, line in enumerate(_lines("M002", uses, T0)):
        lag = (24 - i) * 3600 + 7200
        lines.append(line.replace("lag_s=5.0", f"lag_s={lag}"))
    influx.write(lines, tag)
    eng = _live(registry, rcfg, MemoryState(), client)
    src = LiveSource(client)
    seen = []
    for step in steps(T0, T0 + 27 * HOUR_MS, 600_000):
        seen += [(step, t) for t in eng.cycle(step, src).transitions]
    upload = T0 + 26 * HOUR_MS
    assert [(t.status, t.event_time) for _s, t in seen] == [
        (Status.FIRING, pd.Timestamp(T0 + 11 * HOUR_MS, unit="ms", tz="UTC")),
        (Status.RESOLVED, pd.Timestamp(T0 + 12 * HOUR_MS, unit="ms", tz="UTC")),
    ]
    # Seen at the first step after the upload, not before it arrived.
    assert all(upload <= s < upload + 600_000 for s, _t in seen)


def test_backtest_equals_the_live_scheduler(
    setup: tuple[Registry, RulesConfig, InfluxQuery], influx: InfluxDB1, tag: str
) -> None:
    registry, rcfg, client = setup
    lines = _lines("M001", [5, 150, 5, 5, 200, 300, 5], T0, lag_s=30)
    lines += _lines("M003", [5] * 5 + [400, 5], T0 + 20 * MINUTE_MS, lag_s=4000)
    influx.write(lines, tag)
    end = T0 + 10 * HOUR_MS
    eng = _live(registry, rcfg, MemoryState(), client)
    live = []
    for step in steps(T0, end, 600_000):
        live += [
            (step, t.model_dump_json()) for t in eng.cycle(step, LiveSource(client)).transitions
        ]
    recorded = RecordedSource.load(client, eng.inputs, T0 - 1, end)
    bt = backtest.run(
        registry, rcfg, recorded, backtest.Steps(T0, end, 600_000), families=[HighUse]
    )
    assert len(live) == 6
    assert [(s, t.model_dump_json()) for s, t in bt.transitions] == live


def test_queries_keep_device_ids_as_text_and_report_a_missing_database(
    influx: InfluxDB1, tag: str
) -> None:
    influx.create_database(tag)
    influx.write(["m,device=007 x=1.0 1000", "m,device=a\\ b x=2.0 2000"], tag)
    client = InfluxQuery(InfluxConfig(url=influx.url, database=tag))
    df = client.frame('SELECT "x", "device" FROM "m"', str_columns=("device",))
    assert df["device"].tolist() == ["007", "a b"] and df["time"].tolist() == [1000, 2000]
    assert client.frame('SELECT "x" FROM "absent"').empty
    wrong = InfluxQuery(InfluxConfig(url=influx.url, database=f"{tag}_missing"))
    with pytest.raises(QueryError, match="database not found"):
        wrong.frame('SELECT "x" FROM "m"')


def test_points_received_in_one_millisecond_arrive_together_in_device_order() -> None:
    """``lag_s`` is stored to the millisecond. Two readings of ST01, 170 min apart, were
    received in the same millisecond by a catch-up (lags recorded 26882.600 and
    16682.599 s). Truncating lag × 1000 (16682598.99… ms) put the later reading 1 ms
    ahead; the snow family got it first and dropped the earlier one, and with it every
    reading between (a flaky false call in the whole-pipeline test). Both arrive in
    that millisecond, and are handed out in device order."""
    received = 1_796_608_982_600
    early, late = received - 26_882_600, received - 16_682_599
    df = pd.DataFrame(
        {
            "time": [late, early],
            "device": ["ST01", "ST01"],
            "depth_cm": [70.0, 60.0],
            "lag_s": [16682.599, 26882.6],
        }
    )
    out = normalise(df, ("depth_cm",))
    assert out["arrival"].tolist() == [received, received]
    order = out.sort_values(["arrival", "device", "time"], kind="stable")  # RecordedSource's
    assert order["time"].tolist() == [early, late]
