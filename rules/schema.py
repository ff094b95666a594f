"""Derived series the rules engine writes back to InfluxDB: the contract for dashboards,
the public page and the reports (they import this module and nothing else of ``rules``).

Every point is idempotent: the same evaluation writes the same measurement, tags and
timestamp again, so a re-evaluation overwrites rather than duplicates. Field types are
pinned here (an int/float flip is a write error in InfluxDB). The README's schema table
lists these; ``tests/test_rules_schema.py`` keeps the two in step.
"""

from __future__ import annotations

from typing import Literal

FieldType = Literal["float", "int", "bool", "str"]

WATER_HOURLY = "water_hourly"
WATER_NIGHT = "water_night"
WATER_STATE = "water_state"
SNOW_HOURLY = "snow_hourly"
STATION_HEALTH = "station_health"
SEGMENT_STATUS = "segment_status"
DISPATCH = "dispatch"
PLOW_WORK = "plow_work"
SEGMENT_ETA = "segment_eta"
ZONE_ETA = "zone_eta"
ALERT_TRANSITION = "alert_transition"
RULES_STATS = "yukimizu_rules"

# measurement → (tags, {field: type}, what a point means and its timestamp)
DERIVED: dict[str, tuple[tuple[str, ...], dict[str, FieldType], str]] = {
    WATER_HOURLY: (
        ("device", "district"),
        {"use_l": "float", "reverse_l": "float", "register_l": "float"},
        "water used in the hour starting at the timestamp (differences of the register; "
        "never negative: a backwards step is reverse_l, a rollover or swap is not use; "
        "after a gap in the readings, the use since the previous reading)",
    ),
    WATER_NIGHT: (
        ("device", "district"),
        {"min_flow_lph": "float", "median30_lph": "float", "limit_lph": "float"},
        "minimum night flow 02:00–05:00 JST of the night starting at the timestamp "
        "(02:00 JST), the meter's 30-night median and the alert limit",
    ),
    WATER_STATE: (
        ("device", "district"),
        {"state": "str", "code": "int"},
        "the meter's worst active finding, written when it changes (at the finding's "
        "event time): ok(0) stale(1) stuck(1) swap(1) low_battery(1) leak(2) reverse(2) "
        "tamper(2) dry(2) watch(2) burst(3)",
    ),
    SNOW_HOURLY: (
        ("device", "district"),
        {
            "depth_cm": "float",
            "new_snow_cm": "float",
            "new_24h_cm": "float",
            "since_plowed_cm": "float",
            "air_temp_c": "float",
        },
        "cleaned depth at the end of the hour starting at the timestamp, JMA hourly new "
        "snow, new snow over the last 24 h and since the last plowing",
    ),
    STATION_HEALTH: (
        ("device", "district"),
        {
            "ok": "bool",
            "fault": "str",
            "last_seen_s": "int",
            "battery_v": "float",
            "poor_echo_share": "float",
            "noise_cm": "float",
        },
        "a station's health at the evaluation time (fault: '' or offline, spike, "
        "frozen, poor_echo, low_battery; noise_cm: one good reading's usual scatter, "
        "σ over the last 24 h)",
    ),
    SEGMENT_STATUS: (
        ("segment", "priority"),
        {"plow": "str", "coverage": "float", "inferred": "bool", "dispatch_id": "str"},
        "the segment was plowed at the timestamp (≥ 80 % covered within 15 m with the "
        "blade down); the newest point per segment is its last plowing",
    ),
    DISPATCH: (
        ("dispatch_id",),
        {
            "state": "str",
            "started_s": "int",
            "priority_total": "int",
            "priority_done": "int",
            "segments_total": "int",
            "segments_done": "int",
            "progress": "float",
            "work_time_s": "int",
        },
        "a dispatch's state at the timestamp: called → working → done; work_time_s is "
        "除雪作業時間 (dispatch → last priority segment plowed) once done",
    ),
    PLOW_WORK: (
        ("device", "contractor"),
        {
            "working_s": "int",
            "blade_s": "int",
            "idle_s": "int",
            "blade_km": "float",
            "travel_km": "float",
            "dispatch_id": "str",
        },
        "a plow's work in the hour starting at the timestamp",
    ),
    SEGMENT_ETA: (
        ("segment", "zone"),
        {
            "state": "str",
            "reason": "str",
            "plow": "str",
            "eta_s": "int",
            "early_s": "int",
            "late_s": "int",
            "dispatch_id": "str",
        },
        "during a dispatch, every few minutes: when the segment is expected to be plowed "
        "(eta_s, band early_s–late_s, epoch seconds) as seen at the timestamp; state eta, "
        "done (plowed in this dispatch), unknown (見込み不明; reason no_vehicle, silent, "
        "returned, skipped, too_wide; times 0) or ended (the dispatch ended unplowed)",
    ),
    ZONE_ETA: (
        ("zone", "contractor"),
        {
            "remaining_segments": "int",
            "remaining_km": "float",
            "unknown_segments": "int",
            "finish_s": "int",
            "finish_late_s": "int",
            "dispatch_id": "str",
        },
        "a work zone's remaining work at the timestamp and its expected finish (the "
        "latest segment ETA and its band's late end; 0 when none is known)",
    ),
    ALERT_TRANSITION: (
        ("rule", "severity", "status", "category", "subject"),
        {"key": "str", "district": "str", "message": "str", "values": "str"},
        "an alert transition (rules/transitions.py) at its event time, for annotations; "
        "the subject is a tag, so subjects changing at one instant are one point each",
    ),
    RULES_STATS: (
        ("instance",),
        {"cycle_s": "float", "points_read": "int", "transitions": "int", "firing": "int"},
        "one evaluation cycle of the rules engine",
    ),
}

TAGS: dict[str, tuple[str, ...]] = {m: spec[0] for m, spec in DERIVED.items()}
FIELDS: dict[str, dict[str, FieldType]] = {m: spec[1] for m, spec in DERIVED.items()}


def markdown_table() -> str:
    """The README's table of derived series (tests/test_rules_schema.py keeps them equal)."""
    rows = ["| measurement | tags | fields | a point means |", "|---|---|---|---|"]
    for m, (tags, fields, meaning) in DERIVED.items():
        f = ", ".join(f"`{k}` {t}" for k, t in fields.items())
        t = ", ".join(f"`{x}`" for x in tags)
        rows.append(f"| `{m}` | {t} | {f} | {meaning} |")
    return "\n".join(rows)
