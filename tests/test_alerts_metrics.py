"""The alerts service's own figures in a real InfluxDB (docs/alerts.md#own-figures):
notifications sent, failed and retried per channel, acknowledgements, escalations, the
time to acknowledge and the critical alerts still unacknowledged after 15 minutes, as
the システム board reads them. Webhooks are real local HTTP servers; time is a fake
clock driving :meth:`AlertService.tick`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import dashboards.model
from alerts.schema import ALERTS_STATS, CHANNEL_STATS
from devtools.localstack import InfluxDB1
from tests.alerts_support import Clock, http_double, service, transition

ESCALATION = {
    "write_metrics": True,
    "metrics_interval_s": 60,
    "repeat_interval_min": 600,
    "retry": {"backoff_s": 30},
    "routes": [{"escalation": "plow"}],
    "escalations": {
        "plow": {
            "steps": [
                {"targets": ["primary"], "after_min": 10},
                {"targets": ["secondary"], "after_min": 10},
                {"targets": ["supervisor"]},
            ]
        }
    },
}


def _points(influx: InfluxDB1, db: str, measurement: str) -> list[dict[str, Any]]:
    return list(influx.series(f'SELECT * FROM "{measurement}" ORDER BY time', db))


def test_figures_reach_influxdb_as_the_system_board_reads_them(
    tmp_path: Path, influx: InfluxDB1, tag: str
) -> None:
    influx.create_database(tag)
    clock = Clock()  # 03:00 JST
    # the primary's webhook answers 503 once: one failure, retried on the same channel
    with http_double([(503, {})]) as p, http_double() as s, http_double() as sup:
        receivers = {
            n: {"webhook": {"url": d.url}}
            for n, d in zip(("primary", "secondary", "supervisor"), (p, s, sup), strict=True)
        }
        svc, out = service(
            tmp_path,
            {**ESCALATION, "receivers": receivers},
            clock,
            influx={"url": influx.url, "database": tag},
        )
        out.add(transition("snow.dispatch", "town", subject_kind="town"))
        for _ in range(26):  # t0 … t0 + 25 min, a tick a minute
            svc.tick()
            clock.advance(minutes=1)
        # nobody answered for 25 min: the secondary (t0+10) and the supervisor (t0+20)
        assert (len(p.requests), len(s.requests), len(sup.requests)) == (2, 1, 1)
        svc.store.acknowledge([1], "田中", "cli", clock.t.timestamp())
        for _ in range(3):
            svc.tick()
            clock.advance(minutes=1)
        assert svc.write_metrics(force=True)
        svc.store.close()

    rows = _points(influx, tag, ALERTS_STATS)
    assert len(rows) >= 28  # one a minute, and the last one forced
    minute = [(r["time"] - rows[0]["time"]) // 60_000 for r in rows]
    unacked = dict(zip(minute, (r["unacked_critical"] for r in rows), strict=False))
    # critical, firing, unacknowledged: counted from 15 min on, until acknowledged
    assert unacked[14] == 0 and unacked[15] == 1 and unacked[25] == 1 and unacked[26] == 0
    last = rows[-1]
    assert last["firing"] == 1 and last["acknowledged"] == 1
    assert last["escalations"] == 2  # secondary, then supervisor
    assert last["ack_notices"] == 3  # the three paged learn who took it
    assert last["open_acknowledged"] == 1 and last["open_firing"] == 0
    acked = [r for r in rows if r["ack_s_max"] is not None]
    assert len(acked) == 1 and acked[0]["ack_s_max"] == pytest.approx(26 * 60)
    channel = _points(influx, tag, CHANNEL_STATS)
    webhook = [r for r in channel if r["channel"] == "webhook"][-1]
    # 3 pages + 3 notices sent; the one 503 failed and was retried
    assert (webhook["sent"], webhook["failed"], webhook["retried"]) == (6, 1, 1)


def test_influxdb_away_loses_nothing_but_the_points(tmp_path: Path) -> None:
    """InfluxDB not answering: the figures are dropped, the service pages on."""
    clock = Clock()
    with http_double() as hook:
        svc, out = service(
            tmp_path,
            {
                "write_metrics": True,
                "receivers": {"oncall": {"webhook": {"url": hook.url}}},
                "routes": [{"receivers": ["oncall"]}],
            },
            clock,
            influx={"url": "http://127.0.0.1:9", "database": "none", "timeout_s": 2},
        )
        out.add(transition("snow.depth", "ST01"))
        svc.tick()
        assert len(hook.requests) == 1
        assert not svc.write_metrics(force=True)
        svc.store.close()


def test_the_board_reads_the_measurements_the_service_writes() -> None:
    assert dashboards.model.ALERTS_STATS == ALERTS_STATS
    assert dashboards.model.ALERTS_CHANNEL_STATS == CHANNEL_STATS
