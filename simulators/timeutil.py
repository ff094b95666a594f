"""Scenario time: integer Unix seconds (UTC), and the text forms payloads need."""

from __future__ import annotations

import functools
import time
from datetime import UTC, datetime

__all__ = ["DAY", "HOUR", "from_datetime", "iso", "iso_ms", "to_datetime"]

HOUR = 3600
DAY = 86_400


def from_datetime(dt: datetime) -> int:
    """Unix seconds of an aware datetime (sub-second parts are dropped)."""
    return int(dt.timestamp())


def to_datetime(t: int) -> datetime:
    return datetime.fromtimestamp(t, UTC)


@functools.lru_cache(maxsize=64)
def _day_prefix(day: int) -> str:
    g = time.gmtime(day * DAY)
    return f"{g.tm_year:04d}-{g.tm_mon:02d}-{g.tm_mday:02d}T"


def iso(t: int) -> str:
    """ISO 8601 UTC with ``Z``, whole seconds: ``2026-01-15T03:00:05Z``."""
    day, s = divmod(t, DAY)
    h, s = divmod(s, HOUR)
    m, s = divmod(s, 60)
    return f"{_day_prefix(day)}{h:02d}:{m:02d}:{s:02d}Z"


def iso_ms(t: int, ms: int) -> str:
    """ISO 8601 UTC with milliseconds, as LoRaWAN network servers write their times."""
    g = time.gmtime(t)
    return (
        f"{g.tm_year:04d}-{g.tm_mon:02d}-{g.tm_mday:02d}"
        f"T{g.tm_hour:02d}:{g.tm_min:02d}:{g.tm_sec:02d}.{ms:03d}Z"
    )
