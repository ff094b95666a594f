"""What the alerts service writes to InfluxDB: one ``alert_event`` point per lifecycle step.

Grafana's system board lists them (``SELECT * FROM alert_event …``); the dashboards'
annotations read the rules engine's ``alert_transition`` (rules/schema.py). Field
types are pinned here (docs/architecture.md#influxdb). Tags: the rule, severity,
category, subject and the event (``firing``, ``acknowledged``, ``resolved``); the
timestamp is the transition's event time, or the acknowledgement time. Identity is
measurement + tags + time, so a point written twice after a crash overwrites itself,
while ten stations firing in one evaluation cycle are ten points: the subject is a
tag (bounded: devices, segments, districts and receivers of the registry and the
configuration).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.lineproto import Encoder

ALERT_EVENT = "alert_event"

TAGS: dict[str, tuple[str, ...]] = {
    ALERT_EVENT: ("rule", "severity", "category", "subject", "event"),
}
FIELDS: dict[str, dict[str, str]] = {
    ALERT_EVENT: {
        "alert_id": "int",
        "key": "str",
        "district": "str",
        "by": "str",
        "message": "str",
    },
}

_ENCODER = Encoder(TAGS, FIELDS)


def event_line(alert: Mapping[str, Any], event: str, at_s: float, by: str | None = None) -> str:
    """The line for one event of one alert row (see alerts/store.py)."""
    return _ENCODER.encode(
        ALERT_EVENT,
        {
            "rule": alert["rule"],
            "severity": alert["severity"],
            "category": alert["category"],
            "subject": alert["subject"],
            "event": event,
        },
        {
            "alert_id": int(alert["id"]),
            "key": alert["key"],
            "district": alert["district"],
            "by": by,
            "message": alert["message"],
        },
        round(at_s * 1000),
    )
