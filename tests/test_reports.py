"""Reports on real InfluxDB: 検針 over the winter season, 除雪作業日報 over two storms.

Scenarios go through ingest's processor into the session's InfluxDB
(devtools.rulelab.load_scenario_into); figures are checked against the simulators'
ground truth. Tolerances are the ones docs/reports.md#tolerances states.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openpyxl
import pandas as pd
import pytest

from cli import main
from core.config import Config, ConfigError, InfluxConfig, load_config, load_registry
from core.influxql import InfluxQuery
from devtools.localstack import InfluxDB1
from devtools.rulelab import Loaded, load_scenario_into, run_backtest
from reports.config import MeterReadingConfig, PlowReportConfig, load_reports_config
from reports.meter import (
    ESTIMATED,
    F_AWAY,
    F_LEAK,
    F_REVERSE,
    F_STUCK,
    MISSING,
    MeterReading,
    midnight_ms,
)
from reports.output import EncodeError, cell_text, csv_bytes, display_width
from reports.plow import PlowAnalysis, Trip
from rules.config import with_settings
from rules.engine import ENCODER
from rules.families import BY_NAME

REPO = Path(__file__).resolve().parent.parent
SAMPLE_CONFIG = REPO / "config" / "yukimizu.toml"
SCENARIOS = REPO / "scenarios"

# The season with data taken away around a reading date: M004 (hourly sender) loses
# its readings 22:30–02:30 around 1 Feb 00:00 (推定 across 5 h); M025 loses four days
# around it (欠測: more than estimate_max_gap_h apart).
OFFLINE = """
[[events]]
type = "fault"
device = "M004"
fault = "offline"
start = 2026-01-31T22:30:00+09:00
duration_h = 4

[[events]]
type = "fault"
device = "M025"
fault = "offline"
start = 2026-01-29T12:00:00+09:00
duration_h = 96
"""


@dataclass
class Db:
    cfg: Config
    q: InfluxQuery
    truth: Path
    database: str


def _load(influx: InfluxDB1, tmp: Path, name: str, scenario: Path) -> Db:
    cfg = load_config(SAMPLE_CONFIG, environ={})
    load_scenario_into(influx, name, scenario, cfg, truth_dir=tmp / "truth")
    q = InfluxQuery(InfluxConfig(url=influx.url, database=name, create_database=False))
    return Db(cfg, q, tmp / "truth", name)


@pytest.fixture(scope="module")
def season(influx: InfluxDB1, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Db]:
    tmp = tmp_path_factory.mktemp("season")
    scenario = tmp / "winter-season-offline.toml"
    scenario.write_text((SCENARIOS / "winter-season.toml").read_text() + OFFLINE)
    db = _load(influx, tmp, "reports_season", scenario)
    yield db
    db.q.close()


def _truth_use_m3(truth: Path) -> pd.DataFrame:
    """Net volume through each meter per hour: use + leak − backflow (what turns the
    register; scenarios/README.md#ground-truth), with the hour's start in epoch ms."""
    wh = pd.read_csv(truth / "water_hourly.csv")
    wh["ms"] = pd.to_datetime(wh["hour_start"], utc=True).map(lambda x: int(x.timestamp() * 1000))
    wh["net_l"] = wh["use_l"] + wh["leak_l"] - wh["reverse_l"]
    return wh


def test_meter_reading_equals_truth_across_rollover_swap_and_gaps(season: Db) -> None:
    wh = _truth_use_m3(season.truth)
    info = json.loads((season.truth / "truth.json").read_text())["meters"]
    swapped = {m for m, v in info.items() if v["swaps"]}
    assert swapped == {"M024", "M030"}
    registry = load_registry(season.cfg)
    # 1 Feb read every other month (Dec → Feb): M018's rollover; then an extra reading
    # on 31 Mar from 1 Feb: M009's rollover, both swaps, M016's backflow
    runs = [
        (dt.date(2026, 2, 1), None, MeterReadingConfig(schedule="bimonthly", months="even")),
        (dt.date(2026, 3, 31), dt.date(2026, 2, 1), MeterReadingConfig()),
    ]
    notes: dict[str, list[str]] = {}
    for day, previous, mcfg in runs:
        rows = MeterReading(season.q, registry, mcfg).rows(day, None, previous)
        assert len(rows) == len(registry.meters)
        for r in rows:
            notes.setdefault(r.meter, []).extend(r.notes + r.flags)
            sel = wh[
                (wh["meter"] == r.meter)
                & (wh["ms"] >= midnight_ms(r.previous))
                & (wh["ms"] < midnight_ms(r.date))
            ]
            truth_m3 = float(sel["net_l"].sum()) / 1000
            if r.meter == "M025":
                assert r.status == MISSING and r.use_m3 is None, r
                continue
            assert r.use_m3 is not None, r
            diff = r.use_m3 - truth_m3
            if r.meter == "M006" and day == dt.date(2026, 2, 1):
                # stuck 5 days in January: the register missed what flowed; flagged
                assert F_STUCK in r.flags and -5 < diff < -1, (r, truth_m3)
            elif r.meter in swapped and r.previous < dt.date(2026, 3, 10) < r.date:
                # three truncated registers (previous, old meter's last, new meter)
                assert abs(diff) < 2, (r, truth_m3)
            else:
                assert abs(diff) < 1, (r, truth_m3)  # two truncated registers
            if r.meter == "M004" and day == dt.date(2026, 2, 1):
                assert r.status == ESTIMATED and r.gap_h == pytest.approx(5.0), r
    assert any("桁あふれ" in n for n in notes["M018"])
    assert any("桁あふれ" in n for n in notes["M009"])
    assert any("メーター交換" in n for n in notes["M024"])
    assert any("メーター交換" in n for n in notes["M030"])
    assert F_REVERSE in notes["M016"]
    assert any(MISSING in n for n in notes["M025"])


def test_meter_reading_files(
    season: Db, tmp_path: Path, influx: InfluxDB1, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a leak transition of the rules (alert_transition) in the period flags 漏水疑い
    ms = midnight_ms(dt.date(2026, 2, 20))
    influx.write(
        [
            "alert_transition,category=water,rule=water.leak_continuous,severity=warning,"
            f'status=firing,subject=M028 key="water.leak_continuous:M028" {ms}'
        ],
        season.database,
    )
    monkeypatch.setenv("YUKIMIZU_INFLUX__URL", f'"{influx.url}"')
    monkeypatch.setenv("YUKIMIZU_INFLUX__DATABASE", f'"{season.database}"')
    base = ["-c", str(SAMPLE_CONFIG), "report", "meter-reading", "--date", "2026-03-31"]
    base += ["--previous", "2026-02-01"]
    out = {name: tmp_path / name for name in ("u.csv", "s.csv", "x.xlsx")}
    assert main([*base, "--out", str(out["u.csv"])]) == 0
    assert main([*base, "--encoding", "shift_jis", "--out", str(out["s.csv"])]) == 0
    assert main([*base, "--format", "xlsx", "--out", str(out["x.xlsx"])]) == 0
    raw_u, raw_s = out["u.csv"].read_bytes(), out["s.csv"].read_bytes()
    assert raw_u.startswith(b"\xef\xbb\xbf")  # the BOM Excel needs
    assert b"\r\n" in raw_s and b"\n" not in raw_s.replace(b"\r\n", b"")
    utf = list(csv.reader(io.StringIO(raw_u.decode("utf-8-sig"))))
    sjis = list(csv.reader(io.StringIO(raw_s.decode("shift_jis"))))
    assert utf == sjis and utf[0][:3] == ["水栓番号", "地区", "検針日"]
    by_id = {row[0]: row for row in utf[1:]}
    assert F_LEAK in by_id["M028"][13] and by_id["M001"][2] == "2026-03-31"
    assert by_id["M025"][6] == "" and by_id["M025"][7] == MISSING  # never a silent 0
    ws: Any = openpyxl.load_workbook(out["x.xlsx"]).active
    assert ws is not None
    assert _shown(ws) == utf
    assert isinstance(ws.cell(row=2, column=7).value, int)  # numbers stay numbers
    # the reading dates are Excel dates, not text
    for col in (3, 4):
        cell = ws.cell(row=2, column=col)
        assert cell.is_date and cell.number_format == "yyyy-mm-dd"
    assert ws.cell(row=2, column=3).value == dt.datetime(2026, 3, 31)
    # 備考 fits its column (Japanese characters count two)
    notes = [ws.cell(row=r, column=15).value or "" for r in range(2, ws.max_row + 1)]
    longest = max(display_width(str(n)) for n in notes)
    assert longest > 20 and ws.column_dimensions["O"].width >= min(longest, 80)


def _shown(ws: Any) -> list[list[str]]:
    """The sheet's cells as Excel shows them with their number formats."""
    out = []
    for row in ws.iter_rows():
        line = []
        for c in row:
            v = c.value
            if isinstance(v, dt.datetime) and c.number_format == "yyyy-mm-dd":
                v = v.date()
            line.append(cell_text(v))
        out.append(line)
    return out


def test_an_active_leak_flags_every_period_it_overlaps(season: Db, influx: InfluxDB1) -> None:
    """A leak alert that fired before the period began and is still active flags 漏水疑い;
    one resolved before the period does not; an active no-use notice flags the period
    with both readings (away or stopped)."""

    def transition(rule: str, status: str, meter: str, day: dt.date) -> str:
        return (
            f"alert_transition,category=water,rule={rule},severity=warning,"
            f'status={status},subject={meter} key="{rule}:{meter}" {midnight_ms(day)}'
        )

    leak = "water.leak_continuous"
    influx.write(
        [
            transition(leak, "firing", "M010", dt.date(2026, 1, 20)),  # still active
            transition("water.night_flow", "firing", "M011", dt.date(2026, 1, 5)),
            transition("water.night_flow", "resolved", "M011", dt.date(2026, 1, 25)),
            transition(leak, "firing", "M012", dt.date(2026, 1, 5)),
            transition(leak, "resolved", "M012", dt.date(2026, 2, 10)),  # ends inside
            transition("water.stuck", "firing", "M014", dt.date(2026, 1, 28)),
            # fired months before the period and never resolved: still active
            transition(leak, "firing", "M015", dt.date(2025, 6, 1)),
            # fired long ago, resolved, fired again just before the period
            transition("water.night_flow", "firing", "M017", dt.date(2025, 5, 1)),
            transition("water.night_flow", "resolved", "M017", dt.date(2025, 5, 9)),
            transition("water.night_flow", "firing", "M017", dt.date(2026, 1, 31)),
            # fired long ago on one rule and resolved; the other rule fired and
            # resolved inside an earlier period: nothing active
            transition(leak, "firing", "M019", dt.date(2025, 4, 1)),
            transition(leak, "resolved", "M019", dt.date(2025, 4, 3)),
            transition("water.night_flow", "firing", "M019", dt.date(2026, 1, 2)),
            transition("water.night_flow", "resolved", "M019", dt.date(2026, 1, 6)),
        ],
        season.database,
    )
    registry = load_registry(season.cfg)
    rows = MeterReading(season.q, registry, MeterReadingConfig()).rows(
        dt.date(2026, 3, 31), None, dt.date(2026, 2, 1)
    )
    flags = {r.meter: r.flags for r in rows}
    assert F_LEAK in flags["M010"]
    assert F_LEAK not in flags["M011"]
    assert F_LEAK in flags["M012"]
    assert F_STUCK in flags["M014"] and "不在" in F_STUCK and "メーター停止" in F_STUCK
    assert F_LEAK in flags["M015"]  # ten months before the period, still running
    assert F_LEAK in flags["M017"]
    assert F_LEAK not in flags["M019"]
    # a period that ended before the leak fired is not flagged
    earlier = MeterReading(season.q, registry, MeterReadingConfig()).rows(
        dt.date(2026, 1, 15), None, dt.date(2025, 12, 1)
    )
    assert F_LEAK not in {r.meter: r.flags for r in earlier}["M010"]


def test_a_standstill_inside_a_registered_away_period_reads_as_away(
    season: Db,
    influx: InfluxDB1,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """M006's register stands still from 20 Jan for five days. Registered in
    [rules.away], the 検針 file says so (不在届あり), not 指針不動 (away or stopped);
    a registration covering only part of the standstill leaves 指針不動. A no-use
    notice the rules fired before the household registered does not bring it back."""
    influx.write(
        [
            "alert_transition,category=water,rule=water.stuck,severity=info,status=firing,"
            f'subject=M006 key="water.stuck:M006" {midnight_ms(dt.date(2026, 1, 23))}'
        ],
        season.database,
    )
    monkeypatch.setenv("YUKIMIZU_INFLUX__URL", f'"{influx.url}"')
    monkeypatch.setenv("YUKIMIZU_INFLUX__DATABASE", f'"{season.database}"')
    base = ["-c", str(SAMPLE_CONFIG), "report", "meter-reading", "--date", "2026-02-01"]
    base += ["--previous", "2026-01-01"]

    def file_with(away: str) -> dict[str, list[str]]:
        monkeypatch.setenv("YUKIMIZU_RULES__AWAY", away)
        out = tmp_path / "m.csv"
        assert main([*base, "--out", str(out)]) == 0
        rows = list(csv.reader(io.StringIO(out.read_text(encoding="utf-8-sig"))))
        assert rows[0][13:15] == ["確認事項", "備考"]
        return {row[0]: row for row in rows[1:]}

    # the household's period, written without an offset (JST), round the standstill
    rows = file_with('{M006 = [["2026-01-19T12:00", "2026-01-25T12:00"]]}')
    flags, notes = rows["M006"][13].split("・"), rows["M006"][14]
    assert F_AWAY in flags and F_STUCK not in flags
    assert "不在届の期間 (2026-01-19 12:00–2026-01-25 12:00)" in notes
    assert "メーター停止" not in notes
    assert F_AWAY not in rows["M001"][13]  # other meters are not touched
    # two of the five days registered: three days of standstill remain unexplained
    rows = file_with('{M006 = [["2026-01-19T12:00", "2026-01-22T00:00"]]}')
    assert F_STUCK in rows["M006"][13].split("・") and F_AWAY not in rows["M006"][13]
    assert "不在(旅行・入院など)かメーター停止か" in rows["M006"][14]
    # a bad period stops the report naming the field, as it stops the rules
    monkeypatch.setenv("YUKIMIZU_RULES__AWAY", '{M006 = [["tuesday", "2026-01-22T00:00"]]}')
    assert main([*base, "--out", str(tmp_path / "bad.csv")]) == 2
    assert (
        "rules.away.M006.0.0: Value error, 'tuesday' is not a date-time" in capsys.readouterr().err
    )
    assert not (tmp_path / "bad.csv").exists()


def test_unencodable_name_fails_naming_the_row() -> None:
    header = ["水栓番号", "地区"]
    rows: list[list[object]] = [["M001", "本町"], ["M002", "𠮷田町"]]
    with pytest.raises(EncodeError, match=r"row 2 \(M002\), column 地区: '𠮷'"):
        csv_bytes(header, rows, "shift_jis")
    assert csv_bytes(header, rows, "utf-8-sig").decode("utf-8-sig").count("𠮷田町") == 1


# ----------------------------------------------------------------------- plowing

# heavy-snow-night with an extra dispatch at 23:40: its trips run past midnight
MIDNIGHT = """
[[events]]
type = "dispatch"
at = 2026-01-14T23:40:00+09:00
plows = ["P01", "P02"]
segments = ["R007", "R008", "R009", "R010", "R015", "R016", "R017", "R018"]
"""


@pytest.fixture(scope="module")
def storms(influx: InfluxDB1, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Db]]:
    out = {}
    for name in ("storm-morning-fleet", "heavy-snow-night"):
        tmp = tmp_path_factory.mktemp(name)
        out[name] = _load(
            influx, tmp, "reports_" + name.replace("-", "_"), SCENARIOS / f"{name}.toml"
        )
    tmp = tmp_path_factory.mktemp("midnight")
    scenario = tmp / "midnight.toml"
    scenario.write_text((SCENARIOS / "heavy-snow-night.toml").read_text() + MIDNIGHT)
    out["midnight"] = _load(influx, tmp, "reports_midnight", scenario)
    yield out
    for db in out.values():
        db.q.close()


def _ms(iso: str) -> int:
    return int(dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def _match(trip: Trip, truth_trips: list[dict[str, Any]]) -> dict[str, Any]:
    found = [
        t
        for t in truth_trips
        if t["plow"] == trip.plow and abs(_ms(str(t["leave_depot"])) - trip.leave_ms) < 120_000
    ]
    assert len(found) == 1, (trip.plow, trip.leave_ms)
    return found[0]


@pytest.mark.parametrize(
    ("scenario", "day", "n_trips"),
    [
        ("storm-morning-fleet", dt.date(2026, 1, 27), 7),
        ("heavy-snow-night", dt.date(2026, 1, 15), 5),
    ],
)
def test_plow_daily_equals_truth(
    storms: dict[str, Db], scenario: str, day: dt.date, n_trips: int
) -> None:
    db = storms[scenario]
    truth = json.loads((db.truth / "truth.json").read_text())
    passes = pd.read_csv(db.truth / "plow_segments.csv")
    cfg = PlowReportConfig()
    trips, dispatches = PlowAnalysis(db.q, load_registry(db.cfg), cfg).day(day)
    assert len(trips) == n_trips == len(truth["trips"])
    for trip in trips:
        t = _match(trip, truth["trips"])
        assert abs(trip.leave_ms - _ms(str(t["leave_depot"]))) <= 30_000
        assert abs(trip.back_ms - _ms(str(t["back_at_depot"]))) <= 30_000
        assert trip.blade_km == pytest.approx(float(str(t["plowed_km"])), rel=0.03)
        assert trip.travel_km == pytest.approx(float(str(t["transit_km"])), rel=0.06)
        stops = [s for s in t["idle"] if _ms(s["end"]) - _ms(s["start"]) > cfg.idle_min * 60_000]
        assert len(trip.idle) == len(stops)
        for (a, b), s in zip(trip.idle, stops, strict=True):
            assert abs(a - _ms(s["start"])) <= 30_000 and abs(b - _ms(s["end"])) <= 30_000
        assert [s.segment for s in trip.segments] == t["segments"]
        mine = passes[(passes["plow"] == trip.plow)]
        for s in trip.segments:
            spans = mine[mine["segment_id"] == s.segment]
            # plowed when 80 % is covered: during the blade-down pass (± 30 s of fixes)
            assert any(
                _ms(a) - 30_000 <= s.at_ms <= _ms(b) + 30_000
                for a, b in zip(spans["start"], spans["end"], strict=True)
            ), s
        assert trip.fixes > 100 and trip.dispatch_id
    # a dispatch starts when its first plow drives out of the depot (as the rules say):
    # minutes after the call, while the first plow warms up and leaves the yard
    dispatched = sorted(_ms(d["at"]) for d in truth["dispatches"])
    assert len(dispatches) == len(dispatched)
    for d, at in zip(dispatches, dispatched, strict=True):
        assert 0 <= d.start_ms - at <= 10 * 60_000
    for d in dispatches:
        assert d.priority_done == d.priority_total == 8 and d.work_time_s is not None


def test_night_across_midnight_stays_on_its_dispatch(storms: dict[str, Db]) -> None:
    db = storms["midnight"]
    analysis = PlowAnalysis(db.q, load_registry(db.cfg), PlowReportConfig())
    evening, ev_dispatches = analysis.day(dt.date(2026, 1, 14))
    morning, mo_dispatches = analysis.day(dt.date(2026, 1, 15))
    assert [d.id[:11] for d in ev_dispatches] == ["20260114-23"]
    assert [d.id[:11] for d in mo_dispatches] == ["20260115-03"]
    assert {tr.plow for tr in evening} == {"P01", "P02"}
    midnight = midnight_ms(dt.date(2026, 1, 15))
    assert any(tr.back_ms > midnight for tr in evening)  # the night crossed midnight…
    assert all(tr.dispatch_id == mo_dispatches[0].id for tr in morning)  # …and stayed on 14th
    assert len(morning) == 5


def test_plow_files_hold_the_same_figures(
    storms: dict[str, Db], tmp_path: Path, influx: InfluxDB1, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = storms["storm-morning-fleet"]
    monkeypatch.setenv("YUKIMIZU_INFLUX__URL", f'"{influx.url}"')
    monkeypatch.setenv("YUKIMIZU_INFLUX__DATABASE", f'"{db.database}"')
    base = ["-c", str(SAMPLE_CONFIG), "report", "plow-daily", "--date", "2026-01-27"]
    paths = {f: tmp_path / f"daily.{f}" for f in ("csv", "xlsx", "html")}
    for fmt, path in paths.items():
        assert main([*base, "--format", fmt, "--out", str(path)]) == 0
    rows = list(csv.reader(io.StringIO(paths["csv"].read_text("utf-8-sig"))))
    wb: Any = openpyxl.load_workbook(paths["xlsx"])
    ws = wb["車両別"]
    assert _shown(ws) == rows and len(rows) == 8
    header = rows[0]
    leave, work = ws.cell(row=2, column=4), ws.cell(row=2, column=header.index("作業時間") + 1)
    # times are Excel values a clerk can compute with: 出庫 a date-time, 作業時間 a
    # duration that sums past 24 h
    assert isinstance(leave.value, dt.datetime) and leave.number_format == "mm/dd hh:mm"
    assert isinstance(work.value, dt.timedelta) and work.number_format == "[h]:mm"
    total = sum((ws.cell(row=r, column=work.column).value for r in range(2, 9)), dt.timedelta())
    contractors = wb["業者別"]
    sums = [contractors.cell(row=r, column=3).value for r in range(2, contractors.max_row + 1)]
    assert all(isinstance(v, dt.timedelta) for v in sums)
    assert abs(sum(sums, dt.timedelta()) - total) <= dt.timedelta(minutes=len(sums))
    assert wb["出動"].cell(row=2, column=2).is_date
    segs = wb["除雪区間"]
    assert {segs.cell(row=r, column=7).value for r in range(2, segs.max_row + 1)} == {
        "GPS軌跡から算出"
    }
    # every column is as wide as its longest text
    for sheet in wb.worksheets:
        for col in sheet.iter_cols():
            longest = max(display_width(t) for t in (cell_text(c.value) for c in col))
            letter = col[0].column_letter
            assert sheet.column_dimensions[letter].width >= min(longest, 80), (sheet, letter)
    page = paths["html"].read_text("utf-8")
    assert "@page { size: A4" in page and "除雪作業日報 2026-01-27" in page
    assert "GPS測位" in page  # the fixes and time span the figures rest on
    # nothing a clerk reads is English (unit and device codes aside)
    text = re.sub(r"<style>.*?</style>|<[^>]+>", " ", page, flags=re.S)
    words = set(re.findall(r"[A-Za-z]{2,}", text)) - {"GPS", "km", "ID"}
    assert not words, words
    season = tmp_path / "season.csv"
    args = ["-c", str(SAMPLE_CONFIG), "report", "plow-season", "--from", "2026-01-26"]
    assert main([*args, "--to", "2026-01-28", "--out", str(season)]) == 0
    table = list(csv.reader(io.StringIO(season.read_text("utf-8-sig"))))
    assert [r[0][:11] for r in table[1:]] == ["20260127-02", "20260127-08"]
    assert all(r[4] for r in table[1:])  # 除雪作業時間 for every dispatch


def test_schedule_config_errors_name_the_field() -> None:
    cfg = load_config(SAMPLE_CONFIG, environ={})
    bad = {"meter_reading": {"districts": {"中町": {"schedule": "weekly"}}}}
    with pytest.raises(ConfigError, match=r"reports\.meter_reading\.districts\.中町\.schedule"):
        load_reports_config(cfg.model_copy(update={"reports": bad}))
    good = {"meter_reading": {"districts": {"中町": {"schedule": "bimonthly", "months": "even"}}}}
    rc = load_reports_config(cfg.model_copy(update={"reports": good})).meter_reading
    assert rc.for_district("中町").previous(dt.date(2026, 2, 1)) == dt.date(2025, 12, 1)
    assert not rc.for_district("中町").is_reading_date(dt.date(2026, 3, 1))
    assert rc.for_district("本町").previous(dt.date(2026, 3, 1)) == dt.date(2026, 2, 1)


def test_plow_daily_uses_the_rules_series(
    influx: InfluxDB1, tmp_path: Path, storms: dict[str, Db]
) -> None:
    """With the rules' segment_status and dispatch in InfluxDB the report takes them,
    and tells the same story as its own GPS computation."""
    db = _load(influx, tmp_path, "reports_with_rules", SCENARIOS / "storm-morning-fleet.toml")
    registry = load_registry(db.cfg)
    analysis = PlowAnalysis(db.q, registry, PlowReportConfig())
    own, own_d = analysis.day(dt.date(2026, 1, 27))
    loaded = Loaded(
        db.database,
        db.truth,
        midnight_ms(dt.date(2026, 1, 27)),
        midnight_ms(dt.date(2026, 1, 27)) + 18 * 3_600_000,
        0,
        0,
    )
    result, _ = run_backtest(
        influx.url, loaded, db.cfg, with_settings(db.cfg), families=[BY_NAME["plow"]], step_s=60
    )
    lines = [ENCODER.encode(p.measurement, p.tags, p.fields, p.time_ms) for p in result.points]
    influx.write(lines, db.database)
    rules, rules_d = analysis.day(dt.date(2026, 1, 27))
    assert [d.id for d in rules_d] == [d.id for d in own_d]
    assert len(rules) == len(own) == 7
    for a, b in zip(own, rules, strict=True):
        assert {s.source for s in a.segments} == {"gps"}
        assert {s.source for s in b.segments} == {"segment_status"}
        assert [s.segment for s in a.segments] == [s.segment for s in b.segments]
        assert all(
            abs(x.at_ms - y.at_ms) <= 60_000 for x, y in zip(a.segments, b.segments, strict=True)
        )
        assert a.dispatch_id == b.dispatch_id


@pytest.mark.skipif(
    shutil.which("chromium") is None or shutil.which("pdfinfo") is None,
    reason="chromium / poppler-utils not installed (scripts/setup.sh)",
)
def test_plow_html_prints_on_one_a4_page(
    storms: dict[str, Db], tmp_path: Path, influx: InfluxDB1, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The printable report in headless Chromium's print-to-PDF: one A4 page, and the
    業者 and 車両 columns on one line each (their text, not a character per line)."""
    db = storms["storm-morning-fleet"]
    monkeypatch.setenv("YUKIMIZU_INFLUX__URL", f'"{influx.url}"')
    monkeypatch.setenv("YUKIMIZU_INFLUX__DATABASE", f'"{db.database}"')
    html_path, pdf = tmp_path / "daily.html", tmp_path / "daily.pdf"
    base = ["-c", str(SAMPLE_CONFIG), "report", "plow-daily", "--date", "2026-01-27"]
    assert main([*base, "--format", "html", "--out", str(html_path)]) == 0
    subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--no-pdf-header-footer",
            f"--print-to-pdf={pdf}",
            html_path.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    info = subprocess.run(["pdfinfo", str(pdf)], check=True, capture_output=True, text=True)
    fields = dict(line.split(":", 1) for line in info.stdout.splitlines() if ":" in line)
    assert int(fields["Pages"]) == 1
    # A4 (595 x 842 pt), either way round
    w, h = (float(x) for x in re.findall(r"[\d.]+", fields["Page size"])[:2])
    assert sorted((round(w), round(h))) == [595, 842]
    # printed at its size, not shrunk to fit: the 13 pt title's six characters are
    # 6 x 13 pt wide (Chromium scales the whole page down when anything overflows)
    boxes = subprocess.run(
        ["pdftotext", "-bbox", str(pdf), "-"], check=True, capture_output=True, text=True
    ).stdout
    title = re.search(r'xMin="([\d.]+)"[^>]*xMax="([\d.]+)"[^>]*>除雪作業日報<', boxes)
    assert title is not None
    assert float(title[2]) - float(title[1]) == pytest.approx(6 * 13, rel=0.02)
    text = subprocess.run(
        ["pdftotext", "-layout", str(pdf), "-"], check=True, capture_output=True, text=True
    ).stdout
    # a contractor's name and a vehicle id each stand whole on a line of the table
    registry = load_registry(db.cfg)
    for plow in ("P01", "P02"):
        contractor = registry.plows[plow].contractor
        assert any(plow in line and contractor in line for line in text.splitlines()), plow
