"""The engine at scale, on a real InfluxDB: imported history in a backtest, incremental
cycles equal to full re-reads, and shards whose union is one process's output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import cli
from core.config import InfluxConfig, load_config, load_registry
from core.influxql import InfluxQuery, QueryError
from devtools.localstack import InfluxDB1
from devtools.rulelab import load_scenario_into
from rules import backtest
from rules.config import with_settings
from rules.engine import Engine, steps
from rules.families import FAMILIES
from rules.model import HOUR_MS, Point, ms_to_dt
from rules.shards import Shard
from rules.sources import LiveSource, RecordedSource, query_frame
from rules.state import MemoryState, SqliteState
from rules.transitions import Severity, Status, Transition, read_outbox
from tests.conftest import SAMPLE_CONFIG

T0 = 1_768_400_000_000 - 1_768_400_000_000 % HOUR_MS  # 2026-01-14, on the hour


def _meter_lines(device: str, start_ms: int, hours: int, lag_s: float, back_at: int) -> list[str]:
    """Hourly registers rising 5 L an hour, stepping back 10 L at hour ``back_at``."""
    reg = 1000.0
    out = []
    for h in range(hours):
        reg += -10.0 if h == back_at else 5.0
        out.append(
            f"water_meter,device={device},district=本町 register_l={reg},lag_s={lag_s} "
            f"{start_ms + h * HOUR_MS}"
        )
    return out


@pytest.fixture
def env(influx: InfluxDB1, tag: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    influx.create_database(tag)
    monkeypatch.setenv("YUKIMIZU_CONFIG", str(SAMPLE_CONFIG))
    monkeypatch.setenv("YUKIMIZU_INFLUX__URL", f'"{influx.url}"')
    monkeypatch.setenv("YUKIMIZU_INFLUX__DATABASE", f'"{tag}"')
    monkeypatch.setenv("YUKIMIZU_RULES__STATE_DIR", f'"{tmp_path / "rules"}"')
    monkeypatch.setenv("YUKIMIZU_RULES__WARMUP_DAYS", "1")
    return tag


def _backtest(capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    start = "2026-01-14T09:00:00+09:00"
    end = "2026-01-15T12:00:00+09:00"
    argv = ["rules", "backtest", "--from", start, "--to", end, "--step", "600"]
    argv += ["--rule", "water.reverse"]
    assert cli.main([*argv, *extra]) == 0
    return capsys.readouterr().out


def test_a_backtest_of_imported_history_says_so_and_can_count_device_time(
    influx: InfluxDB1, env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # A vendor's export imported 60 days later: lag_s says the points arrived then.
    influx.write(_meter_lines("M001", T0, 12, lag_s=60 * 86_400.0, back_at=6), env)
    out = _backtest(capsys, "--lang", "en")
    assert "0 points, 0 transitions" in out
    assert "12 of the 12 points of this period arrived after its end" in out
    assert "median lag 60.0 days" in out
    assert "--arrival device" in out

    ja = _backtest(capsys)
    assert "12 点は期間の終了後に届いています" in ja

    device = _backtest(capsys, "--arrival", "device", "--lang", "en")
    assert "12 points, 2 transitions" in device
    assert "arrived after its end" not in device
    lines = [x for x in device.splitlines() if "water.reverse" in x]
    assert len(lines) == 2 and "M001" in lines[0]


def test_live_data_gets_no_import_note(
    influx: InfluxDB1, env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    influx.write(_meter_lines("M001", T0, 12, lag_s=30.0, back_at=6), env)
    out = _backtest(capsys, "--lang", "en")
    assert "12 points, 2 transitions" in out
    assert "arrived after" not in out


SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
STEP_MS = 600_000
SEASON_STEP_MS = 3_600_000  # a season in ~2,900 steps; the union holds at any step


def _live_run(
    engine: Engine, grid: list[int], client: InfluxQuery, *, full: bool, start_ms: int
) -> tuple[list[tuple[int, str]], list[Point], LiveSource]:
    source = LiveSource(client)
    transitions: list[tuple[int, str]] = []
    points: list[Point] = []
    for i, now in enumerate(grid):
        if full:
            engine.read_through_ms = None  # as if every cycle were a start-up
        cyc = engine.cycle(now, source, emit_after_ms=start_ms if i == 0 else None)
        transitions += [(now, t.model_dump_json()) for t in cyc.transitions]
        points += cyc.points
    return transitions, points, source


def test_incremental_cycles_equal_full_rereads_and_the_backtest(
    influx: InfluxDB1, tag: str, tmp_path: Path
) -> None:
    cfg = load_config(SAMPLE_CONFIG, environ={})
    scenario = SCENARIOS / "heavy-snow-night.toml"
    loaded = load_scenario_into(influx, tag, scenario, cfg, truth_dir=tmp_path / "t")
    # Every reading delivered twice (a redelivery after a crash): the same points.
    load_scenario_into(influx, tag, scenario, cfg, truth_dir=tmp_path / "t2")
    client = InfluxQuery(InfluxConfig(url=influx.url, database=tag, create_database=False))
    registry = load_registry(cfg)
    rcfg = with_settings(cfg)
    end = loaded.end_ms + 86_400_000  # the last daily uploads arrive after the end
    grid = steps(loaded.start_ms, end, STEP_MS)

    inc = Engine(registry, rcfg, SqliteState(tmp_path / "inc.sqlite"), FAMILIES)
    inc_t, inc_p, source = _live_run(inc, grid, client, full=False, start_ms=loaded.start_ms)
    full = Engine(registry, rcfg, SqliteState(tmp_path / "full.sqlite"), FAMILIES)
    full_t, full_p, full_source = _live_run(full, grid, client, full=True, start_ms=loaded.start_ms)

    assert source.full_reads == 1 and source.incremental_reads == len(grid) - 1
    assert full_source.full_reads == len(grid)
    assert inc_t == full_t
    assert inc_p == full_p
    recorded = RecordedSource.load(client, inc.inputs, loaded.start_ms - 1, end)
    bt = backtest.run(registry, rcfg, recorded, backtest.Steps(loaded.start_ms, end, STEP_MS))
    assert inc_t == [(s, t.model_dump_json()) for s, t in bt.transitions]
    rules = {json.loads(t)["rule"] for _s, t in inc_t}
    assert {"snow.dispatch", "water.stale"} <= rules, rules
    # Late data was part of it: daily uploads that arrived hours after their device time.
    late = client.raw('SELECT count("lag_s") FROM "water_meter" WHERE "lag_s" > 7200')
    assert late[0]["series"][0]["values"][0][1] > 0


def test_a_spool_replayed_by_ingest_makes_the_next_cycle_reread_the_window(
    influx: InfluxDB1, tag: str
) -> None:
    influx.create_database(tag)
    client = InfluxQuery(InfluxConfig(url=influx.url, database=tag, create_database=False))
    inputs = {"water_meter": ("register_l",)}
    lookback = {"water_meter": 36 * HOUR_MS}
    now = T0 + 30 * HOUR_MS
    stats = "yukimizu_ingest,client_id=ingest-a spooled={}i,spool_depth={}i {}"
    influx.write([stats.format(0, 0, now - 60_000)], tag)
    source = LiveSource(client)
    source.visible(inputs, now, lookback, None)
    source.committed(now)
    source.visible(inputs, now + 60_000, lookback, now)
    source.committed(now + 60_000)
    assert (source.full_reads, source.incremental_reads) == (1, 1)
    # InfluxDB was away: ingest spooled a reading received hours ago (lag 30 s) and
    # writes it now; the arrival query cannot find it, the re-read does.
    influx.write(_meter_lines("M001", T0 + 20 * HOUR_MS, 1, lag_s=30.0, back_at=-1), tag)
    influx.write([stats.format(1, 1, now + 90_000)], tag)
    seen = source.visible(inputs, now + 120_000, lookback, now + 60_000)
    assert source.full_reads == 2 and len(seen["water_meter"]) == 1
    source.committed(now + 120_000)
    influx.write([stats.format(1, 0, now + 150_000)], tag)  # drained
    source.visible(inputs, now + 180_000, lookback, now + 120_000)
    source.committed(now + 180_000)
    assert source.full_reads == 3  # once more after the spool emptied
    source.visible(inputs, now + 240_000, lookback, now + 180_000)
    assert (source.full_reads, source.incremental_reads) == (3, 2)


def test_two_shards_together_give_what_one_process_gives_on_a_season(
    influx: InfluxDB1, tag: str, tmp_path: Path
) -> None:
    cfg = load_config(SAMPLE_CONFIG, environ={})
    season = SCENARIOS / "winter-season.toml"
    loaded = load_scenario_into(influx, tag, season, cfg, truth_dir=tmp_path / "t")
    client = InfluxQuery(InfluxConfig(url=influx.url, database=tag, create_database=False))
    registry = load_registry(cfg)
    rcfg = with_settings(cfg)
    end = loaded.end_ms + 86_400_000
    inputs = Engine(registry, rcfg, MemoryState(), FAMILIES).inputs
    recorded = RecordedSource.load(client, inputs, loaded.start_ms - 1, end)

    def run(shard: Shard | None) -> list[tuple[int, str]]:
        res = backtest.run(
            registry,
            rcfg,
            recorded.again(),
            backtest.Steps(loaded.start_ms, end, SEASON_STEP_MS),
            shard=shard,
        )
        return [(s, t.model_dump_json()) for s, t in res.transitions]

    one = run(None)
    first, second = run(Shard.parse("0/2")), run(Shard.parse("1/2"))
    assert sorted(first + second) == sorted(one)
    keys = [{json.loads(t)["key"] for _s, t in part} for part in (first, second)]
    assert not keys[0] & keys[1]  # no subject on both: nothing alerts twice
    rules = [{json.loads(t)["rule"].split(".")[0] for _s, t in part} for part in (first, second)]
    assert {"snow", "plow", "water"} <= rules[0]
    assert rules[1] == {"water"}  # the town-wide families run on shard 0 only


def test_shards_share_one_outbox_and_keep_their_statuses_apart(tmp_path: Path) -> None:
    db = tmp_path / "rules.sqlite"
    a, b = SqliteState(db, "_shard0of2"), SqliteState(db, "_shard1of2")
    for state, meter in ((a, "M001"), (b, "M002")):
        snap = state.load()
        t = Transition(
            key=f"water.reverse:{meter}",
            rule="water.reverse",
            category="water",
            subject=meter,
            subject_kind="meter",
            severity=Severity.WARNING,
            status=Status.FIRING,
            event_time=ms_to_dt(T0),
            detected_at=ms_to_dt(T0),
            message=meter,
        )
        snap.status[t.key] = (True, T0, t.model_dump_json())
        state.commit(snap, [t], [f"line {meter}"])
    assert [t.subject for _i, t in read_outbox(db).transitions] == ["M001", "M002"]
    assert list(a.load().status) == ["water.reverse:M001"]
    assert list(b.load().status) == ["water.reverse:M002"]
    assert [x for _i, x in b.pending_lines()] == ["line M002"]
    a.close()
    b.close()


def test_several_statements_in_one_request_come_back_apart(influx: InfluxDB1, tag: str) -> None:
    influx.create_database(tag)
    influx.write(["m,device=007 x=1.0,lag_s=2 1000", "m,device=a\\ b x=2.5 2000"], tag)
    client = InfluxQuery(InfluxConfig(url=influx.url, database=tag))
    got = client.frames(
        [
            'SELECT "x", "device" FROM "m" WHERE time <= 1000ms',
            'SELECT "x" FROM "m" WHERE time > 5000ms',  # nothing: no block
            'SELECT "x" AS "late", "device" FROM "m" WHERE time > 1000ms',
        ],
        str_columns=("device",),
    )
    assert [list(df.columns) for df in got] == [["time", "x", "device"], ["time", "late", "device"]]
    assert got[0]["device"].tolist() == ["007"] and got[1]["device"].tolist() == ["a b"]
    wrong = InfluxQuery(InfluxConfig(url=influx.url, database=f"{tag}_missing"))
    with pytest.raises(QueryError, match="database not found"):
        wrong.frames(['SELECT "x" FROM "m"'])
    # Only this shard's devices: ids with regex characters are matched literally.
    source = LiveSource(client, devices={"m": ["a b", "0.7"]})
    frames = source.visible({"m": ("x",)}, 10_000, {"m": 10_000})
    assert frames["m"]["device"].tolist() == ["a b"]


def test_a_streamed_period_hands_out_what_the_whole_period_in_memory_does(
    influx: InfluxDB1, tag: str
) -> None:
    # Hourly meters (three at the same instants, so chunks cut inside an instant),
    # one daily uploader (24 h late) and a burst of ten meters at one instant — more
    # than a chunk, read whole.
    influx.create_database(tag)
    lines = []
    for d in ("M001", "M002", "M003"):
        lines += _meter_lines(d, T0, 30, lag_s=5.0, back_at=-1)
    lines += _meter_lines("M004", T0, 30, lag_s=86_400.0, back_at=-1)
    burst = T0 + 12 * HOUR_MS + 1_800_000
    lines += [
        f"water_meter,device=B{i:02d},district=本町 register_l=1.0,lag_s=0 {burst}"
        for i in range(10)
    ]
    influx.write(lines, tag)
    client = InfluxQuery(InfluxConfig(url=influx.url, database=tag, create_database=False))
    inputs = {"water_meter": ("register_l",)}
    start, end = T0 - 1, T0 + 40 * HOUR_MS
    whole = RecordedSource(
        {"water_meter": query_frame(client, "water_meter", ("register_l",), start, end)}
    )
    streamed = RecordedSource.load(client, inputs, start, end, chunk_rows=4)
    lookback = {"water_meter": 36 * HOUR_MS}
    handed = 0
    key = ["arrival", "device", "time"]
    for now in steps(start, end, 600_000):
        a = whole.visible(inputs, now, lookback)["water_meter"]
        b = streamed.visible(inputs, now, lookback)["water_meter"]
        a, b = (x.sort_values(key).reset_index(drop=True) for x in (a, b))
        assert a[[*key, "register_l"]].to_dict("list") == b[[*key, "register_l"]].to_dict("list")
        handed += len(a)
    # the uploader's points from hour 17 on arrive after the end
    assert handed == 3 * 30 + 10 + 17
    late = streamed.arrived_after(end)
    assert (late.loaded, late.late) == (130, 13)
    assert late == whole.arrived_after(end)
    # replayed from the start for another engine: the same again
    again = streamed.again()
    seen = again.visible(inputs, end, {"water_meter": 40 * HOUR_MS})["water_meter"]
    assert len(seen) == 117 - 4  # but the four points at T0 are out of this look-back


def test_shard_0_judges_a_kind_silent_as_one_process_does(influx: InfluxDB1, tag: str) -> None:
    # system.kind_silent needs the newest arrival of every meter, also of the meters
    # shard 0 does not evaluate: here the other shard's meter keeps the kind alive.
    cfg = load_config(SAMPLE_CONFIG, environ={})
    registry = load_registry(cfg)
    rcfg = with_settings(cfg)
    shard = Shard.parse("0/2")
    own = next(m for m in sorted(registry.meters) if shard.owns(m))
    other = next(m for m in sorted(registry.meters) if not shard.owns(m))
    influx.create_database(tag)
    influx.write(_meter_lines(own, T0, 3, lag_s=5.0, back_at=-1), tag)
    influx.write(_meter_lines(other, T0, 6, lag_s=5.0, back_at=-1), tag)
    client = InfluxQuery(InfluxConfig(url=influx.url, database=tag, create_database=False))
    sharded = Engine(registry, rcfg, MemoryState(), FAMILIES, shard)
    one = Engine(registry, rcfg, MemoryState(), FAMILIES)
    sources = (LiveSource(client, devices=sharded.own_devices), LiveSource(client))

    def cycle(now: int) -> tuple[list[str], list[str]]:
        got = []
        for eng, source in zip((sharded, one), sources, strict=True):
            res = eng.cycle(now, source)
            got.append(
                [t.model_dump_json() for t in res.transitions if t.rule == "system.kind_silent"]
            )
        return got[0], got[1]

    assert cycle(T0 + 6 * HOUR_MS) == ([], [])  # the whole window at start-up
    last = T0 + 6 * HOUR_MS + 1_800_000
    influx.write(
        [f"water_meter,device={other},district=本町 register_l=2000.0,lag_s=5 {last}"], tag
    )
    assert cycle(T0 + 7 * HOUR_MS) == ([], [])  # arrived since: an incremental read
    assert sources[0].incremental_reads >= 1
    # 26 h after the own meter fell silent the kind still speaks through the other
    silent_at = last + 5_000 + 26 * HOUR_MS
    assert cycle(silent_at - 60_000) == ([], [])
    sharded_t, one_t = cycle(silent_at + 60_000)
    assert sharded_t == one_t and len(sharded_t) == 1
    t = Transition.model_validate_json(sharded_t[0])
    assert t.status == Status.FIRING and t.subject == "water"
    assert t.event_time == ms_to_dt(silent_at)
