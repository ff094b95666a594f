"""Plain-dict building blocks for Grafana dashboards (classic JSON model).

Why plain dicts: grafana-foundation-sdk's support for the pinned Grafana is uncertain,
and the classic model is what file provisioning reads. ``tests/test_dashboards.py``
checks the structure and runs every query against a real InfluxDB.

Every panel keeps, besides its JSON, what a test needs to judge its queries: the
measurements it reads and the shape of the answer (:class:`Expect`). That metadata
never goes into the JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import rules.schema as derived

DATASOURCE_UID = "yukimizu-influxdb"
DS: dict[str, str] = {"type": "influxdb", "uid": DATASOURCE_UID}

# Which rule family writes a derived measurement (rules/families.py registers them by
# these names). "engine": written by the engine itself whatever families run.
PRODUCER: dict[str, str] = {
    derived.WATER_HOURLY: "water",
    derived.WATER_NIGHT: "water",
    derived.WATER_STATE: "water",
    derived.SNOW_HOURLY: "snow",
    derived.STATION_HEALTH: "snow",
    derived.SEGMENT_STATUS: "plow",
    derived.DISPATCH: "plow",
    derived.PLOW_WORK: "plow",
    derived.SEGMENT_ETA: "plow",
    derived.ZONE_ETA: "plow",
    derived.ALERT_TRANSITION: "engine",
    derived.RULES_STATS: "engine",
}
# Written by the alerts service (acknowledgements, delivery results); its schema is
# that service's. Queries on it must work while it does not exist yet.
ALERT_EVENT = "alert_event"
# The alerts service's own figures (alerts/schema.py; tests/test_alerts_metrics.py keeps
# the names equal): counters since its start, gauges, per-channel counters.
ALERTS_STATS = "yukimizu_alerts"
ALERTS_CHANNEL_STATS = "yukimizu_alerts_channel"
OPTIONAL_MEASUREMENTS = frozenset({ALERT_EVENT})


@dataclass(frozen=True)
class Expect:
    """What one query must return on the test data.

    ``columns``: value columns the answer must have (besides ``time``);
    ``tags``: tags the series must be grouped by; ``family``: the rule family whose
    derived series the query needs (``None`` for raw data); ``may_be_empty``: an
    optional measurement (absent is a valid, empty answer).
    """

    columns: tuple[str, ...]
    tags: tuple[str, ...] = ()
    family: str | None = None
    may_be_empty: bool = False


@dataclass
class Query:
    query: str
    expect: Expect
    ref: str = "A"
    fmt: str = "time_series"  # time_series | table
    alias: str | None = None

    def target(self) -> dict[str, Any]:
        t: dict[str, Any] = {
            "datasource": DS,
            "refId": self.ref,
            "rawQuery": True,
            "query": self.query,
            "resultFormat": self.fmt,
        }
        if self.alias:
            t["alias"] = self.alias
        return t


def q(
    query: str,
    columns: tuple[str, ...],
    tags: tuple[str, ...] = (),
    *,
    ref: str = "A",
    fmt: str = "time_series",
    alias: str | None = None,
    family: str | None = None,
    may_be_empty: bool = False,
) -> Query:
    return Query(query, Expect(columns, tags, family, may_be_empty), ref, fmt, alias)


@dataclass
class Panel:
    kind: str  # Grafana panel type: timeseries, table, geomap, …
    title: str
    queries: list[Query]
    w: int = 12
    h: int = 8
    description: str = ""
    unit: str | None = None
    decimals: int | None = None
    thresholds: list[tuple[float | None, str]] | None = None
    mappings: list[dict[str, Any]] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    custom: dict[str, Any] = field(default_factory=dict)
    overrides: list[dict[str, Any]] = field(default_factory=list)
    transformations: list[dict[str, Any]] = field(default_factory=list)
    time_from: str | None = None  # panel relative time, e.g. "now/d" = today so far
    color_mode: str | None = None

    def to_json(self, pid: int, x: int, y: int) -> dict[str, Any]:
        defaults: dict[str, Any] = {"custom": dict(self.custom)}
        if self.unit:
            defaults["unit"] = self.unit
        if self.decimals is not None:
            defaults["decimals"] = self.decimals
        if self.thresholds is not None:
            defaults["thresholds"] = {
                "mode": "absolute",
                "steps": [{"color": c, "value": v} for v, c in self.thresholds],
            }
            defaults["color"] = {"mode": self.color_mode or "thresholds"}
        elif self.color_mode:
            defaults["color"] = {"mode": self.color_mode}
        if self.mappings:
            defaults["mappings"] = self.mappings
        out: dict[str, Any] = {
            "id": pid,
            "type": self.kind,
            "title": self.title,
            "datasource": DS,
            "gridPos": {"h": self.h, "w": self.w, "x": x, "y": y},
            "targets": [qq.target() for qq in self.queries],
            "fieldConfig": {"defaults": defaults, "overrides": self.overrides},
            "options": self.options,
        }
        if self.description:
            out["description"] = self.description
        if self.transformations:
            out["transformations"] = self.transformations
        if self.time_from:
            out["timeFrom"] = self.time_from
        return out


@dataclass
class Row:
    title: str
    collapsed: bool = False


@dataclass
class Dashboard:
    uid: str
    title: str
    tags: list[str]
    items: list[Panel | Row] = field(default_factory=list)
    variables: list[dict[str, Any]] = field(default_factory=list)
    # (name, query, colour): InfluxQL annotations drawn on every time series
    annotation_queries: list[tuple[str, Query, str]] = field(default_factory=list)
    refresh: str = "1m"
    time_from: str = "now-24h"
    description: str = ""

    @property
    def queries(self) -> list[tuple[str, Query]]:
        """Every query with the title of what runs it (panels and annotations)."""
        out = [(p.title, qq) for p in self.panels for qq in p.queries]
        out += [(f"annotation {n}", aq) for n, aq, _c in self.annotation_queries]
        return out

    def add(self, *items: Panel | Row) -> None:
        self.items.extend(items)

    @property
    def panels(self) -> list[Panel]:
        return [p for p in self.items if isinstance(p, Panel)]

    def to_json(self, schema_version: int) -> dict[str, Any]:
        panels: list[dict[str, Any]] = []
        x = y = row_h = 0
        pid = 1
        for item in self.items:
            if isinstance(item, Row):
                if x:
                    y += row_h
                    x = row_h = 0
                panels.append(
                    {
                        "id": pid,
                        "type": "row",
                        "title": item.title,
                        "collapsed": item.collapsed,
                        "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                        "panels": [],
                    }
                )
                y += 1
            else:
                if x + item.w > 24:
                    y += row_h
                    x = row_h = 0
                panels.append(item.to_json(pid, x, y))
                x += item.w
                row_h = max(row_h, item.h)
            pid += 1
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": self.tags,
            "timezone": "Asia/Tokyo",
            "weekStart": "monday",
            "editable": True,
            "graphTooltip": 1,
            "refresh": self.refresh,
            "time": {"from": self.time_from, "to": "now"},
            "timepicker": {"refresh_intervals": ["30s", "1m", "5m", "15m", "1h"]},
            "fiscalYearStartMonth": 3,  # 4月始まりの年度 (0 = January)
            "liveNow": False,
            "links": [
                {
                    "type": "dashboards",
                    "tags": ["yukimizu"],
                    "asDropdown": False,
                    "title": "雪水",
                    "includeVars": False,
                    "keepTime": True,
                }
            ],
            "annotations": {
                "list": [
                    BUILTIN_ANNOTATION,
                    *(annotation(n, aq.query, c) for n, aq, c in self.annotation_queries),
                ]
            },
            "templating": {"list": self.variables},
            "panels": panels,
            "schemaVersion": schema_version,
            "version": 1,
        }


BUILTIN_ANNOTATION: dict[str, Any] = {
    "builtIn": 1,
    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
    "enable": True,
    "hide": True,
    "iconColor": "rgba(0, 211, 255, 1)",
    "name": "Annotations & Alerts",
    "type": "dashboard",
}


def tag_variable(
    name: str, label: str, query: str, *, multi: bool = True, hide: int = 0
) -> dict[str, Any]:
    """A query variable over InfluxQL ``SHOW TAG VALUES`` (refreshed on time change).

    Multi-value with "All": Grafana formats the selection as a regex group
    ``(a|b)`` inside ``/^$var$/``; "All" sends every value (no custom all value, so a
    regex never matches more than the listed values).
    """
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "query": query,
        "definition": query,
        "refresh": 2,
        "multi": multi,
        "includeAll": multi,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]} if multi else {},
        "sort": 1,
        "hide": hide,
        "options": [],
        "regex": "",
        "skipUrlSync": False,
    }


def constant_variable(name: str, value: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "type": "constant",
        "description": description,
        "query": value,
        "hide": 2,
        "skipUrlSync": True,
        "current": {"text": value, "value": value},
    }


def annotation(
    name: str, query: str, color: str, *, text: str = "message", tags: str = "rule,status"
) -> dict[str, Any]:
    """An InfluxQL annotation (alert transitions drawn on every time series)."""
    return {
        "name": name,
        "datasource": DS,
        "enable": True,
        "hide": False,
        "iconColor": color,
        "query": query,
        "textColumn": text,
        "tagsColumn": tags,
        "titleColumn": "subject",
    }
