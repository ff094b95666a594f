"""Static files of the public page: HTML, JS, CSS, vendored Leaflet and the data feed.

Built every minute so that any web server or CDN can serve them: a storm of visitors
costs no database query (docs/domain.md#public-plowing-maps: "the site failing during a
storm"). Every file is replaced atomically: a reader sees the old or the new file, never
half of one.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import orjson

from core.influxql import InfluxQuery
from publicpage.config import PublicConfig
from publicpage.snapshot import BAND_BY_KEY, BANDS, Reader, Snapshot, iso_jst
from sensors.registry import Registry

STATIC = Path(__file__).resolve().parent / "static"
FEED = "data/feed.geojson"
STATUS = "data/status.json"


def write_atomic(path: Path, data: bytes) -> None:
    """Temp file in the same directory, fsync, rename over: all or nothing for readers."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        # mkstemp creates 0600: the web server's user must be able to read the file.
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _legend() -> list[dict[str, Any]]:
    return [{"key": b.key, "label": b.label, "color": b.color, "dash": b.dash} for b in BANDS]


def _segment_feature(s: dict[str, Any]) -> dict[str, Any]:
    props = {k: v for k, v in s.items() if k != "coords"}
    props["kind"] = "segment"
    props["band_label"] = BAND_BY_KEY[s["band"]].label
    return {
        "type": "Feature",
        "id": s["id"],
        "geometry": {"type": "LineString", "coordinates": s["coords"]},
        "properties": props,
    }


def _point_feature(kind: str, p: dict[str, Any]) -> dict[str, Any]:
    props = {k: v for k, v in p.items() if k not in ("lon", "lat")}
    props["kind"] = kind
    return {
        "type": "Feature",
        "id": f"{kind}:{p['id']}",
        "geometry": {"type": "Point", "coordinates": [p["lon"], p["lat"]]},
        "properties": props,
    }


def _meta(snap: Snapshot, pcfg: PublicConfig) -> dict[str, Any]:
    return {
        "title": pcfg.title,
        "generated_at": iso_jst(snap.at_ms),
        "data_time": None if snap.data_ms is None else iso_jst(snap.data_ms),
        "stale": snap.stale(pcfg.stale_after_s),
        "stale_after_s": pcfg.stale_after_s,
        "dispatch": snap.dispatch,
    }


def feed_document(snap: Snapshot, pcfg: PublicConfig) -> dict[str, Any]:
    """RFC 7946 FeatureCollection; page metadata as foreign members (docs/public.md)."""
    features = [_segment_feature(s) for s in snap.segments]
    features += [_point_feature("plow", p) for p in snap.plows]
    features += [_point_feature("station", p) for p in snap.stations]
    return {
        "type": "FeatureCollection",
        **_meta(snap, pcfg),
        "legend": _legend(),
        "features": features,
    }


_STATUS_SEGMENT_KEYS = (
    "id", "name", "priority", "last_plowed", "inferred", "band", "eta", "eta_label", "eta_range",
)  # fmt: skip


def status_document(snap: Snapshot, pcfg: PublicConfig) -> dict[str, Any]:
    """The same data without geometry, for text channels (LINE, the town's website)."""
    return {
        **_meta(snap, pcfg),
        "segments": [{k: s[k] for k in _STATUS_SEGMENT_KEYS} for s in snap.segments],
        "plows": [{k: p[k] for k in ("id", "name", "time")} for p in snap.plows],
        "stations": [
            {k: s[k] for k in ("id", "name", "time", "depth_cm", "new_24h_cm")}
            for s in snap.stations
        ],
    }


def _json(doc: Any) -> bytes:
    return orjson.dumps(doc)


def _page(pcfg: PublicConfig, versions: dict[str, str]) -> bytes:
    template = (STATIC / "index.html").read_text(encoding="utf-8")
    config = {
        "feed": FEED,
        "title": pcfg.title,
        "tile_url": pcfg.tile_url,
        "tile_attribution": pcfg.tile_attribution,
        "tile_max_zoom": pcfg.tile_max_zoom,
        "stale_after_s": pcfg.stale_after_s,
        "refresh_s": pcfg.interval_s,
    }
    # In a <script type="application/json"> block "</" must not end the element early.
    config_json = json.dumps(config, ensure_ascii=False).replace("</", "<\\/")
    page = (
        template.replace("{{title}}", html.escape(pcfg.title))
        .replace("{{config}}", config_json)
        .replace("{{v_app}}", versions["app.js"])
        .replace("{{v_css}}", versions["style.css"])
    )
    return page.encode("utf-8")


def _copy_static(out_dir: Path) -> dict[str, str]:
    """Copy the static assets that changed; their content hashes (for cache busting)."""
    versions = {}
    for src in sorted(STATIC.rglob("*")):
        rel = src.relative_to(STATIC)
        if src.is_dir() or rel.name == "index.html":
            continue
        data = src.read_bytes()
        versions[rel.as_posix()] = hashlib.sha256(data).hexdigest()[:10]
        dst = out_dir / rel
        if not dst.exists() or dst.read_bytes() != data:
            write_atomic(dst, data)
    return versions


def write_site(snap: Snapshot, pcfg: PublicConfig, out_dir: Path) -> list[Path]:
    """Write every file of the site for one snapshot; the paths written."""
    versions = _copy_static(out_dir)
    files = {
        out_dir / FEED: _json(feed_document(snap, pcfg)),
        out_dir / STATUS: _json(status_document(snap, pcfg)),
        # The page last: a reader who gets the new page also gets assets and data.
        out_dir / "index.html": _page(pcfg, versions),
    }
    for path, data in files.items():
        write_atomic(path, data)
    return [*files]


def build(
    pcfg: PublicConfig, registry: Registry, client: InfluxQuery, out_dir: Path, at_ms: int
) -> Snapshot:
    """Read one snapshot as of ``at_ms`` and write the site."""
    snap = Reader(client, registry, pcfg).read(at_ms)
    write_site(snap, pcfg, out_dir)
    return snap
