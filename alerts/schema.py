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
# The service's own figures, every ``metrics_interval_s`` (docs/alerts.md#own-figures):
# counters since the process started (a restart starts them at 0 again: read them with
# non_negative_difference), gauges of the state database now.
ALERTS_STATS = "yukimizu_alerts"
CHANNEL_STATS = "yukimizu_alerts_channel"
# a critical alert still firing unacknowledged this long is counted in unacked_critical
UNACKED_AFTER_S = 15 * 60

TAGS: dict[str, tuple[str, ...]] = {
    ALERT_EVENT: ("rule", "severity", "category", "subject", "event"),
    ALERTS_STATS: (),
    CHANNEL_STATS: ("channel",),
}
FIELDS: dict[str, dict[str, str]] = {
    ALERT_EVENT: {
        "alert_id": "int",
        "key": "str",
        "district": "str",
        "by": "str",
        "message": "str",
    },
    ALERTS_STATS: {
        # counters since start
        "firing": "int",
        "resolved": "int",
        "duplicates": "int",
        "escalations": "int",
        "repeats": "int",
        "acknowledged": "int",
        "ack_notices": "int",
        "notifications_sent": "int",
        "notifications_failed": "int",
        "delivery_failed": "int",
        "critical_rounds": "int",
        # acknowledgements seen since the previous point: seconds from the alert's
        # arrival to its acknowledgement (absent when there was none)
        "ack_s_mean": "float",
        "ack_s_max": "float",
        # gauges
        "open_firing": "int",
        "open_acknowledged": "int",
        "unacked_critical": "int",  # firing, critical, unacknowledged ≥ UNACKED_AFTER_S
        "pending_notifications": "int",
    },
    CHANNEL_STATS: {"sent": "int", "failed": "int", "retried": "int"},
}

_ENCODER = Encoder(TAGS, FIELDS)


def stats_lines(
    counters: Mapping[str, int],
    gauges: Mapping[str, int],
    ack_s: list[float],
    channels: Mapping[str, Mapping[str, int]],
    at_s: float,
) -> list[str]:
    """The service's figures as lines: one ``yukimizu_alerts`` point and one
    ``yukimizu_alerts_channel`` point per channel that has been used."""
    ms = round(at_s * 1000)
    fields: dict[str, Any] = {f: counters.get(f, 0) for f in COUNTERS}
    fields.update(gauges)
    if ack_s:
        fields["ack_s_mean"] = sum(ack_s) / len(ack_s)
        fields["ack_s_max"] = max(ack_s)
    lines = [_ENCODER.encode(ALERTS_STATS, {}, fields, ms)]
    for ch, c in sorted(channels.items()):
        lines.append(
            _ENCODER.encode(
                CHANNEL_STATS,
                {"channel": ch},
                {k: c.get(k, 0) for k in ("sent", "failed", "retried")},
                ms,
            )
        )
    return lines


COUNTERS = (
    "firing",
    "resolved",
    "duplicates",
    "escalations",
    "repeats",
    "acknowledged",
    "ack_notices",
    "notifications_sent",
    "notifications_failed",
    "delivery_failed",
    "critical_rounds",
)


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
