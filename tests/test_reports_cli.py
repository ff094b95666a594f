"""The report commands refuse nonsense and warn about empty reports, in Japanese by
default and in English with ``--lang en`` (docs/reports.md#refusals-and-warnings).

The real CLI (``cli.main``) against the session's real InfluxDB; readings go in through
ingest's processor, so they have the schema ingest writes.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli import main
from core.config import load_config, load_registry
from core.message import Message
from devtools.localstack import InfluxDB1
from ingest.pipeline import Processor
from ingest.service import limits_from
from reports.messages import EXIT_NO_DATA, EXIT_OK, EXIT_REFUSED, EXIT_UNWRITABLE
from tests.conftest import SAMPLE_CONFIG

# M001 (本町, litres) read at 00:00 JST on 1 Feb and 1 Mar 2026: 12 m³ used
READINGS = [
    ("yukimizu/water/M001", b'{"time":"2026-02-01T00:00:00+09:00","register_l":100000}'),
    ("yukimizu/water/M001", b'{"time":"2026-03-01T00:00:00+09:00","register_l":112000}'),
]


@pytest.fixture
def db(influx: InfluxDB1, tag: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    cfg = load_config(SAMPLE_CONFIG, environ={})
    proc = Processor(load_registry(cfg), limits_from(cfg))
    lines = []
    for topic, payload in READINGS:
        result = proc.process(Message(topic, payload, time.time()))
        assert result.reason is None, result.detail
        lines += result.lines
    influx.create_database(tag)
    influx.write(lines, tag)
    monkeypatch.setenv("YUKIMIZU_INFLUX__URL", f'"{influx.url}"')
    monkeypatch.setenv("YUKIMIZU_INFLUX__DATABASE", f'"{tag}"')
    yield tag


def _report(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(["-c", str(SAMPLE_CONFIG), "report", *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def _meter(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    return _report(capsys, "meter-reading", *args)


def test_meter_reading_with_data_is_written(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = _meter(capsys, "--date", "2026-03-01", "--district", "本町")
    assert (rc, err) == (EXIT_OK, "")
    rows = {r[0]: r for r in csv.reader(io.StringIO(out.removeprefix("\ufeff")))}
    assert rows["M001"][4:8] == ["112", "100", "12", "検針"]


@pytest.mark.parametrize("previous", ["2026-03-01", "2026-03-20"])
def test_previous_on_or_after_the_reading_date_is_refused(
    db: str, capsys: pytest.CaptureFixture[str], previous: str
) -> None:
    args = ["--date", "2026-03-01", "--previous", previous]
    rc, out, err = _meter(capsys, *args)
    assert rc == EXIT_REFUSED and out == ""
    assert err == (
        f"yukimizu: 前回検針日 {previous} が検針日 2026-03-01 より前ではありません。"
        "--previous には検針日より前の日付を指定してください。\n"
    )
    rc, out, err = _meter(capsys, *args, "--lang", "en")
    assert rc == EXIT_REFUSED and out == ""
    assert f"the previous reading date {previous} is not before the reading date" in err


def test_unknown_district_is_refused_listing_the_real_ones(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, err = _meter(capsys, "--date", "2026-03-01", "--district", "南町")
    assert rc == EXIT_REFUSED and out == ""
    assert err.startswith("yukimizu: 地区「南町」は登録されていません。登録されている地区: ")
    assert "本町" in err and "中町" in err
    rc, _, err = _meter(capsys, "--date", "2026-03-01", "--district", "南町", "--lang", "en")
    assert "district '南町' is not in the registry; registered districts:" in err


def test_off_schedule_and_future_dates_are_refused(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, err = _meter(capsys, "--date", "2026-03-15", "--district", "本町")
    assert rc == EXIT_REFUSED and out == ""
    assert "2026-03-15 は地区「本町」の検針日ではありません" in err and "--previous" in err
    rc, out, err = _meter(capsys, "--date", "2999-01-01")
    assert rc == EXIT_REFUSED and out == ""
    assert "検針日 2999-01-01 はまだ来ていません" in err
    rc, _, err = _report(capsys, "plow-daily", "--date", "2999-01-01", "--lang", "en")
    assert rc == EXIT_REFUSED and "the work day 2999-01-01 has not come yet" in err


def test_no_data_warns_and_writes_nothing(
    db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_file = tmp_path / "kenshin.csv"
    rc, out, err = _meter(capsys, "--date", "2025-12-01", "--out", str(out_file))
    assert rc == EXIT_NO_DATA and out == "" and not out_file.exists()
    assert err.startswith("yukimizu: 警告: 検針日 2025-12-01 00:00 の指針がどのメーターにも")
    assert "何も出力していません" in err
    rc, out, err = _report(capsys, "plow-daily", "--date", "2026-01-27")
    assert rc == EXIT_NO_DATA and out == ""
    assert "警告: 2026-01-27 に出動した除雪車の GPS 記録がありません" in err
    rc, out, err = _report(
        capsys, "plow-season", "--from", "2026-01-01", "--to", "2026-01-31", "--lang", "en"
    )
    assert rc == EXIT_NO_DATA and out == ""
    assert "warning: no GPS record of a plow dispatched from 2026-01-01 to 2026-01-31" in err


def test_plow_commands_refuse_an_unknown_contractor_and_a_reversed_period(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, err = _report(capsys, "plow-daily", "--date", "2026-01-27", "--contractor", "朝日")
    assert rc == EXIT_REFUSED and out == ""
    assert "業者「朝日」は登録されていません。登録されている業者: " in err
    assert "朝日建設" in err and "町直営" in err
    args = ["plow-season", "--from", "2026-03-31", "--to", "2025-12-01"]
    rc, out, err = _report(capsys, *args)
    assert rc == EXIT_REFUSED and out == ""
    assert "期間の始め 2026-03-31 が終わり 2025-12-01 より後です" in err


def test_a_malformed_date_is_refused_in_both_languages(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["report", "meter-reading", "--date", "2026-02-30"])
    assert exc.value.code == EXIT_REFUSED
    err = capsys.readouterr().err
    assert "日付は YYYY-MM-DD で指定してください / not a date (YYYY-MM-DD): '2026-02-30'" in err


def test_a_name_shift_jis_cannot_hold_stops_the_file_in_both_languages(
    db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    meters = (SAMPLE_CONFIG.parent / "meters.csv").read_text(encoding="utf-8")
    (tmp_path / "meters.csv").write_text(meters.replace("M001,本町", "M001,𠮷田"), "utf-8")
    monkeypatch.setenv("YUKIMIZU_REGISTRY__METERS", f'"{tmp_path / "meters.csv"}"')
    out_file = tmp_path / "kenshin.csv"
    args = ["--date", "2026-03-01", "--district", "𠮷田", "--encoding", "shift_jis"]
    rc, out, err = _meter(capsys, *args, "--out", str(out_file))
    assert rc == EXIT_UNWRITABLE and out == "" and not out_file.exists()
    assert err == (
        "yukimizu: 1 行目 (M001) の列「地区」の '𠮷' (U+20BB7) は shift_jis (cp932) で"
        "書けません。--encoding utf-8-sig にするか、登録簿の名前を変えてください。"
        "何も出力していません。\n"
    )
    rc, _, err = _meter(capsys, *args, "--lang", "en")
    assert rc == EXIT_UNWRITABLE
    assert "row 1 (M001), column 地区: '𠮷' (U+20BB7) cannot be written in shift_jis" in err
