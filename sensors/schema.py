"""The InfluxDB schema: measurements, tags and pinned field types.

Field types are fixed once, because InfluxDB refuses a point whose field type
differs from what the shard already holds (an int/float flip is a write error).
Dashboards and rules read these names; change them only with a migration note.
"""

from __future__ import annotations

from sensors.models import (
    FieldType,
    MeterReading,
    PlowPosition,
    SnowReading,
    stored_fields,
)

__all__ = [
    "DEADLETTER_STATS",
    "FIELDS",
    "INGEST_STATS",
    "LAG_FIELD",
    "MEASUREMENT_BY_KIND",
    "PLOW",
    "SNOW",
    "TAGS",
    "WATER",
    "FieldType",
]

SNOW = "snow_depth"
WATER = "water_meter"
PLOW = "plow_position"
INGEST_STATS = "yukimizu_ingest"
DEADLETTER_STATS = "yukimizu_deadletter"

# Written by ingest beside every reading (not sent by devices): seconds from the
# device's time to ingest's receive time, i.e. when the reading arrived.
LAG_FIELD = "lag_s"
_RECEIVED: dict[str, FieldType] = {LAG_FIELD: "float"}

FIELDS: dict[str, dict[str, FieldType]] = {
    # The readings' fields and types come from their models (sensors.models.Stored).
    SNOW: {**stored_fields(SnowReading), **_RECEIVED},
    WATER: {**stored_fields(MeterReading), **_RECEIVED},
    PLOW: {**stored_fields(PlowPosition), **_RECEIVED},
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
        "deadletter_bytes": "int",
        "deadletter_evicted": "int",
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
