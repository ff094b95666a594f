"""Generate the provisioned dashboards and gazetteers; compare them with what is committed.

    python -m dashboards [--check] [--out DIR]      (or: yukimizu dashboards build)

Writes ``deploy/grafana/dashboards/*.json`` and the gazetteers Geomap looks meters,
stations and road segments up in (``deploy/grafana/gazetteer/``), from the config's
device registry (the sample town's by default). ``--check`` writes nothing and exits
1 when the committed files differ from what the generator makes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from core.config import Config
from dashboards.boards import BOARDS
from dashboards.model import Dashboard
from sensors.registry import Registry

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy" / "grafana"

# The Grafana image docker-compose.yml pins, and the dashboard schema version that
# release writes. Source: DASHBOARD_SCHEMA_VERSION = 42 in Grafana's dashboard
# migrator at tag v13.2.1, as reported against that tag's source in
# https://github.com/grafana/skills/issues/98 (migration 42:
# migrateHideFromFunctionality). tests/test_dashboards.py checks that the compose file
# pins this version.
GRAFANA_IMAGE = "grafana/grafana"
GRAFANA_VERSION = "13.2.1"
SCHEMA_VERSION = 42

DEVICES_GAZETTEER = "yukimizu-devices.json"
SEGMENTS_GAZETTEER = "yukimizu-segments.geojson"


def dashboards(cfg: Config, registry: Registry) -> list[Dashboard]:
    return [make(cfg, registry) for make in BOARDS.values()]


def render(obj: Any) -> str:
    """Stable JSON text: the committed files are compared byte for byte."""
    return json.dumps(obj, ensure_ascii=False, indent=2, sort_keys=False) + "\n"


def devices_gazetteer(registry: Registry) -> list[dict[str, Any]]:
    """Grafana's point gazetteer format (``key``/``latitude``/``longitude``)."""
    rows: list[dict[str, Any]] = [
        {"key": s.id, "latitude": s.lat, "longitude": s.lon, "name": f"{s.id} {s.name}"}
        for s in sorted(registry.stations.values(), key=lambda s: s.id)
    ]
    rows += [
        {"key": m.id, "latitude": m.lat, "longitude": m.lon, "name": f"{m.id} ({m.district})"}
        for m in sorted(registry.meters.values(), key=lambda m: m.id)
    ]
    return rows


def segments_gazetteer(registry: Registry) -> dict[str, Any]:
    """Road segments as GeoJSON lines, keyed by the feature id = ``segment_id``."""
    return {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "id": seg.id,
                "properties": {"segment": seg.id, "name": seg.name, "priority": seg.priority},
                "geometry": {"type": "LineString", "coordinates": [list(c) for c in seg.coords]},
            }
            for seg in sorted(registry.routes.values(), key=lambda s: s.id)
        ],
    }


def files(cfg: Config, registry: Registry) -> dict[Path, str]:
    """Relative path under deploy/grafana → content."""
    out: dict[Path, str] = {}
    for d in dashboards(cfg, registry):
        out[Path("dashboards") / f"{d.uid}.json"] = render(d.to_json(SCHEMA_VERSION))
    out[Path("gazetteer") / DEVICES_GAZETTEER] = render(devices_gazetteer(registry))
    out[Path("gazetteer") / SEGMENTS_GAZETTEER] = render(segments_gazetteer(registry))
    return out


def build(cfg: Config, registry: Registry, out_dir: Path = DEPLOY) -> list[Path]:
    written = []
    for rel, text in files(cfg, registry).items():
        path = out_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            written.append(path)
    return written


def differences(cfg: Config, registry: Registry, out_dir: Path = DEPLOY) -> list[str]:
    """Files that are missing or differ from what the generator makes."""
    bad = []
    for rel, text in files(cfg, registry).items():
        path = out_dir / rel
        if not path.exists():
            bad.append(f"{path}: missing")
        elif path.read_text(encoding="utf-8") != text:
            bad.append(f"{path}: differs from the generator")
    return bad
