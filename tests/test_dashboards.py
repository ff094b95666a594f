"""Grafana dashboards: the committed JSON is the generator's, it is well-formed, and
every query runs against a real InfluxDB filled the way production fills it.

The data: the storm-morning-fleet and watched-household-leak scenarios through ingest's
processor (devtools.rulelab), the rules engine's derived series from a backtest of
every registered family, one live engine cycle (its ``yukimizu_rules`` statistics)
a real ingest's own metrics for a few seconds, and the alerts service's own figures
(a critical alert paged to a webhook and acknowledged). Grafana's macros are substituted
as Grafana would (``$timeFilter``, ``$__interval``, ``${__to:date:seconds}``, the
template variables with "All" selected); a query must succeed on every time range and
return the expected columns and groups on at least one. A panel reading a derived
series whose rule family is not registered yet fails, naming the family.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from core.config import Config, InfluxConfig, load_config, load_registry
from core.influxql import InfluxQuery
from core.publish import Publisher
from dashboards.boards import BOARDS
from dashboards.build import (
    GRAFANA_IMAGE,
    GRAFANA_VERSION,
    SCHEMA_VERSION,
    dashboards,
    differences,
    files,
)
from dashboards.model import DATASOURCE_UID, PRODUCER, Dashboard, Query
from devtools.localstack import InfluxDB1, Mosquitto
from devtools.rulelab import load_scenario_into, run_backtest
from rules.config import with_settings
from rules.engine import ENCODER, Engine, transition_line
from rules.families import BY_NAME, FAMILIES
from rules.sources import RecordedSource
from rules.state import SqliteState
from tests.alerts_support import Clock, http_double, service, transition
from tests.conftest import REPO, SAMPLE_CONFIG, make_config, running_ingest, wait_for

SCENARIOS = ("storm-morning-fleet", "watched-household-leak")
DAY_MS = 86_400_000


def _cfg() -> Config:
    return load_config(SAMPLE_CONFIG, environ={})


def _boards() -> list[Dashboard]:
    cfg = _cfg()
    return dashboards(cfg, load_registry(cfg))


def yaml_file(path: Path) -> Any:
    """Parse YAML with the parser docker-compose itself uses (Debian's python3-yaml,
    installed with docker-compose by scripts/setup.sh), as JSON."""
    out = subprocess.run(
        [
            "/usr/bin/python3",
            "-c",
            "import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert out.returncode == 0, f"{path}: {out.stderr}"
    return json.loads(out.stdout)


# ----------------------------------------------------------------------------- static


def test_committed_json_is_what_the_generator_makes() -> None:
    cfg = _cfg()
    bad = differences(cfg, load_registry(cfg))
    assert not bad, "\n".join(bad) + "\nrun `python -m dashboards` and commit"


def test_check_mode_notices_a_hand_edit(tmp_path: Path) -> None:
    cfg = _cfg()
    reg = load_registry(cfg)
    for rel, text in files(cfg, reg).items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text, encoding="utf-8")
    assert differences(cfg, reg, tmp_path) == []
    edited = tmp_path / "dashboards" / "yukimizu-snow.json"
    edited.write_text(edited.read_text(encoding="utf-8").replace("積雪深", "snow"), "utf-8")
    assert differences(cfg, reg, tmp_path) == [f"{edited}: differs from the generator"]


def test_dashboard_structure() -> None:
    uids = set()
    for d in _boards():
        j = d.to_json(SCHEMA_VERSION)
        assert j["schemaVersion"] == SCHEMA_VERSION
        assert j["uid"] not in uids and len(j["uid"]) <= 40
        uids.add(j["uid"])
        assert (
            j["timezone"] == "Asia/Tokyo" and j["refresh"] and j["time"]["from"].startswith("now")
        )
        assert re.search(r"[\u3040-\u30ff\u4e00-\u9fff]", j["title"]), "Japanese title"
        ids = [p["id"] for p in j["panels"]]
        assert len(ids) == len(set(ids))
        for p in j["panels"]:
            g = p["gridPos"]
            assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
            if p["type"] == "row":
                continue
            assert re.search(r"[\u3040-\u30ff\u4e00-\u9fff]", p["title"]), p["title"]
            assert p["datasource"]["uid"] == DATASOURCE_UID
            for t in p["targets"]:
                assert t["rawQuery"] is True and t["datasource"]["uid"] == DATASOURCE_UID
                assert t["query"].lstrip().upper().startswith(("SELECT", "SHOW")), t["query"]
        for v in j["templating"]["list"]:
            if v["type"] == "query":
                assert v["datasource"]["uid"] == DATASOURCE_UID
        for a in j["annotations"]["list"][1:]:
            assert a["datasource"]["uid"] == DATASOURCE_UID
    want = {"station", "meter", "vehicle", "district"}
    have = {v["name"] for d in _boards() for v in d.to_json(SCHEMA_VERSION)["templating"]["list"]}
    assert want <= have


def test_provisioning_files_parse_and_reference_the_datasource() -> None:
    prov = REPO / "deploy" / "grafana" / "provisioning"
    ds = yaml_file(prov / "datasources" / "influxdb.yml")
    (source,) = ds["datasources"]
    assert source["uid"] == DATASOURCE_UID
    assert source["type"] == "influxdb" and source["jsonData"]["version"] == "InfluxQL"
    assert source["jsonData"]["httpHeaderName1"] == "Authorization"
    assert source["secureJsonData"]["httpHeaderValue1"] == "Token ${INFLUX_TOKEN}"
    dash = yaml_file(prov / "dashboards" / "yukimizu.yml")
    (provider,) = dash["providers"]
    assert provider["type"] == "file"
    compose = yaml_file(REPO / "docker-compose.yml")
    mounts = compose["services"]["grafana"]["volumes"]
    # the provider's path is where compose mounts the generated dashboards
    assert f"./deploy/grafana/dashboards:{provider['options']['path']}:ro" in mounts
    uids_used = set()
    for path in sorted((REPO / "deploy" / "grafana" / "dashboards").glob("*.json")):
        text = path.read_text(encoding="utf-8")
        uids_used |= set(re.findall(r'"uid": "([^"]+)"', text))
        json.loads(text)
    known = {DATASOURCE_UID, "-- Grafana --"} | {d.uid for d in _boards()}
    assert uids_used <= known, uids_used - known
    # gazetteers the geomaps look things up in are mounted where the panels say
    for d in _boards():
        for p in d.panels:
            for layer in p.options.get("layers", []):
                gaz = layer.get("location", {}).get("gazetteer")
                if gaz:
                    name = Path(gaz).name
                    assert (REPO / "deploy" / "grafana" / "gazetteer" / name).is_file()
                    assert any(m.endswith(f"/usr/share/grafana/{gaz}:ro") for m in mounts), gaz


def test_compose_pins_the_grafana_the_schema_version_is_for() -> None:
    compose = yaml_file(REPO / "docker-compose.yml")
    assert compose["services"]["grafana"]["image"] == f"{GRAFANA_IMAGE}:{GRAFANA_VERSION}"


# ----------------------------------------------------------------------------- queries


@dataclass
class TimeRange:
    name: str
    start_ms: int
    end_ms: int
    interval_s: int


@dataclass
class Filled:
    db: str
    ranges: list[TimeRange]
    values: dict[str, str]  # template variable → its "All" value


def _transition_lines(result: Any) -> list[str]:
    """Transitions as the engine writes them."""
    return [transition_line(t) for _detected, t in result.transitions]


@pytest.fixture(scope="module")
def filled(
    influx: InfluxDB1, mosquitto: Mosquitto, tmp_path_factory: pytest.TempPathFactory
) -> Filled:
    tmp = tmp_path_factory.mktemp("dash")
    db = f"dash{int(time.time())}"
    cfg = _cfg()
    rcfg = with_settings(cfg, [])
    ranges = []
    for name in SCENARIOS:
        loaded = load_scenario_into(
            influx, db, REPO / "scenarios" / f"{name}.toml", cfg, truth_dir=tmp / name
        )
        result, _scores = run_backtest(influx.url, loaded, cfg, rcfg, families=FAMILIES, step_s=600)
        lines = [ENCODER.encode(p.measurement, p.tags, p.fields, p.time_ms) for p in result.points]
        lines += _transition_lines(result)
        if lines:
            influx.write(lines, db)
        # One live cycle at the end writes what only the engine writes (yukimizu_rules).
        state = SqliteState(tmp / f"{name}-rules.sqlite")
        engine = Engine(load_registry(cfg), rcfg, state, FAMILIES)
        client = InfluxQuery(InfluxConfig(url=influx.url, database=db, create_database=False))
        end = loaded.end_ms + DAY_MS
        engine.cycle(end, RecordedSource.load(client, engine.inputs, loaded.start_ms, end))
        influx.write([line for _i, line in state.pending_lines()], db)
        state.close()
        ranges.append(TimeRange(name, loaded.start_ms - 3_600_000, end, 300))
    # A real ingest for a few seconds: its own metrics and a dead letter.
    live_start = int(time.time() * 1000)
    icfg = make_config(
        tmp / "ingest", db, mosquitto, influx.url, overrides={"influx": {"database": f'"{db}"'}}
    )
    with running_ingest(icfg), Publisher(icfg.mqtt) as pub:
        for i in range(3):
            now = datetime.now(UTC).isoformat()
            pub.publish(f"{db}/snow/ST01", json.dumps({"time": now, "depth_cm": 5.0 + i}).encode())
            pub.publish(f"{db}/snow/ST01", b"{not json")
            time.sleep(1.2)
        wait_for(
            lambda: (
                influx.count("yukimizu_ingest", "written", db) >= 3
                and influx.count("yukimizu_deadletter", "count", db) >= 2
            ),
            what="ingest metrics",
        )
    # The alerts service, on the real clock: its figures (yukimizu_alerts, …_channel).
    # Two points 5 s apart (non_negative_difference needs two).
    (tmp / "alerts").mkdir()
    clock = Clock(datetime.now(UTC))
    with http_double() as hook:
        svc, outbox = service(
            tmp / "alerts",
            {
                "write_metrics": True,
                "receivers": {"oncall": {"webhook": {"url": hook.url}}},
                "routes": [{"receivers": ["oncall"]}],
            },
            clock,
            influx={"url": influx.url, "database": db},
        )
        outbox.add(transition("snow.depth", "ST01", at=clock.t))
        svc.tick()
        clock.advance(seconds=2)
        svc.store.acknowledge([1], "田中", "cli", clock.t.timestamp())
        svc.tick()
        clock.advance(seconds=3)
        assert svc.write_metrics(force=True) and len(hook.requests) == 2
        svc.store.close()
    ranges.append(TimeRange("live", live_start - 60_000, int(time.time() * 1000) + 60_000, 1))
    reg = load_registry(cfg)
    values = {
        "station": "(" + "|".join(sorted(reg.stations)) + ")",
        "meter": "(" + "|".join(sorted(reg.meters)) + ")",
        "vehicle": "(" + "|".join(sorted(reg.plows)) + ")",
        "district": "("
        + "|".join(
            sorted(
                {s.district for s in reg.stations.values()}
                | {m.district for m in reg.meters.values()}
            )
        )
        + ")",
    }
    return Filled(db, ranges, values)


def substitute(query: str, r: TimeRange, values: dict[str, str]) -> str:
    """Grafana's macros and template variables, as the InfluxDB datasource sends them."""
    out = query.replace("$timeFilter", f"time >= {r.start_ms}ms and time <= {r.end_ms}ms")
    out = out.replace("${__to:date:seconds}", str(r.end_ms // 1000))
    out = out.replace("$__interval_ms", str(r.interval_s * 1000))
    out = out.replace("$__interval", f"{r.interval_s}s")
    for name, value in sorted(values.items(), key=lambda kv: -len(kv[0])):
        out = out.replace(f"${name}", value)
    left = re.search(r"\$\{?\w+", out)  # a regex's "$/" anchor is not a variable
    assert left is None, f"unsubstituted {left.group()} in {out}"
    return out


def _check(query: Query, result: dict[str, Any]) -> str | None:
    """None if the answer has the expected shape, else what is wrong."""
    series = result["results"][0].get("series", [])
    if not series:
        return "no data"
    for s in series:
        missing = set(query.expect.columns) - set(s["columns"])
        if missing:
            return f"columns {sorted(missing)} missing from {s['columns']}"
        tags = set(s.get("tags", {}))
        if not set(query.expect.tags) <= tags:
            return f"not grouped by {query.expect.tags} (tags {sorted(tags)})"
    idx = [series[0]["columns"].index(c) for c in query.expect.columns]
    if not any(any(v[i] is not None for i in idx) for s in series for v in s["values"]):
        return "only empty values"
    return None


def _cases() -> list[tuple[str, str, Query, dict[str, str]]]:
    out = []
    for d in _boards():
        consts = {v["name"]: v["query"] for v in d.variables if v["type"] == "constant"}
        for title, qq in d.queries:
            out.append((d.uid, title, qq, consts))
        for v in d.variables:
            if v["type"] == "query":
                out.append((d.uid, f"variable {v['name']}", _var_query(v["query"]), consts))
    return out


def _var_query(text: str) -> Query:
    from dashboards.model import q  # noqa: PLC0415  (test helper)

    return q(text, ("value",), fmt="table")


CASES = _cases()


@pytest.mark.parametrize("case", CASES, ids=[f"{u}:{t}:{qq.ref}" for u, t, qq, _c in CASES])
def test_query_runs_and_returns_its_shape(
    filled: Filled, influx: InfluxDB1, case: tuple[str, str, Query, dict[str, str]]
) -> None:
    uid, title, query, consts = case
    fam = query.expect.family
    if fam is not None and fam != "engine" and fam not in BY_NAME:
        pytest.fail(
            f"{uid} panel {title!r} reads {_measurements(query.query)}, written by the rules "
            f"family {fam!r}, which rules.families.FAMILIES does not register yet "
            f"(registered: {sorted(BY_NAME)}): merge the {fam!r} family"
        )
    problems = []
    for r in filled.ranges:
        text = substitute(query.query, r, {**filled.values, **consts})
        res = influx.query(text, filled.db)  # raises on any InfluxQL error
        problem = _check(query, res)
        if problem is None:
            return
        problems.append(f"{r.name}: {problem}")
    if query.expect.may_be_empty:
        return
    pytest.fail(
        f"{uid} panel {title!r}: no range gave the expected shape: {problems}\n{query.query}"
    )


def _measurements(query: str) -> list[str]:
    return [m for m in re.findall(r'FROM "([^"]+)"', query)]


def test_every_derived_measurement_has_a_producer() -> None:
    from rules.schema import DERIVED  # noqa: PLC0415

    assert set(PRODUCER) == set(DERIVED)


def test_boards_cover_the_issue() -> None:
    assert set(BOARDS) == {"snow", "water", "plows", "system"}
