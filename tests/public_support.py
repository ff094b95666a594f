"""Helpers for the public page's tests: derived points in the rules/schema.py shape,
distinctive water data that must never reach the output, a served site, a browser."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from core.config import Config, InfluxConfig, load_config, load_registry
from core.influxql import InfluxQuery
from core.lineproto import Encoder
from devtools.localstack import InfluxDB1
from publicpage.build import build
from publicpage.config import PublicConfig
from publicpage.serve import Server, make_server
from rules.engine import ENCODER
from sensors import schema as raw_schema
from sensors.registry import Registry
from tests.conftest import REPO

SAMPLE_CONFIG = REPO / "config" / "yukimizu.toml"
RAW = Encoder(raw_schema.TAGS, raw_schema.FIELDS)
HOUR = 3_600_000
MIN = 60_000
# Values that exist only in the water data: if any appears in a public file, it leaked.
WATER_MARKERS = ("M003", "M014", "987654.25", "4321.5", "13.75", "WATERLEAK")
AT = "2026-01-27T08:30:00+09:00"
AT_MS = int(datetime.fromisoformat(AT).timestamp() * 1000)

# segment → hours since plowed at AT (None: never plowed), one per band
AGES_H: dict[str, float | None] = {
    "R007": 0.5,
    "R008": 2.0,
    "R009": 4.0,
    "R010": 8.0,
    "R001": 18.0,
    "R002": 30.0,
    "R003": None,
}
INFERRED = {"R008"}


def sample_config() -> Config:
    return load_config(SAMPLE_CONFIG, environ={})


def registry() -> Registry:
    return load_registry(sample_config())


def synthetic_lines(reg: Registry, at_ms: int = AT_MS) -> list[str]:
    """Derived points in exactly the rules/schema.py shape, raw plow fixes, and water data."""
    lines = []
    for seg, age in AGES_H.items():
        if age is None:
            continue
        route = reg.routes[seg]
        t = at_ms - int(age * HOUR)
        # An older plowing first: the newest point must win.
        for when in (t - 26 * HOUR, t):
            lines.append(
                ENCODER.encode(
                    "segment_status",
                    {"segment": seg, "priority": str(route.priority)},
                    {
                        "plow": "P01",
                        "coverage": 0.93,
                        "inferred": seg in INFERRED,
                        "dispatch_id": "20260127-0300",
                    },
                    when,
                )
            )
    started = at_ms - int(5.5 * HOUR)  # 03:00 JST
    for t, state, done in ((started, "called", 0), (started + HOUR, "working", 8)):
        lines.append(
            ENCODER.encode(
                "dispatch",
                {"dispatch_id": "20260127-0300"},
                {
                    "state": state,
                    "started_s": started // 1000,
                    "priority_total": 12,
                    "priority_done": done,
                    "segments_total": 43,
                    "segments_done": done + 3,
                    "progress": (done + 3) / 43,
                    "work_time_s": 0,
                },
                t,
            )
        )
    hour0 = at_ms - at_ms % HOUR  # the hour in progress at at_ms: written, not complete
    for sid in reg.stations:
        for h in range(3):
            start = hour0 - h * HOUR
            # depth = 100 + the JST hour it starts at, to see which hour is shown
            fields: dict[str, object] = {
                "depth_cm": 100.0 + (start // HOUR + 9) % 24,
                "new_snow_cm": 1.0,
                "new_24h_cm": 21.0,
                "since_plowed_cm": 3.0,
                "air_temp_c": -5.0,
            }
            if sid == "ST02" and h == 1:
                # Silent station: the snow family still writes the hour (new snow
                # over 24 h rolls on), without a depth. Not station data.
                fields = {"new_24h_cm": 19.0}
            lines.append(
                ENCODER.encode(
                    "snow_hourly",
                    {"device": sid, "district": reg.stations[sid].district},
                    fields,
                    start,
                )
            )
    lines += plow_lines(reg, at_ms)
    lines += water_lines(at_ms)
    return lines


def plow_lines(reg: Registry, at_ms: int) -> list[str]:
    """P01 drives along R007; P02 stands at the depot; P03 stands for 30 min on a road."""
    out = []
    r = reg.routes["R007"].coords
    for k in range(20):
        lon, lat = r[k % len(r)]
        out.append(
            RAW.encode(
                "plow_position",
                {"device": "P01", "contractor": "町直営"},
                {"lat": lat, "lon": lon, "speed_kmh": 18.0, "blade_down": True},
                at_ms - (20 - k) * 10_000,
            )
        )
    assert reg.depot is not None
    dlon, dlat = reg.depot
    lon3, lat3 = reg.routes["R020"].coords[0]
    for k in range(30):
        t = at_ms - (30 - k) * MIN
        out.append(
            RAW.encode(
                "plow_position",
                {"device": "P02", "contractor": "朝日建設"},
                {"lat": dlat, "lon": dlon, "speed_kmh": 0.0},
                t,
            )
        )
        out.append(
            RAW.encode(
                "plow_position",
                {"device": "P03", "contractor": "朝日建設"},
                {"lat": lat3, "lon": lon3, "speed_kmh": 0.4},
                t,
            )
        )
    return out


def water_lines(at_ms: int) -> list[str]:
    out = []
    for k, meter in enumerate(("M003", "M014")):
        out.append(
            RAW.encode(
                "water_meter",
                {"device": meter, "district": "中町"},
                {"register_l": 987654.25, "flow_lph": 13.75, "alarm_leak": True},
                at_ms - (k + 1) * MIN,
            )
        )
        out.append(
            ENCODER.encode(
                "water_hourly",
                {"device": meter, "district": "中町"},
                {"use_l": 4321.5, "reverse_l": 0.0, "register_l": 987654.25},
                at_ms - 2 * HOUR,
            )
        )
        out.append(
            ENCODER.encode(
                "water_state",
                {"device": meter, "district": "中町"},
                {"state": "leak", "code": 2},
                at_ms - HOUR,
            )
        )
    out.append(
        ENCODER.encode(
            "alert_transition",
            {
                "rule": "water.leak",
                "severity": "warning",
                "status": "firing",
                "category": "water",
                "subject": "M003",
            },
            {
                "key": "water.leak:M003",
                "district": "中町",
                "message": "WATERLEAK M003 13.75 L/h",
                "values": "{}",
            },
            at_ms - HOUR,
        )
    )
    return out


@dataclass
class Site:
    out: Path
    pcfg: PublicConfig
    database: str


def query_client(influx: InfluxDB1, db: str) -> InfluxQuery:
    return InfluxQuery(InfluxConfig(url=influx.url, database=db, create_database=False))


def build_site(influx: InfluxDB1, db: str, out: Path, at_ms: int, **pub: Any) -> Site:
    pcfg = PublicConfig.model_validate(pub)
    client = query_client(influx, db)
    try:
        build(pcfg, registry(), client, out, at_ms)
    finally:
        client.close()
    return Site(out, pcfg, db)


@contextmanager
def serving(root: Path) -> Iterator[Server]:
    server = make_server(root, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


CHROMEDRIVER = "/usr/bin/chromedriver"


def have_browser() -> bool:
    return os.path.exists(CHROMEDRIVER) and shutil.which("chromium") is not None


@contextmanager
def browser() -> Iterator[Any]:
    """Headless Chromium through Selenium, console messages kept for the tests."""
    from selenium import webdriver  # noqa: PLC0415 (optional dev dependency, only here)
    from selenium.webdriver.chrome.service import Service  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="yukimizu-chromium-") as profile:
        opts = webdriver.ChromeOptions()
        for arg in (
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--window-size=1200,900",
        ):
            opts.add_argument(arg)
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
        try:
            yield driver
        finally:
            driver.quit()
