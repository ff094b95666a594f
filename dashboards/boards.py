"""The four dashboards: 積雪 (snow), 水道 (water), 除雪 (plows), システム (system).

Queries are InfluxQL only (the datasource works against InfluxDB 1.x, and 2.x through
its DBRP mapping: docs/architecture.md#influxdb). Measurements and fields are those of
``sensors.schema`` (raw readings) and ``rules.schema`` (derived series, the rules
engine's contract). Grafana macros used: ``$timeFilter``, ``$__interval``,
``$__interval_ms``, ``${__to:date:seconds}`` and the template variables.

Maps: InfluxDB holds no coordinates for stations and meters (they live in the
registry), so meters and road segments are placed by Geomap's *lookup* location
mode against gazetteers the generator writes from the registry
(``deploy/grafana/gazetteer/``, mounted under Grafana's ``public/gazetteer/``): the
query returns the ``device`` / ``segment`` tag, the gazetteer its position or line.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import rules.schema as derived
from core.config import Config
from dashboards.model import (
    ALERT_EVENT,
    ALERTS_CHANNEL_STATS,
    ALERTS_STATS,
    Dashboard,
    Panel,
    Query,
    Row,
    constant_variable,
    q,
    tag_variable,
)
from sensors import schema as raw
from sensors.registry import Registry

GAZETTEER_DEVICES = "public/gazetteer/yukimizu-devices.json"
GAZETTEER_SEGMENTS = "public/gazetteer/yukimizu-segments.geojson"

# Time since plowed, hours: the colour bands of the 除雪 map and table.
SINCE_PLOWED_BANDS: list[tuple[float | None, str]] = [
    (None, "green"),  # < 1 h
    (1, "#73BF69"),
    (3, "yellow"),
    (6, "orange"),
    (12, "red"),
    (24, "dark-red"),
]
HOUR_MS = 3_600_000

WATER_STATES: dict[str, tuple[str, str]] = {
    # state → (Japanese label, colour); codes from rules.schema WATER_STATE
    "ok": ("正常", "green"),
    "stale": ("欠測", "text"),
    "stuck": ("メーター停止", "text"),
    "leak": ("漏水の疑い", "orange"),
    "reverse": ("逆流", "orange"),
    "watch": ("見守り: 要確認", "orange"),
    "burst": ("破裂の疑い", "red"),
}
WATER_CODES: dict[int, tuple[str, str]] = {
    0: ("正常", "green"),
    1: ("欠測・停止", "#8e8e8e"),
    2: ("漏水・逆流・見守り", "orange"),
    3: ("破裂", "red"),
}

STATION_FAULTS: dict[str, tuple[str, str]] = {
    "": ("正常", "green"),
    "offline": ("通信途絶", "red"),
    "spike": ("スパイク", "orange"),
    "frozen": ("値の固着", "orange"),
    "poor_echo": ("反射不良", "orange"),
    "low_battery": ("電池低下", "yellow"),
}

DISPATCH_STATES: dict[str, tuple[str, str]] = {
    "called": ("出動要請", "orange"),
    "working": ("作業中", "blue"),
    "done": ("完了", "green"),
}


def _value_map(table: dict[str, tuple[str, str]] | dict[int, tuple[str, str]]) -> dict[str, Any]:
    return {
        "type": "value",
        "options": {
            str(k): {"text": text, "color": color, "index": i}
            for i, (k, (text, color)) in enumerate(table.items())
        },
    }


def _ts(fill: int = 10, *, bars: bool = False, stack: bool = False) -> dict[str, Any]:
    """Timeseries field defaults."""
    out: dict[str, Any] = {
        "drawStyle": "bars" if bars else "line",
        "lineWidth": 1,
        "fillOpacity": 80 if bars else fill,
        "showPoints": "never",
        "spanNulls": False,
        "axisBorderShow": False,
    }
    if stack:
        out["stacking"] = {"mode": "normal", "group": "A"}
    return out


def _legend_table() -> dict[str, Any]:
    return {
        "legend": {
            "displayMode": "table",
            "placement": "right",
            "showLegend": True,
            "calcs": ["lastNotNull", "max"],
        },
        "tooltip": {"mode": "multi", "sort": "desc"},
    }


def _trend(panel: Panel) -> Panel:
    """``panel`` as a time series with one colour per series and the legend as a
    table: the shape of most graphs on these boards. Its ``custom`` defaults to plain
    lines (``_ts()``)."""
    return replace(
        panel,
        kind="timeseries",
        color_mode="palette-classic",
        custom=panel.custom or _ts(),
        options=_legend_table(),
    )


def _per_device(
    fn: str,
    field: str,
    measurement: str,
    where: str,
    every: str,
    *,
    fill: str = "none",
    family: str | None = None,
) -> Query:
    """``fn("field")`` per ``every`` and device, one series per device named by it.

    ``where`` is the whole WHERE clause (device filter and ``$timeFilter``); the answer's
    value column is named after ``fn``, as InfluxQL names an unaliased aggregate."""
    return q(
        f'SELECT {fn}("{field}") FROM "{measurement}" {where} '
        f'GROUP BY time({every}), "device" fill({fill})',
        (fn,),
        ("device",),
        alias="$tag_device",
        family=family,
    )


def _alerts_annotation(
    title: str, categories: tuple[str, ...], color: str
) -> tuple[str, Query, str]:
    """Alert transitions of some categories as an annotation (Dashboard.annotation_queries).

    The categories are rule family names, so the first one is the family the query
    needs on the test data."""
    where = " OR ".join(f"\"category\" = '{c}'" for c in categories)
    if len(categories) > 1:
        where = f"({where})"
    return (
        title,
        q(
            f'SELECT "message", "subject", "rule", "status" FROM "{derived.ALERT_TRANSITION}" '
            f"WHERE {where} AND $timeFilter",
            ("message", "subject", "rule", "status"),
            fmt="table",
            family=categories[0],
        ),
        color,
    )


def _field(
    name: str,
    *,
    label: str | None = None,
    unit: str | None = None,
    decimals: int | None = None,
    mappings: list[dict[str, Any]] | None = None,
    cell: str | None = None,
    hidden: bool = False,
) -> dict[str, Any]:
    """A field override for the column ``name``: display name, unit, decimals, value
    mappings, cell colouring (``cell``: a cellOptions type) or hidden, in that order."""
    props: list[dict[str, Any]] = []
    if label is not None:
        props.append({"id": "displayName", "value": label})
    if unit is not None:
        props.append({"id": "unit", "value": unit})
    if decimals is not None:
        props.append({"id": "decimals", "value": decimals})
    if mappings is not None:
        props.append({"id": "mappings", "value": mappings})
    if cell is not None:
        props.append({"id": "custom.cellOptions", "value": {"type": cell}})
    if hidden:
        props.append({"id": "custom.hidden", "value": True})
    return {"matcher": {"id": "byName", "options": name}, "properties": props}


def _rename(name: str, to: str) -> dict[str, Any]:
    return _field(name, label=to)


def _geomap(layers: list[dict[str, Any]], lat: float, lon: float, zoom: float) -> dict[str, Any]:
    return {
        "view": {"id": "coords", "lat": lat, "lon": lon, "zoom": zoom, "allLayers": True},
        "controls": {"showZoom": True, "mouseWheelZoom": True, "showAttribution": True},
        "basemap": {"type": "osm-standard", "name": "地図", "config": {}},
        "layers": layers,
        "tooltip": {"mode": "details"},
    }


def _hours_since_last(field: str) -> list[dict[str, Any]]:
    """Transformations: hours from a row's time (a last point) to the range end.

    Grafana interpolates template variables in transformation options (on by default
    since Grafana 11), so ``${__to}`` is the range end in ms.
    """
    return [
        {
            "id": "calculateField",
            "options": {
                "mode": "binary",
                "alias": "ms_since",
                "binary": {"left": "${__to}", "operator": "-", "right": "Time"},
                "replaceFields": False,
            },
        },
        {
            "id": "calculateField",
            "options": {
                "mode": "binary",
                "alias": field,
                "binary": {"left": "ms_since", "operator": "/", "right": str(HOUR_MS)},
                "replaceFields": False,
            },
        },
        {"id": "organize", "options": {"excludeByName": {"ms_since": True}}},
    ]


def _center(reg: Registry) -> tuple[float, float]:
    pts = [(s.lat, s.lon) for s in reg.stations.values()] + [
        (m.lat, m.lon) for m in reg.meters.values()
    ]
    if not pts:
        return (38.38, 140.2)
    return (
        round(sum(p[0] for p in pts) / len(pts), 4),
        round(sum(p[1] for p in pts) / len(pts), 4),
    )


def _snow_params(cfg: Config) -> dict[str, Any]:
    """Thresholds to draw: the config's ``[rules.snow]`` values, else the defaults of
    docs/domain.md#dispatch-threshold, #priority-routes, #staged-call-out and
    #town-wide-alert (the same defaults rules/params.py uses)."""
    snow = cfg.rules.get("snow", {}) if isinstance(cfg.rules.get("snow"), dict) else {}
    return {
        "dispatch_cm": float(snow.get("dispatch_cm", 10.0)),
        "priority_dispatch_cm": float(snow.get("priority_dispatch_cm", 5.0)),
        "stages_cm": [float(x) for x in snow.get("stages_cm", (10.0, 30.0, 40.0))],
        "town_alert_depth_cm": float(snow.get("town_alert_depth_cm", 60.0)),
    }


# ----------------------------------------------------------------------------- 積雪


def snow(cfg: Config, reg: Registry) -> Dashboard:
    p = _snow_params(cfg)
    d = Dashboard(
        "yukimizu-snow",
        "積雪",
        ["yukimizu", "snow"],
        refresh="1m",
        time_from="now-24h",
        description="積雪計の積雪深・時間降雪量・観測局の状態と除雪出動の判断材料",
    )
    d.variables = [
        tag_variable(
            "district", "地区", f'SHOW TAG VALUES FROM "{raw.SNOW}" WITH KEY = "district"'
        ),
        tag_variable(
            "station",
            "観測局",
            f'SHOW TAG VALUES FROM "{raw.SNOW}" WITH KEY = "device" '
            'WHERE "district" =~ /^$district$/',
        ),
    ]
    d.annotation_queries = [
        _alerts_annotation("除雪出動・積雪アラート", ("snow", "plow"), "red"),
    ]
    sel = 'WHERE "device" =~ /^$station$/ AND $timeFilter'
    stages = sorted({p["priority_dispatch_cm"], p["dispatch_cm"], *p["stages_cm"]})
    stage_colors = ["yellow", "orange", "red", "purple", "dark-purple"]
    d.add(
        Row("積雪"),
        _trend(
            Panel(
                "timeseries",
                "積雪深",
                [_per_device("mean", "depth_cm", raw.SNOW, sel, "$__interval")],
                w=12,
                description="積雪計の生の積雪深(温度補正済み)。町全体警戒の積雪深を線で示す。",
                unit="suffix: cm",
                decimals=0,
                thresholds=[(None, "green"), (p["town_alert_depth_cm"], "red")],
                custom={**_ts(), "thresholdsStyle": {"mode": "dashed"}},
            )
        ),
        _trend(
            Panel(
                "timeseries",
                "時間降雪量",
                [_per_device("max", "new_snow_cm", derived.SNOW_HOURLY, sel, "1h", family="snow")],
                w=12,
                description="気象庁方式の1時間降雪量(ルールエンジンの snow_hourly)。",
                unit="suffix: cm",
                decimals=1,
                custom=_ts(bars=True),
            )
        ),
        _trend(
            Panel(
                "timeseries",
                "前回除雪後の新雪(出動基準)",
                [
                    _per_device(
                        "last", "since_plowed_cm", derived.SNOW_HOURLY, sel, "1h", family="snow"
                    )
                ],
                w=12,
                description=(
                    f"前回の除雪以降の新雪。線: 優先路線 {p['priority_dispatch_cm']:g} cm、"
                    f"出動基準 {p['dispatch_cm']:g} cm、段階出動 "
                    + " / ".join(f"{s:g}" for s in p["stages_cm"])
                    + " cm(設定 [rules.snow])。"
                ),
                unit="suffix: cm",
                decimals=0,
                thresholds=[
                    (None, "green"),
                    *(
                        (s, stage_colors[min(i, len(stage_colors) - 1)])
                        for i, s in enumerate(stages)
                    ),
                ],
                custom={**_ts(), "thresholdsStyle": {"mode": "line+area"}},
            )
        ),
        _trend(
            Panel(
                "timeseries",
                "24時間降雪量",
                [_per_device("last", "new_24h_cm", derived.SNOW_HOURLY, sel, "1h", family="snow")],
                w=12,
                unit="suffix: cm",
                decimals=0,
            )
        ),
        Row("観測局の状態"),
        Panel(
            "table",
            "観測局の状態",
            [
                q(
                    'SELECT last("ok") AS "ok", last("fault") AS "fault", '
                    'last("last_seen_s") AS "last_seen_s", last("battery_v") AS "battery_v", '
                    'last("poor_echo_share") AS "poor_echo_share", '
                    'last("noise_cm") AS "noise_cm" '
                    f'FROM "{derived.STATION_HEALTH}" {sel} GROUP BY "device"',
                    ("ok", "fault", "last_seen_s", "battery_v", "poor_echo_share", "noise_cm"),
                    ("device",),
                    fmt="table",
                    family="snow",
                )
            ],
            w=14,
            h=9,
            description=(
                "ルールエンジンの最新評価(station_health)。最終受信は評価時点からの経過。"
                "測定ばらつきは良好な測定値1回の通常の誤差(過去24時間、1σ)で、"
                "除雪出動判断の新雪量の誤差の元になる。"
            ),
            overrides=[
                _rename("device", "観測局"),
                _rename("Time", "評価時刻"),
                _field(
                    "fault",
                    label="異常",
                    mappings=[_value_map(STATION_FAULTS)],
                    cell="color-background",
                ),
                _field(
                    "ok",
                    label="正常",
                    mappings=[_value_map({"true": ("○", "green"), "false": ("×", "red")})],
                ),
                _field("last_seen_s", label="最終受信から", unit="s"),
                _field("battery_v", label="電池", unit="suffix: V", decimals=2),
                _field("poor_echo_share", label="反射不良率", unit="percentunit"),
                _field("noise_cm", label="測定ばらつき (1σ)", unit="suffix: cm", decimals=1),
            ],
            options={"showHeader": True, "cellHeight": "sm"},
        ),
        _trend(
            Panel(
                "timeseries",
                "電池電圧",
                [_per_device("mean", "battery_v", raw.SNOW, sel, "$__interval")],
                w=10,
                h=9,
                unit="suffix: V",
                decimals=2,
                custom=_ts(0),
            )
        ),
    )
    return d


# ----------------------------------------------------------------------------- 水道


def water(cfg: Config, reg: Registry) -> Dashboard:
    lat, lon = _center(reg)
    watched = sorted(m.id for m in reg.meters.values() if m.watched)
    d = Dashboard(
        "yukimizu-water",
        "水道",
        ["yukimizu", "water"],
        refresh="5m",
        time_from="now-7d",
        description="水道メーターの使用量・夜間最小流量・漏水/破裂/逆流/欠測と見守り世帯",
    )
    d.variables = [
        tag_variable(
            "district", "地区", f'SHOW TAG VALUES FROM "{raw.WATER}" WITH KEY = "district"'
        ),
        tag_variable(
            "meter",
            "メーター",
            f'SHOW TAG VALUES FROM "{raw.WATER}" WITH KEY = "device" '
            'WHERE "district" =~ /^$district$/',
        ),
        # Watched households (見守り) from the registry's `watched` column, as a regex
        # alternation; regenerate the dashboards when the registry changes.
        constant_variable(
            "watched",
            "|".join(watched) if watched else "(none)",
            "見守り世帯のメーター(レジストリの watched 列から生成)",
        ),
    ]
    d.annotation_queries = [
        _alerts_annotation("水道アラート", ("water",), "orange"),
    ]
    sel = 'WHERE "device" =~ /^$meter$/ AND $timeFilter'
    d.add(
        Row("使用量"),
        _trend(
            Panel(
                "timeseries",
                "時間使用量",
                [_per_device("sum", "use_l", derived.WATER_HOURLY, sel, "1h", family="water")],
                w=12,
                description="1時間ごとの使用量(指針の差分。逆流・桁あふれ・交換は使用量に含めない)。",
                unit="suffix: L",
                decimals=0,
                custom=_ts(bars=True, stack=True),
            )
        ),
        _trend(
            Panel(
                "timeseries",
                "夜間最小流量(02–05時)",
                [
                    q(
                        'SELECT last("min_flow_lph") AS "最小流量", last("limit_lph") AS "基準" '
                        f'FROM "{derived.WATER_NIGHT}" {sel} '
                        'GROUP BY time(1d), "device" fill(none)',
                        ("最小流量", "基準"),
                        ("device",),
                        alias="$tag_device $col",
                        family="water",
                    )
                ],
                w=12,
                description="夜間2–5時の最小流量と漏水判定の基準(30夜の中央値から)。",
                unit="suffix: L/h",
                decimals=1,
                custom={**_ts(0), "showPoints": "always"},
            )
        ),
        Row("漏水・破裂・逆流・欠測"),
        Panel(
            "state-timeline",
            "メーターの状態",
            [
                _per_device(
                    "last",
                    "state",
                    derived.WATER_STATE,
                    sel,
                    "$__interval",
                    fill="previous",
                    family="water",
                )
            ],
            w=12,
            h=9,
            mappings=[_value_map(WATER_STATES)],
            color_mode="thresholds",
            options={
                "showValue": "auto",
                "mergeValues": True,
                "rowHeight": 0.8,
                "legend": {"showLegend": True, "displayMode": "list", "placement": "bottom"},
            },
        ),
        Panel(
            "geomap",
            "メーター地図(状態)",
            [
                q(
                    'SELECT last("code") AS "code", last("state") AS "state" '
                    f'FROM "{derived.WATER_STATE}" {sel} GROUP BY "device"',
                    ("code", "state"),
                    ("device",),
                    fmt="table",
                    family="water",
                )
            ],
            w=12,
            h=9,
            description=(
                "位置はレジストリから生成したガゼッティア "
                f"({GAZETTEER_DEVICES}) を device で引く。色は water_state.code。"
            ),
            thresholds=[(None, "green"), (1, "#8e8e8e"), (2, "orange"), (3, "red")],
            mappings=[_value_map(WATER_CODES)],
            options=_geomap(
                [
                    {
                        "type": "markers",
                        "name": "メーター",
                        "config": {
                            "showLegend": True,
                            "style": {
                                "color": {"field": "code", "fixed": "green"},
                                "size": {"fixed": 8},
                                "symbol": {"mode": "fixed", "fixed": "img/icons/marker/circle.svg"},
                                "opacity": 0.9,
                                "text": {"field": "device", "mode": "field"},
                                "textConfig": {"fontSize": 11, "offsetY": -12},
                            },
                        },
                        "location": {
                            "mode": "lookup",
                            "lookup": "device",
                            "gazetteer": GAZETTEER_DEVICES,
                        },
                        "tooltip": True,
                    }
                ],
                lat,
                lon,
                14,
            ),
        ),
        Row("見守り世帯"),
        _trend(
            Panel(
                "timeseries",
                "見守り世帯の時間使用量",
                [
                    _per_device(
                        "sum",
                        "use_l",
                        derived.WATER_HOURLY,
                        'WHERE "device" =~ /^($watched)$/ AND $timeFilter',
                        "1h",
                        fill="0",
                        family="water",
                    )
                ],
                w=12,
                description="使用が途絶えた/続きすぎる世帯に気づくため(0 L の時間も表示)。",
                unit="suffix: L",
                decimals=0,
                custom=_ts(bars=True),
            )
        ),
        Panel(
            "table",
            "見守り世帯の状態",
            [
                q(
                    'SELECT last("state") AS "state", last("code") AS "code" '
                    f'FROM "{derived.WATER_STATE}" '
                    'WHERE "device" =~ /^($watched)$/ AND $timeFilter GROUP BY "device"',
                    ("state", "code"),
                    ("device",),
                    fmt="table",
                    family="water",
                )
            ],
            w=12,
            overrides=[
                _rename("device", "メーター"),
                _rename("Time", "更新"),
                _field(
                    "state",
                    label="状態",
                    mappings=[_value_map(WATER_STATES)],
                    cell="color-background",
                ),
                _field("code", hidden=True),
            ],
        ),
    )
    return d


# ----------------------------------------------------------------------------- 除雪


def plows(cfg: Config, reg: Registry) -> Dashboard:
    lat, lon = _center(reg)
    d = Dashboard(
        "yukimizu-plows",
        "除雪",
        ["yukimizu", "plows"],
        refresh="30s",
        time_from="now-12h",
        description="除雪車の現在地と軌跡、路線ごとの除雪からの経過時間、出動の進み具合と作業時間",
    )
    d.variables = [
        tag_variable("vehicle", "除雪車", f'SHOW TAG VALUES FROM "{raw.PLOW}" WITH KEY = "device"'),
    ]
    d.annotation_queries = [
        _alerts_annotation("出動・除雪車アラート", ("plow",), "blue"),
    ]
    vsel = 'WHERE "device" =~ /^$vehicle$/ AND $timeFilter'
    # The last plowing of every segment: newest point per segment up to the range end,
    # looking back a week (older counts as "not plowed": > 24 h anyway).
    seg_window = "time <= ${__to:date:seconds}s AND time > ${__to:date:seconds}s - 7d"
    d.add(
        Row("現在地と路線"),
        Panel(
            "geomap",
            "除雪車の現在地と軌跡",
            [
                q(
                    'SELECT last("lat") AS "lat", last("lon") AS "lon", '
                    'last("speed_kmh") AS "speed_kmh", last("blade_down") AS "blade_down" '
                    f'FROM "{raw.PLOW}" {vsel} GROUP BY "device"',
                    ("lat", "lon", "speed_kmh", "blade_down"),
                    ("device",),
                    fmt="table",
                ),
                q(
                    'SELECT mean("lat") AS "lat", mean("lon") AS "lon" '
                    f'FROM "{raw.PLOW}" {vsel} '
                    'GROUP BY time($__interval), "device" fill(none)',
                    ("lat", "lon"),
                    ("device",),
                    ref="B",
                    fmt="table",
                ),
            ],
            w=12,
            h=14,
            description="現在地(最新の位置)と表示範囲の軌跡(表示間隔ごとの平均位置)。",
            options=_geomap(
                [
                    {
                        "type": "route",
                        "name": "軌跡",
                        "filterData": {"id": "byRefId", "options": "B"},
                        "location": {"mode": "coords", "latitude": "lat", "longitude": "lon"},
                        "config": {
                            "style": {
                                "color": {"fixed": "blue"},
                                "lineWidth": 2,
                                "opacity": 0.6,
                            },
                            "arrow": 0,
                        },
                    },
                    {
                        "type": "markers",
                        "name": "現在地",
                        "filterData": {"id": "byRefId", "options": "A"},
                        "location": {"mode": "coords", "latitude": "lat", "longitude": "lon"},
                        "config": {
                            "showLegend": False,
                            "style": {
                                "color": {"fixed": "dark-blue"},
                                "size": {"fixed": 10},
                                "symbol": {"mode": "fixed", "fixed": "img/icons/marker/truck.svg"},
                                "text": {"field": "device", "mode": "field"},
                                "textConfig": {"fontSize": 12, "offsetY": -14},
                            },
                        },
                        "tooltip": True,
                    },
                ],
                lat,
                lon,
                13,
            ),
        ),
        Panel(
            "geomap",
            "路線の除雪からの経過時間",
            [
                q(
                    'SELECT last("coverage") AS "coverage", last("plow") AS "plow" '
                    f'FROM "{derived.SEGMENT_STATUS}" WHERE {seg_window} '
                    'GROUP BY "segment", "priority"',
                    ("coverage", "plow"),
                    ("segment", "priority"),
                    fmt="table",
                    family="plow",
                )
            ],
            w=12,
            h=14,
            description=(
                "路線ごとの最後の除雪(segment_status の最新点)から表示範囲の終わりまでの"
                "時間。色: 1時間未満 / 1–3 / 3–6 / 6–12 / 12–24 / 24時間以上。"
                "線形はレジストリの routes.geojson から生成したガゼッティア "
                f"({GAZETTEER_SEGMENTS})。"
            ),
            unit="suffix: 時間",
            decimals=1,
            thresholds=SINCE_PLOWED_BANDS,
            transformations=_hours_since_last("除雪からの時間"),
            options=_geomap(
                [
                    {
                        "type": "markers",
                        "name": "路線",
                        "config": {
                            "showLegend": True,
                            "style": {
                                "color": {"field": "除雪からの時間", "fixed": "red"},
                                "size": {"fixed": 4},
                                "lineWidth": 4,
                                "opacity": 0.9,
                            },
                        },
                        "location": {
                            "mode": "lookup",
                            "lookup": "segment",
                            "gazetteer": GAZETTEER_SEGMENTS,
                        },
                        "tooltip": True,
                    }
                ],
                lat,
                lon,
                13,
            ),
        ),
        Panel(
            "table",
            "路線別 除雪からの経過時間",
            [
                q(
                    'SELECT last("coverage") AS "coverage", last("plow") AS "plow", '
                    'last("inferred") AS "inferred" '
                    f'FROM "{derived.SEGMENT_STATUS}" WHERE {seg_window} '
                    'GROUP BY "segment", "priority"',
                    ("coverage", "plow", "inferred"),
                    ("segment", "priority"),
                    fmt="table",
                    family="plow",
                )
            ],
            w=12,
            h=10,
            unit="suffix: 時間",
            decimals=1,
            thresholds=SINCE_PLOWED_BANDS,
            transformations=[
                *_hours_since_last("除雪からの時間"),
                {"id": "sortBy", "options": {"sort": [{"field": "除雪からの時間", "desc": True}]}},
            ],
            overrides=[
                _rename("segment", "路線"),
                _rename("priority", "優先度"),
                _rename("plow", "除雪車"),
                _rename("Time", "最終除雪"),
                _field("coverage", label="カバー率", unit="percentunit"),
                _field("inferred", label="推定"),
                _field("除雪からの時間", cell="color-background"),
            ],
        ),
        Panel(
            "bargauge",
            "出動の進み具合",
            [
                q(
                    'SELECT last("progress") AS "progress" '
                    f'FROM "{derived.DISPATCH}" WHERE $timeFilter GROUP BY "dispatch_id"',
                    ("progress",),
                    ("dispatch_id",),
                    alias="$tag_dispatch_id",
                    family="plow",
                )
            ],
            w=12,
            h=10,
            description="出動ごとの除雪済み路線の割合(dispatch.progress)。",
            unit="percentunit",
            thresholds=[(None, "orange"), (0.5, "yellow"), (1, "green")],
            options={
                "orientation": "horizontal",
                "displayMode": "lcd",
                "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                "min": 0,
                "max": 1,
            },
        ),
        Panel(
            "table",
            "工区別 残りの路線と完了見込み",
            [
                q(
                    'SELECT last("remaining_segments") AS "remaining_segments", '
                    'last("remaining_km") AS "remaining_km", '
                    'last("unknown_segments") AS "unknown_segments", '
                    'last("finish_s") * 1000 AS "finish_ms", '
                    'last("finish_late_s") * 1000 AS "finish_late_ms" '
                    f'FROM "{derived.ZONE_ETA}" WHERE $timeFilter GROUP BY "zone", "contractor"',
                    (
                        "remaining_segments",
                        "remaining_km",
                        "unknown_segments",
                        "finish_ms",
                        "finish_late_ms",
                    ),
                    ("zone", "contractor"),
                    fmt="table",
                    family="plow",
                )
            ],
            w=24,
            h=7,
            description=(
                "出動中の工区ごとの残り路線と完了見込み(zone_eta の最新点)。見込み不明は"
                "車両が出ていない・位置が途絶えた路線など(docs/rules-plow.md)。"
            ),
            overrides=[
                _rename("zone", "工区"),
                _rename("contractor", "業者"),
                _rename("Time", "更新"),
                _field("remaining_segments", label="残り路線"),
                _field("remaining_km", label="残り距離", unit="suffix: km"),
                _field("unknown_segments", label="見込み不明"),
                _field("finish_ms", label="完了見込み", unit="dateTimeAsLocal"),
                _field("finish_late_ms", label="遅くとも", unit="dateTimeAsLocal"),
            ],
        ),
        Row("作業"),
        Panel(
            "table",
            "出動ごとの除雪作業時間",
            [
                q(
                    'SELECT last("state") AS "state", last("priority_done") AS "priority_done", '
                    'last("priority_total") AS "priority_total", '
                    'last("segments_done") AS "segments_done", '
                    'last("segments_total") AS "segments_total", '
                    'last("work_time_s") AS "work_time_s" '
                    f'FROM "{derived.DISPATCH}" WHERE $timeFilter GROUP BY "dispatch_id"',
                    (
                        "state",
                        "priority_done",
                        "priority_total",
                        "segments_done",
                        "segments_total",
                        "work_time_s",
                    ),
                    ("dispatch_id",),
                    fmt="table",
                    family="plow",
                )
            ],
            w=12,
            h=8,
            description="除雪作業時間 = 出動から最後の優先路線の除雪まで(完了した出動のみ)。",
            overrides=[
                _rename("dispatch_id", "出動"),
                _rename("Time", "更新"),
                _rename("priority_done", "優先路線 済"),
                _rename("priority_total", "優先路線 計"),
                _rename("segments_done", "全路線 済"),
                _rename("segments_total", "全路線 計"),
                _field(
                    "state", label="状態", mappings=[_value_map(DISPATCH_STATES)], cell="color-text"
                ),
                _field("work_time_s", label="除雪作業時間", unit="dtdurations"),
            ],
        ),
        Panel(
            "table",
            "本日の車両別作業",
            [
                q(
                    'SELECT sum("working_s") / 3600 AS "working_h", '
                    'sum("blade_s") / 3600 AS "blade_h", sum("idle_s") / 3600 AS "idle_h", '
                    'sum("blade_km") AS "blade_km", sum("travel_km") AS "travel_km" '
                    f'FROM "{derived.PLOW_WORK}" {vsel} GROUP BY "device", "contractor"',
                    ("working_h", "blade_h", "idle_h", "blade_km", "travel_km"),
                    ("device", "contractor"),
                    fmt="table",
                    family="plow",
                )
            ],
            w=12,
            h=8,
            description="本日(0時から)の稼働時間・排雪板を下ろした時間と距離(plow_work の合計)。",
            time_from="now/d",
            decimals=1,
            overrides=[
                _rename("device", "除雪車"),
                _rename("contractor", "業者"),
                _field("Time", hidden=True),
                *(
                    _field(name, label=label, unit=unit)
                    for name, label, unit in (
                        ("working_h", "稼働", "suffix: 時間"),
                        ("blade_h", "排雪板下げ", "suffix: 時間"),
                        ("idle_h", "待機", "suffix: 時間"),
                        ("blade_km", "排雪板下げ距離", "suffix: km"),
                        ("travel_km", "走行距離", "suffix: km"),
                    )
                ),
            ],
        ),
        _trend(
            Panel(
                "timeseries",
                "速度",
                [_per_device("mean", "speed_kmh", raw.PLOW, vsel, "$__interval")],
                w=24,
                h=7,
                unit="suffix: km/h",
                decimals=0,
                custom=_ts(0),
            )
        ),
    )
    return d


# ----------------------------------------------------------------------------- システム


def system(cfg: Config, reg: Registry) -> Dashboard:
    d = Dashboard(
        "yukimizu-system",
        "システム",
        ["yukimizu", "system"],
        refresh="30s",
        time_from="now-6h",
        description="取り込み(ingest)・ルールエンジン・通知の稼働状況",
    )
    per_s = "* 1000 / $__interval_ms"
    kind_queries: list[Query] = [
        q(
            f'SELECT count("depth_cm") {per_s} AS "rate" FROM "{raw.SNOW}" '
            "WHERE $timeFilter GROUP BY time($__interval) fill(0)",
            ("rate",),
            alias="積雪計",
        ),
        q(
            f'SELECT count("register_l") {per_s} AS "rate" FROM "{raw.WATER}" '
            "WHERE $timeFilter GROUP BY time($__interval) fill(0)",
            ("rate",),
            ref="B",
            alias="水道メーター",
        ),
        q(
            f'SELECT count("lat") {per_s} AS "rate" FROM "{raw.PLOW}" '
            "WHERE $timeFilter GROUP BY time($__interval) fill(0)",
            ("rate",),
            ref="C",
            alias="除雪車GPS",
        ),
    ]
    d.annotation_queries = [
        _alerts_annotation("システムアラート", ("system",), "purple"),
    ]
    d.add(
        Row("取り込み"),
        _trend(
            Panel(
                "timeseries",
                "種類別の受信件数(毎秒)",
                kind_queries,
                w=12,
                description=(
                    "InfluxDB に書かれた読み取りの件数(機器の時刻で集計: 一括送信は過去に入る)。"
                ),
                unit="suffix: 件/秒",
                decimals=2,
                custom=_ts(bars=True, stack=True),
            )
        ),
        _trend(
            Panel(
                "timeseries",
                "ingest の書き込み(毎秒)",
                [
                    q(
                        'SELECT non_negative_derivative(last("written"), 1s) AS "written", '
                        'non_negative_derivative(last("received"), 1s) AS "received" '
                        f'FROM "{raw.INGEST_STATS}" WHERE $timeFilter '
                        'GROUP BY time($__interval), "client_id" fill(none)',
                        ("written", "received"),
                        ("client_id",),
                        alias="$tag_client_id $col",
                    )
                ],
                w=12,
                unit="suffix: 件/秒",
                decimals=1,
            )
        ),
        _trend(
            Panel(
                "timeseries",
                "デッドレター(理由別)",
                [
                    q(
                        'SELECT non_negative_difference(last("count")) AS "count" '
                        f'FROM "{raw.DEADLETTER_STATS}" WHERE $timeFilter '
                        'GROUP BY time($__interval), "reason" fill(none)',
                        ("count",),
                        ("reason",),
                        alias="$tag_reason",
                    )
                ],
                w=12,
                description="取り込めなかったメッセージ(yukimizu deadletter list で確認)。",
                unit="suffix: 件",
                decimals=0,
                custom=_ts(bars=True, stack=True),
            )
        ),
        _trend(
            Panel(
                "timeseries",
                "スプール・キュー・再接続",
                [
                    q(
                        'SELECT last("spool_depth") AS "spool_depth", '
                        'last("queue_depth") AS "queue_depth" '
                        f'FROM "{raw.INGEST_STATS}" WHERE $timeFilter '
                        'GROUP BY time($__interval), "client_id" fill(none)',
                        ("spool_depth", "queue_depth"),
                        ("client_id",),
                        alias="$tag_client_id $col",
                    ),
                    q(
                        'SELECT non_negative_difference(last("reconnects")) AS "reconnects", '
                        'non_negative_difference(last("session_lost")) AS "session_lost" '
                        f'FROM "{raw.INGEST_STATS}" WHERE $timeFilter '
                        'GROUP BY time($__interval), "client_id" fill(none)',
                        ("reconnects", "session_lost"),
                        ("client_id",),
                        ref="B",
                        alias="$tag_client_id $col",
                    ),
                ],
                w=12,
                description=(
                    "spool_depth: InfluxDB に書けず手元に貯めたバッチ。reconnects / session_lost: "
                    "MQTT の再接続とセッション喪失(喪失中の読み取りは欠ける可能性)。"
                ),
                decimals=0,
                custom=_ts(0),
            )
        ),
        Row("機器"),
        Panel(
            "table",
            "最近受信していない機器",
            [
                q(
                    f'SELECT last("lag_s") AS "lag_s" FROM "{m}" '
                    "WHERE time <= ${__to:date:seconds}s AND time > ${__to:date:seconds}s - 30d "
                    'GROUP BY "device"',
                    ("lag_s",),
                    ("device",),
                    ref=ref,
                    fmt="table",
                )
                for ref, m in (("A", raw.SNOW), ("B", raw.WATER), ("C", raw.PLOW))
            ],
            w=12,
            h=10,
            description="機器ごとの最後の読み取り(過去30日)。経過時間の長い順。",
            unit="suffix: 時間",
            decimals=1,
            thresholds=[(None, "green"), (1, "yellow"), (26, "red")],
            transformations=[
                {"id": "merge", "options": {}},
                *_hours_since_last("経過時間"),
                {"id": "sortBy", "options": {"sort": [{"field": "経過時間", "desc": True}]}},
            ],
            overrides=[
                _rename("device", "機器"),
                _rename("Time", "最終受信(機器時刻)"),
                _field("lag_s", label="到着遅延", unit="s"),
                _field("経過時間", cell="color-background"),
            ],
        ),
        _trend(
            Panel(
                "timeseries",
                "ルールエンジンの処理時間",
                [
                    q(
                        'SELECT max("cycle_s") AS "cycle_s" '
                        f'FROM "{derived.RULES_STATS}" WHERE $timeFilter '
                        'GROUP BY time($__interval), "instance" fill(none)',
                        ("cycle_s",),
                        ("instance",),
                        alias="$tag_instance",
                        family="engine",
                    )
                ],
                w=12,
                h=10,
                description="1回の評価にかかった時間(yukimizu_rules.cycle_s)。評価間隔を超えると遅れる。",
                unit="s",
                decimals=2,
            )
        ),
        Row("通知"),
        _trend(
            Panel(
                "timeseries",
                "アラート(発生・解消)",
                [
                    q(
                        'SELECT count("key") AS "count" '
                        f'FROM "{derived.ALERT_TRANSITION}" WHERE $timeFilter '
                        'GROUP BY time($__interval), "status", "severity" fill(none)',
                        ("count",),
                        ("status", "severity"),
                        alias="$tag_status $tag_severity",
                        family="engine",
                    )
                ],
                w=12,
                unit="suffix: 件",
                decimals=0,
                custom=_ts(bars=True, stack=True),
            )
        ),
        Panel(
            "stat",
            "15分以上 未確認の重大アラート",
            [
                q(
                    f'SELECT last("unacked_critical") AS "unacked_critical" FROM "{ALERTS_STATS}" '
                    "WHERE $timeFilter",
                    ("unacked_critical",),
                )
            ],
            w=6,
            description=(
                "発報から15分たっても誰も確認していない重大(critical)アラートの件数"
                "(サイレンス中を除く)。0 でなければ当番に電話で確認を。"
                "アラート通知サービスが30秒ごとに書く yukimizu_alerts.unacked_critical。"
            ),
            decimals=0,
            thresholds=[(None, "green"), (1, "red")],
            color_mode="thresholds",
            options={
                "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                "colorMode": "background",
                "graphMode": "area",
                "textMode": "value",
            },
        ),
        _trend(
            Panel(
                "timeseries",
                "確認までの時間",
                [
                    q(
                        'SELECT max("ack_s_max") / 60 AS "max", mean("ack_s_mean") / 60 AS "mean" '
                        f'FROM "{ALERTS_STATS}" WHERE $timeFilter '
                        "GROUP BY time($__interval) fill(none)",
                        ("max", "mean"),
                        alias="$col",
                    )
                ],
                w=6,
                description=("アラートが届いてから誰かが確認するまで(分)。max: 最長、mean: 平均。"),
                unit="suffix: 分",
                decimals=1,
                thresholds=[(None, "green"), (15, "red")],
                custom=_ts(bars=True),
            )
        ),
        _trend(
            Panel(
                "timeseries",
                "通知の送信・失敗・再試行(経路別)",
                [
                    q(
                        f'SELECT non_negative_difference(last("{f}")) AS "{f}" '
                        f'FROM "{ALERTS_CHANNEL_STATS}" WHERE $timeFilter '
                        'GROUP BY time($__interval), "channel" fill(none)',
                        (f,),
                        ("channel",),
                        ref=ref,
                        alias=f"$tag_channel {label}",
                    )
                    for ref, f, label in (
                        ("A", "sent", "送信"),
                        ("B", "failed", "失敗"),
                        ("C", "retried", "再試行"),
                    )
                ],
                w=12,
                description=(
                    "経路(email・webhook・line・mqtt・console)ごとの送信成功、失敗した試行、"
                    "そのうち同じ経路で再試行したもの(yukimizu_alerts_channel)。"
                ),
                unit="suffix: 件",
                decimals=0,
                custom=_ts(bars=True, stack=True),
            )
        ),
        _trend(
            Panel(
                "timeseries",
                "確認・上位への連絡・再通知",
                [
                    q(
                        f'SELECT non_negative_difference(last("{f}")) AS "{f}" '
                        f'FROM "{ALERTS_STATS}" WHERE $timeFilter '
                        "GROUP BY time($__interval) fill(none)",
                        (f,),
                        ref=ref,
                        alias=label,
                    )
                    for ref, f, label in (
                        ("A", "acknowledged", "確認"),
                        ("B", "escalations", "上位へ連絡"),
                        ("C", "repeats", "再通知"),
                        ("D", "notifications_failed", "全経路で失敗"),
                    )
                ],
                w=12,
                description=(
                    "アラート通知サービスの件数(yukimizu_alerts)。全経路で失敗: どの経路でも"
                    "届かなかった通知(yukimizu alerts show で確認)。"
                ),
                unit="suffix: 件",
                decimals=0,
                custom=_ts(bars=True, stack=True),
            )
        ),
        Panel(
            "table",
            "通知の送信・失敗・確認",
            [
                q(
                    # alert_event is the alerts service's (acknowledgements, delivery
                    # results); grouping by every tag keeps this query valid whatever
                    # tags it chooses, and a missing measurement is an empty answer.
                    f'SELECT * FROM "{ALERT_EVENT}" WHERE $timeFilter ORDER BY time DESC LIMIT 200',
                    (),
                    fmt="table",
                    may_be_empty=True,
                )
            ],
            w=12,
            description=(
                "アラート通知サービスの記録(alert_event: 送信・失敗・確認)。サービスが動く前は空。"
            ),
            options={"showHeader": True, "cellHeight": "sm"},
        ),
    )
    return d


BOARDS = {"snow": snow, "water": water, "plows": plows, "system": system}
