"""The engine at scale, on a real InfluxDB: imported history in a backtest, incremental
cycles equal to full re-reads, and shards whose union is one process's output."""

from __future__ import annotations

from pathlib import Path

import pytest

import cli
from devtools.localstack import InfluxDB1
from rules.model import HOUR_MS
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
