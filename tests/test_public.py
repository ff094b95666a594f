"""The public page's data: allow-list, bands, plows shown, GeoJSON shape, atomic files,
the static server, config errors, the CLI. Browser tests: tests/test_public_browser.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from core.config import ConfigError
from devtools.localstack import InfluxDB1
from publicpage.build import FEED, STATUS, write_atomic
from publicpage.config import load_public_config
from publicpage.snapshot import BANDS, NotAllowedError, band_for, select
from rules.engine import ENCODER
from rules.schema import ALERT_TRANSITION, WATER_HOURLY, WATER_NIGHT, WATER_STATE
from sensors.schema import WATER
from tests.conftest import REPO
from tests.public_support import (
    AGES_H,
    AT,
    AT_MS,
    HOUR,
    INFERRED,
    WATER_MARKERS,
    Site,
    build_site,
    registry,
    sample_config,
    serving,
    synthetic_lines,
)


@pytest.fixture(scope="module")
def synthetic_db(influx: InfluxDB1) -> str:
    db = f"public{os.getpid()}"
    influx.create_database(db)
    influx.write(synthetic_lines(registry()), db)
    return db


@pytest.fixture(scope="module")
def site(influx: InfluxDB1, synthetic_db: str, tmp_path_factory: pytest.TempPathFactory) -> Site:
    return build_site(influx, synthetic_db, tmp_path_factory.mktemp("site"), AT_MS)


def _feed(site: Site) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((site.out / FEED).read_bytes())
    return doc


def _by_kind(doc: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {f["properties"]["id"]: f for f in doc["features"] if f["properties"]["kind"] == kind}


def test_nothing_of_the_water_side_reaches_any_output_file(site: Site) -> None:
    files = [p for p in site.out.rglob("*") if p.is_file()]
    assert len(files) > 10
    leaks = [
        (str(p.relative_to(site.out)), m)
        for p in files
        for m in WATER_MARKERS
        if m.encode() in p.read_bytes()
    ]
    assert not leaks, f"water data in public files: {leaks}"


@pytest.mark.parametrize(
    "measurement", [WATER, WATER_HOURLY, WATER_NIGHT, WATER_STATE, ALERT_TRANSITION]
)
def test_water_and_alerts_cannot_even_be_queried(measurement: str) -> None:
    with pytest.raises(NotAllowedError):
        select(measurement, ["register_l"], 0, 1)


def test_only_allow_listed_fields_and_tags() -> None:
    with pytest.raises(NotAllowedError):
        select("segment_status", ["plow", "dispatch_id", "secret"], 0, 1)
    with pytest.raises(NotAllowedError):
        select("snow_hourly", ["depth_cm"], 0, 1, group_by="district")
    assert select("snow_hourly", ["depth_cm"], 0, 1, group_by="device").startswith(
        'SELECT "depth_cm" FROM "snow_hourly"'
    )


def test_feed_is_geojson_with_lon_lat(site: Site) -> None:
    doc = _feed(site)
    assert doc["type"] == "FeatureCollection"
    reg = registry()
    kinds = {"segment": "LineString", "plow": "Point", "station": "Point"}
    for f in doc["features"]:
        assert f["type"] == "Feature"
        assert set(f) == {"type", "id", "geometry", "properties"}
        assert f["geometry"]["type"] == kinds[f["properties"]["kind"]]
        coords = f["geometry"]["coordinates"]
        points = coords if f["geometry"]["type"] == "LineString" else [coords]
        for lon, lat in points:
            # RFC 7946 order is lon, lat: the town is at 140.2 E, 38.4 N.
            assert reg_bbox_contains(reg, lat, lon), (f["id"], lon, lat)
    segs = _by_kind(doc, "segment")
    assert set(segs) == set(reg.routes)
    first = reg.routes["R001"].coords[0]
    assert segs["R001"]["geometry"]["coordinates"][0] == list(first)


def reg_bbox_contains(reg: Any, lat: float, lon: float) -> bool:
    cfg = sample_config().registry
    return cfg.lat_min <= lat <= cfg.lat_max and cfg.lon_min <= lon <= cfg.lon_max


def test_each_segment_in_the_band_of_its_last_plowing(site: Site) -> None:
    segs = _by_kind(_feed(site), "segment")
    expected = {
        "R007": "lt1h",
        "R008": "1to3h",
        "R009": "3to6h",
        "R010": "6to12h",
        "R001": "12to24h",
        "R002": "none",
        "R003": "none",
    }
    got = {k: segs[k]["properties"]["band"] for k in expected}
    assert got == expected
    p = segs["R008"]["properties"]
    assert p["inferred"] is True and "R008" in INFERRED
    assert p["last_plowed"] == "2026-01-27T06:30:00+09:00"  # the newer of two plowings
    assert segs["R003"]["properties"]["last_plowed"] is None
    assert segs["R002"]["properties"]["hours_since"] == AGES_H["R002"]
    assert not segs["R007"]["properties"]["inferred"]


def test_band_edges() -> None:
    assert band_for(0).key == "lt1h"
    assert band_for(HOUR - 1).key == "lt1h"
    assert band_for(HOUR).key == "1to3h"
    assert band_for(24 * HOUR - 1).key == "12to24h"
    assert band_for(24 * HOUR).key == "none"
    assert band_for(None).key == "none"
    assert len({b.color for b in BANDS}) == len({b.dash for b in BANDS[1:]}) + 1 == len(BANDS)


def test_working_plows_only(site: Site) -> None:
    plows = _by_kind(_feed(site), "plow")
    # P02 stands in the depot, P03 has not moved for 30 min: parked, not shown.
    assert set(plows) == {"P01"}
    assert plows["P01"]["properties"]["name"] == "除雪1号車"


def test_dispatch_stations_and_freshness(site: Site) -> None:
    doc = _feed(site)
    assert doc["dispatch"]["text"] == "本日 03:00 出動 — 優先路線 8/12 完了"
    assert doc["stale"] is False
    assert doc["generated_at"] == AT
    st = _by_kind(doc, "station")["ST01"]["properties"]
    # Hours stamped at their start; at 08:30 the newest complete one is 07:00–08:00.
    assert st["time"] == "2026-01-27T08:00:00+09:00"
    assert (st["depth_cm"], st["new_24h_cm"]) == (107, 21)
    st2 = _by_kind(doc, "station")["ST02"]["properties"]
    assert (st2["time"], st2["depth_cm"]) == ("2026-01-27T07:00:00+09:00", 106)
    status = json.loads((site.out / STATUS).read_bytes())
    assert status["dispatch"] == doc["dispatch"]
    assert len(status["segments"]) == len(registry().routes)


def test_stale_when_the_newest_data_is_old(
    influx: InfluxDB1, synthetic_db: str, tmp_path: Path
) -> None:
    later = build_site(influx, synthetic_db, tmp_path, AT_MS + 3 * HOUR)
    doc = _feed(later)
    assert doc["stale"] is True
    assert doc["data_time"] is not None
    assert _by_kind(doc, "plow") == {}  # fixes three hours old: not on the map


def test_page_carries_config_and_versioned_assets(site: Site) -> None:
    page = (site.out / "index.html").read_text(encoding="utf-8")
    assert "<title>除雪状況</title>" in page
    assert "app.js?v=" in page and "{{" not in page
    assert "cyberjapandata.gsi.go.jp/xyz/pale" in page and "地理院タイル" in page
    # Never a map library from a CDN: only relative URLs for scripts and styles.
    assert "unpkg" not in page and "cdn" not in page.lower()
    assert (site.out / "vendor/leaflet/leaflet.js").stat().st_size > 100_000
    assert (site.out / "vendor/leaflet/LICENSE").exists()


def test_title_is_escaped(influx: InfluxDB1, synthetic_db: str, tmp_path: Path) -> None:
    s = build_site(influx, synthetic_db, tmp_path, AT_MS, title="<b>町</b></script>")
    page = (s.out / "index.html").read_text(encoding="utf-8")
    assert "<title>&lt;b&gt;町&lt;/b&gt;&lt;/script&gt;</title>" in page
    assert "<h1>&lt;b&gt;町" in page
    # Inside the JSON config block "</" is escaped, so the block cannot be closed early.
    assert '"<b>町<\\/b><\\/script>"' in page


def test_atomic_writes_never_show_half_a_file(tmp_path: Path) -> None:
    path = tmp_path / "data" / "feed.geojson"
    versions = [json.dumps({"v": k, "pad": "x" * 400_000}).encode() for k in range(2)]
    write_atomic(path, versions[0])
    stop = threading.Event()
    seen: list[bytes] = []

    def reader() -> None:
        while not stop.is_set():
            seen.append(path.read_bytes())

    t = threading.Thread(target=reader)
    t.start()
    for k in range(60):
        write_atomic(path, versions[k % 2])
    stop.set()
    t.join()
    assert seen and all(s in versions for s in seen)
    assert oct(path.stat().st_mode & 0o777) == "0o644"  # readable by the web server
    assert [p.name for p in path.parent.iterdir()] == ["feed.geojson"]  # no temp left


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_server_headers_revalidation_and_no_escape(site: Site) -> None:
    (site.out / ".feed.geojson.x.tmp").write_bytes(b"half")
    with serving(site.out) as server:
        base = f"http://127.0.0.1:{server.server_port}"
        status, h, body = _get(base + "/")
        assert status == 200 and h["Content-Type"].startswith("text/html")
        assert h["Cache-Control"] == "public, max-age=60"
        status, h, body = _get(base + "/" + FEED)
        assert status == 200 and h["Content-Type"] == "application/geo+json"
        assert h["Cache-Control"] == "public, max-age=30"
        assert json.loads(body)["type"] == "FeatureCollection"
        status, _h2, _ = _get(base + "/" + FEED, {"If-None-Match": h["ETag"]})
        assert status == 304
        assert _get(base + "/vendor/leaflet/leaflet.js")[1]["Cache-Control"].endswith("86400")
        assert _get(base + "/.feed.geojson.x.tmp")[0] == 404
        assert _get(base + "/../../etc/passwd")[0] == 404
        assert _get(base + "/%2e%2e/%2e%2e/etc/passwd")[0] == 404
        # A rebuilt file (new inode) is served at once, not from the memory cache.
        write_atomic(site.out / "data" / "probe.json", b'{"n": 1}')
        assert _get(base + "/data/probe.json")[2] == b'{"n": 1}'
        write_atomic(site.out / "data" / "probe.json", b'{"n": 2}')
        assert _get(base + "/data/probe.json")[2] == b'{"n": 2}'


def test_config_errors_name_the_field() -> None:
    cfg = sample_config()
    with pytest.raises(ConfigError, match=r"public\.stale_after_min"):
        load_public_config(cfg.model_copy(update={"public": {"stale_after_min": 0}}))
    with pytest.raises(ConfigError, match=r"public\.tile_url"):
        load_public_config(cfg.model_copy(update={"public": {"tile_url": "ftp://x/{z}"}}))
    with pytest.raises(ConfigError, match=r"public\.titel: unknown key"):
        load_public_config(cfg.model_copy(update={"public": {"titel": "x"}}))
    pc = load_public_config(cfg.model_copy(update={"public": {"out_dir": "www"}}))
    assert pc.out_dir == cfg.base_dir / "www"
    assert load_public_config(cfg.model_copy(update={"public": {"tile_url": ""}})).tile_url == ""


def test_cli_build_at_a_time(influx: InfluxDB1, synthetic_db: str, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "YUKIMIZU_CONFIG": str(REPO / "config" / "yukimizu.toml"),
        "YUKIMIZU_INFLUX__URL": f'"{influx.url}"',
        "YUKIMIZU_INFLUX__DATABASE": f'"{synthetic_db}"',
    }
    out = tmp_path / "www"
    proc = subprocess.run(
        [sys.executable, "-m", "cli", "public", "build", "--out", str(out), "--at", AT],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / FEED).read_bytes())["generated_at"] == AT
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli",
            "public",
            "build",
            "--out",
            str(out),
            "--at",
            "2026-01-27T08:30:00",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2 and "needs a UTC offset" in bad.stderr


# --------------------------------------------------------------------------- ETA

MIN = 60_000

# segment → (state, minutes from AT to the ETA, minutes the point is older than AT)
ETAS: dict[str, tuple[str, int, int]] = {
    "R011": ("eta", 10, 3),  # まもなく
    "R012": ("eta", 45, 3),  # 1時間以内
    "R013": ("eta", 120, 3),  # 本日の予定 10:30頃
    "R014": ("unknown", 0, 3),  # 見込み不明
    "R015": ("done", 0, 3),  # plowed in this dispatch: no ETA
    "R016": ("eta", 120, 30),  # an old point: not shown
    "R017": ("eta", 16 * 60, 3),  # after midnight: another day
}


def eta_lines(at_ms: int) -> list[str]:
    lines = []
    for seg, (state, ahead, age) in ETAS.items():
        eta = (at_ms + ahead * MIN) // 1000 if state == "eta" else 0
        lines.append(
            ENCODER.encode(
                "segment_eta",
                {"segment": seg, "zone": "Z2"},
                {
                    "state": state,
                    "reason": "no_vehicle" if state == "unknown" else "",
                    "plow": "P02",
                    "eta_s": eta,
                    "early_s": eta - 600 if eta else 0,
                    "late_s": eta + 1200 if eta else 0,
                    "dispatch_id": "20260127-0300",
                },
                at_ms - age * MIN,
            )
        )
    return lines


@pytest.fixture(scope="module")
def eta_site(influx: InfluxDB1, tmp_path_factory: pytest.TempPathFactory) -> Site:
    db = f"publiceta{os.getpid()}"
    influx.create_database(db)
    influx.write(synthetic_lines(registry()) + eta_lines(AT_MS), db)
    return build_site(influx, db, tmp_path_factory.mktemp("eta"), AT_MS)


def test_each_segment_says_when_it_will_be_plowed(eta_site: Site) -> None:
    segs = _by_kind(_feed(eta_site), "segment")
    got = {k: (segs[k]["properties"]["eta"], segs[k]["properties"]["eta_label"]) for k in ETAS}
    assert got == {
        "R011": ("soon", "まもなく"),
        "R012": ("hour", "1時間以内"),
        "R013": ("later", "本日の予定 10:30頃"),
        "R014": ("unknown", "見込み不明"),
        "R015": (None, ""),
        "R016": (None, ""),
        "R017": ("later", "1月28日 00:30頃の予定"),
    }
    # the band in words too (rounded to 5 minutes): 10:30 − 10 min … + 20 min
    assert segs["R013"]["properties"]["eta_range"] == "10:20〜10:50"
    assert segs["R014"]["properties"]["eta_range"] == ""
    # no ETA where none was written
    assert segs["R020"]["properties"]["eta"] is None
    status = json.loads((eta_site.out / STATUS).read_bytes())
    by_id = {s["id"]: s for s in status["segments"]}
    assert by_id["R012"]["eta_label"] == "1時間以内"


def test_eta_fields_are_allow_listed_only() -> None:
    # which plow, the reason and the dispatch stay in the town's database
    for name in ("plow", "reason", "dispatch_id"):
        with pytest.raises(NotAllowedError):
            select("segment_eta", [name], 0, 1)
