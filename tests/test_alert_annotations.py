"""Ten stations firing in one evaluation cycle are ten points in InfluxDB, and ten
annotations on the dashboards (docs/rules.md#the-transition-record).

InfluxDB keeps one point per measurement, tag set and time: with the subject a field,
ten ``snow.offline`` firings at one instant overwrote each other and one was left.
Against a real InfluxDB: the rules engine's ``alert_transition`` points through the
annotation queries Grafana runs (the committed dashboard JSON), and the alerts
service's ``alert_event`` points written by a real ``AlertService`` tick.
"""

from __future__ import annotations

import json
from pathlib import Path

from alerts.schema import ALERT_EVENT
from devtools.localstack import InfluxDB1
from rules.engine import transition_line
from rules.schema import ALERT_TRANSITION
from tests.alerts_support import T0, Clock, http_double, service, transition
from tests.conftest import REPO

STATIONS = [f"ST{i:02d}" for i in range(1, 11)]
T0_MS = int(T0.timestamp() * 1000)


def _offline(status: str = "firing") -> list[str]:
    return [
        transition_line(
            transition("snow.offline", s, status=status, severity="warning", message=f"{s}: 欠測")
        )
        for s in STATIONS
    ]


def _annotation_queries() -> dict[str, str]:
    """Dashboard file → the alert annotation query Grafana runs, as committed."""
    out = {}
    for path in sorted((REPO / "deploy" / "grafana" / "dashboards").glob("*.json")):
        for a in json.loads(path.read_text(encoding="utf-8"))["annotations"]["list"]:
            if ALERT_TRANSITION in a.get("query", ""):
                out[path.name] = a["query"]
    return out


def _time_filter(query: str, start_ms: int, end_ms: int) -> str:
    return query.replace("$timeFilter", f"time >= {start_ms}ms and time <= {end_ms}ms")


def test_ten_stations_firing_at_once_are_ten_annotations(influx: InfluxDB1, tag: str) -> None:
    influx.create_database(tag)
    influx.write(_offline(), tag)
    influx.write(_offline(), tag)  # the engine writing the cycle again overwrites itself
    queries = _annotation_queries()
    assert set(queries) == {f"yukimizu-{b}.json" for b in ("plows", "snow", "system", "water")}

    rows = influx.series(_time_filter(queries["yukimizu-snow.json"], T0_MS - 1, T0_MS + 1), tag)
    assert [(r["time"], r["subject"], r["rule"], r["status"], r["message"]) for r in rows] == [
        (T0_MS, s, "snow.offline", "firing", f"{s}: 欠測") for s in STATIONS
    ]
    for other in ("yukimizu-plows.json", "yukimizu-water.json", "yukimizu-system.json"):
        assert influx.series(_time_filter(queries[other], T0_MS - 1, T0_MS + 1), tag) == []
    (counted,) = influx.series(f'SELECT count("key") FROM "{ALERT_TRANSITION}"', tag)
    assert counted["count"] == 10


def test_ten_alert_events_at_once_are_ten_points(
    tmp_path: Path, influx: InfluxDB1, tag: str
) -> None:
    influx.create_database(tag)
    clock = Clock()
    with http_double() as hook:
        svc, out = service(
            tmp_path,
            {
                "write_events": True,
                "receivers": {"chat": {"webhook": {"url": hook.url}}},
                "routes": [{"receivers": ["chat"]}],
            },
            clock,
            influx={"url": influx.url, "database": tag},
        )
        out.add(*[transition("snow.offline", s, severity="warning") for s in STATIONS])
        svc.tick()
        ack_at = clock.t.timestamp() + 60
        assert len(svc.store.acknowledge(list(range(1, 11)), "sato", "cli", ack_at)) == 10
        svc.tick()
    assert len(hook.requests) == 1  # one group, one notice naming all ten
    rows = influx.series(
        f'SELECT "alert_id", "subject", "event", "by" FROM "{ALERT_EVENT}" ORDER BY time', tag
    )
    got = sorted((r["time"], r["event"], r["subject"], r["alert_id"], r["by"]) for r in rows)
    ack_ms = round(ack_at * 1000)
    assert got == sorted(
        [(T0_MS, "firing", s, i, None) for i, s in enumerate(STATIONS, 1)]
        + [(ack_ms, "acknowledged", s, i, "sato") for i, s in enumerate(STATIONS, 1)]
    )
