"""``[reports]`` of the config file: the meter-reading schedule and the report thresholds.

```toml
[reports.meter_reading]
schedule = "monthly"                 # monthly | bimonthly (every other month), on the 1st
[reports.meter_reading.districts."中町"]
schedule = "bimonthly"
months = "odd"                       # bimonthly: read in odd (Jan, Mar, …) or even months
[reports.plow]
idle_kmh = 3.0
```

Validated like ``rules/config.py``: errors name the field
(``reports.meter_reading.districts.中町.schedule: Input should be 'monthly' or …``).
"""

from __future__ import annotations

import calendar
import datetime as dt
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from core.config import Config, validate_section


class Schedule(BaseModel):
    """When a district's meters are read: on the 1st, every month or every other month."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schedule: Literal["monthly", "bimonthly"] = "monthly"
    # bimonthly only: which months are reading months
    months: Literal["odd", "even"] = "odd"

    def is_reading_date(self, day: dt.date) -> bool:
        if day.day != 1:
            return False
        if self.schedule == "monthly":
            return True
        return (day.month % 2 == 1) == (self.months == "odd")

    def previous(self, day: dt.date) -> dt.date:
        """The reading date before ``day`` (``day`` itself need not be on schedule)."""
        step = 1 if self.schedule == "monthly" else 2
        return add_months(day, -step)


def add_months(day: dt.date, months: int) -> dt.date:
    index = day.year * 12 + day.month - 1 + months
    year, month = index // 12, index % 12 + 1
    return dt.date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


class MeterReadingConfig(Schedule):
    # A missing register at the reading time is interpolated from the readings either
    # side when they are at most this far apart; otherwise the meter is 欠測.
    estimate_max_gap_h: Annotated[float, Field(gt=0, le=24 * 14)] = 48.0
    # use changed by more than this against the previous period / last year: flagged
    change_limit_pct: Annotated[float, Field(gt=0)] = 50.0
    # the register standing still this long in a period, with use before or after it
    stuck_hours: Annotated[float, Field(gt=0)] = 72.0
    districts: dict[str, Schedule] = Field(default_factory=dict)

    def for_district(self, district: str) -> Schedule:
        return self.districts.get(district, self)


class PlowReportConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # docs/domain.md: standing (< 3 km/h) for more than 10 min away from the depot is idle
    idle_kmh: Annotated[float, Field(gt=0, le=20)] = 3.0
    idle_min: Annotated[float, Field(gt=0)] = 10.0
    # a fix implying more than this speed from the last accepted one is a GPS jump
    max_speed_kmh: Annotated[float, Field(gt=0, le=200)] = 80.0
    depot_radius_m: Annotated[float, Field(gt=0)] = 150.0
    # consecutive fixes further apart than this are not joined into a track piece
    max_gap_s: Annotated[float, Field(gt=0)] = 120.0
    # a plow silent this long has ended its trip (fixes come only with the ignition on)
    trip_gap_min: Annotated[float, Field(gt=0)] = 30.0
    # without the rules' dispatch series: departures this close belong to one dispatch
    dispatch_gap_min: Annotated[float, Field(gt=0)] = 60.0
    # segment coverage (docs/domain.md#segment-plowed): 80 % of samples within 15 m
    cover_radius_m: Annotated[float, Field(gt=0)] = 15.0
    cover_share: Annotated[float, Field(gt=0, le=1)] = 0.8
    sample_step_m: Annotated[float, Field(gt=0)] = 5.0


class ReportsConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    meter_reading: MeterReadingConfig = Field(default_factory=MeterReadingConfig)
    plow: PlowReportConfig = Field(default_factory=PlowReportConfig)


def load_reports_config(cfg: Config) -> ReportsConfig:
    """Validate ``[reports]``; raise :class:`ConfigError` naming the field."""
    return validate_section("reports", cfg.reports, ReportsConfig)
