"""The InfluxDB schema: measurements, tags and pinned field types.

Field types are fixed here once, because InfluxDB refuses a point whose field type
differs from what the shard already holds (an int/float flip is a write error).
Dashboards and rules read these names; change them only with a migration note.
"""

from __future__ import annotations

from typing import Literal

FieldType = Literal["float", "int", "bool", "str"]

SNOW = "snow_depth"
WATER = "water_meter"
PLOW = "plow_position"
INGEST_STATS = "yukimizu_ingest"
DEADLETTER_STATS = "yukimizu_deadletter"

_COMMON: dict[str, FieldType] = {
    "seq": "int",
    "lag_s": "float",  # seconds from device time to ingest's receive time
    "battery_v": "float",
    "rssi_dbm": "float",
    "alarm_leak": "bool",
    "alarm_burst": "bool",
    "alarm_reverse": "bool",
    "alarm_tamper": "bool",
    "alarm_dry": "bool",
    "alarm_low_battery": "bool",
}

FIELDS: dict[str, dict[str, FieldType]] = {
    SNOW: {
        "depth_cm": "float",
        "distance_mm": "float",
        "air_temp_c": "float",
        "quality": "int",
        **_COMMON,
    },
    WATER: {"register_l": "float", "flow_lph": "float", **_COMMON},
    PLOW: {
        "lat": "float",
        "lon": "float",
        "speed_kmh": "float",
        "heading_deg": "float",
        "blade_down": "bool",
        "spreader": "bool",
        **_COMMON,
    },
    INGEST_STATS: {
        "received": "int",
        "written": "int",
        "deadlettered": "int",
        "dropped": "int",
        "spooled": "int",
        "spool_depth": "int",
        "spool_bytes": "int",
        "queue_depth": "int",
        "batch_latency_ms": "float",
        "reconnects": "int",
        "session_lost": "int",
    },
    DEADLETTER_STATS: {"count": "int"},
}

TAGS: dict[str, tuple[str, ...]] = {
    SNOW: ("device", "district"),
    WATER: ("device", "district"),
    PLOW: ("device", "contractor"),
    INGEST_STATS: ("client_id",),
    DEADLETTER_STATS: ("client_id", "reason"),
}

MEASUREMENT_BY_KIND: dict[str, str] = {"snow": SNOW, "water": WATER, "plow": PLOW}
