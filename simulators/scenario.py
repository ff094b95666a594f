"""Scenario files: which devices, from when to when, and what happens.

A scenario is a TOML file (see ``scenarios/``). Times are TOML offset date-times
(``2026-01-15T03:00:00+09:00``); a time without an offset is refused, because a
scenario written in JST and read as UTC would be nine hours off. Everything is
validated when the file is loaded; device ids are checked against the registry when
the world is built (:func:`simulators.world.build_world`).

::

    name = "heavy-snow-night"
    seed = 20260114
    start = 2026-01-14T18:00:00+09:00
    end = 2026-01-15T12:00:00+09:00

    [weather]
    mean_temp_c = -3.0
    initial_depth_cm = 55

    [[events]]
    type = "storm"
    start = 2026-01-14T21:00:00+09:00
    duration_h = 8
    total_cm = 30

    [[events]]
    type = "dispatch"
    at = 2026-01-15T03:00:00+09:00
    plows = "all"
    segments = "all"
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

from core.config import describe_errors, read_toml
from simulators.formats import WireFormat

__all__ = [
    "AutoDispatch",
    "BurstEvent",
    "Climate",
    "DeviceSelection",
    "Devices",
    "DispatchEvent",
    "Event",
    "FaultEvent",
    "Intervals",
    "LeakEvent",
    "MeterSettings",
    "Scenario",
    "ScenarioError",
    "Sensors",
    "StormEvent",
    "WarmEvent",
    "Weather",
    "load_scenario",
]

MAX_DAYS = 200

STATION_FAULTS = frozenset({"spikes", "frozen", "dropout", "poor_quality", "battery_drain"})
METER_FAULTS = frozenset({"stuck", "reverse", "swap", "silent", "offline", "flag", "supply_cut"})
PLOW_FAULTS = frozenset({"gps_gap", "invalid_fix"})
FaultName = Literal[
    "spikes",
    "frozen",
    "dropout",
    "poor_quality",
    "battery_drain",
    "stuck",
    "reverse",
    "swap",
    "silent",
    "offline",
    "flag",
    "supply_cut",
    "gps_gap",
    "invalid_fix",
]
DeviceFlag = Literal["leak", "burst", "reverse", "tamper", "dry", "low_battery"]

DeviceSelection = Literal["all", "none"] | tuple[str, ...]


class ScenarioError(ValueError):
    """A scenario file that cannot be used; the message names the file and the field."""


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


Hours = Annotated[float, Field(gt=0, le=MAX_DAYS * 24)]


class Devices(_Model):
    """Which registry devices take part ("all", "none" or a list of ids)."""

    stations: DeviceSelection = "all"
    meters: DeviceSelection = "all"
    plows: DeviceSelection = "all"


class Intervals(_Model):
    station_s: Annotated[int, Field(ge=60, le=3600, multiple_of=60)] = 600
    plow_fix_s: Annotated[int, Field(ge=1, le=5)] = (
        2  # while moving (docs/domain.md#fix-rate: 1–5 s)
    )
    plow_idle_fix_s: Annotated[int, Field(ge=1, le=30)] = 5  # while standing


class Weather(_Model):
    """Town weather. ``mean_temp_c = "climate"`` follows a Yamagata snow town's season."""

    mean_temp_c: float | Literal["climate"] = -2.0
    diurnal_amplitude_c: Annotated[float, Field(ge=0, le=15)] = 3.5
    day_to_day_sd_c: Annotated[float, Field(ge=0, le=10)] = 0.0
    initial_depth_cm: Annotated[float, Field(ge=0, le=400)] = 0.0


class Climate(_Model):
    """Random storms over the whole scenario (for seasons); adds to explicit storms."""

    storms_per_week: Annotated[float, Field(gt=0, le=14)] = 2.0
    median_total_cm: Annotated[float, Field(gt=0, le=100)] = 9.0
    max_total_cm: Annotated[float, Field(gt=0, le=200)] = 60.0
    min_duration_h: Annotated[float, Field(gt=0, le=72)] = 3.0
    max_duration_h: Annotated[float, Field(gt=0, le=72)] = 18.0
    spread: Annotated[float, Field(ge=0, le=0.5)] = 0.15

    @model_validator(mode="after")
    def _durations(self) -> Climate:
        if self.min_duration_h > self.max_duration_h:
            raise ValueError("min_duration_h must not exceed max_duration_h")
        return self


class AutoDispatch(_Model):
    """Dispatch plows at ``at`` (local time) each day after enough new snow (除雪出動基準)."""

    threshold_cm: Annotated[float, Field(gt=0, le=200)] = 10.0
    at: time = time(3, 0)
    plows: DeviceSelection = "all"
    segments: Literal["all"] | tuple[str, ...] = "all"


class Sensors(_Model):
    """Background imperfections of real devices (probabilities per reading or per fix)."""

    spike_rate: Annotated[float, Field(ge=0, le=0.5)] = 0.001
    dropout_rate: Annotated[float, Field(ge=0, le=0.5)] = 0.0005
    dropout_max_readings: Annotated[int, Field(ge=1, le=1000)] = 6
    # measurements per snow-station reading, spread evenly over the interval before it:
    # the reading is their median (docs/domain.md#report-interval; 1: one measurement)
    station_burst: Annotated[int, Field(ge=1, le=30)] = 1
    gps_gap_rate: Annotated[float, Field(ge=0, le=0.1)] = 0.0003
    gps_invalid_rate: Annotated[float, Field(ge=0, le=0.1)] = 0.0005
    idle_probability: Annotated[float, Field(ge=0, le=1)] = 0.3
    lorawan_retransmit_rate: Annotated[float, Field(ge=0, le=0.5)] = 0.01


class MeterSettings(_Model):
    """Per-meter overrides; the defaults come from the registry (watched, diameter)."""

    profile: Literal["household", "elderly", "facility"] | None = None
    residents: Annotated[int, Field(ge=1, le=12)] | None = None
    register_start_l: Annotated[float, Field(ge=0)] | None = None
    upload_at: time | None = None  # LPWA meters: daily upload, local time


class _Timed(_Model):
    def shifted(self, delta: timedelta) -> _Timed:
        updates = {
            k: getattr(self, k) + delta
            for k in ("start", "at")
            if isinstance(getattr(self, k, None), datetime)
        }
        return self.model_copy(update=updates)


class StormEvent(_Timed):
    """Snowfall of ``total_cm`` (fresh snow, before settling) at each chosen station."""

    type: Literal["storm"]
    start: AwareDatetime
    duration_h: Annotated[float, Field(gt=0, le=96)]
    total_cm: Annotated[float, Field(ge=0, le=300)]
    stations: DeviceSelection = "all"
    profile: Literal["flat", "bell", "front", "rear"] = "bell"
    temp_c: Annotated[float, Field(ge=-25, le=2)] = -3.0
    spread: Annotated[float, Field(ge=0, le=0.5)] = 0.0  # ± fraction between stations


class WarmEvent(_Timed):
    """A warm spell: the air is ``delta_c`` warmer (snow melts above 0 °C)."""

    type: Literal["warm"]
    start: AwareDatetime
    duration_h: Hours
    delta_c: Annotated[float, Field(ge=-20, le=20)]


class LeakEvent(_Timed):
    """A continuous leak behind a meter (until the end of the scenario if no duration)."""

    type: Literal["leak"]
    meter: str
    start: AwareDatetime
    duration_h: Hours | None = None
    rate_lph: Annotated[float, Field(gt=0, le=2000)]


class BurstEvent(_Timed):
    """A burst pipe behind a meter: a large flow for a while."""

    type: Literal["burst"]
    meter: str
    start: AwareDatetime
    duration_h: Hours = 2.0
    rate_lph: Annotated[float, Field(gt=0, le=100_000)] = 1500.0


class FaultEvent(_Timed):
    """A device fault.

    Stations: ``spikes`` (``rate`` per reading, or one spike without a duration),
    ``frozen``, ``dropout``, ``poor_quality``, ``battery_drain``. Meters: ``stuck``,
    ``reverse`` (``rate_lph``), ``swap`` (``register_after_l``), ``silent`` (the
    household uses no water), ``offline`` (no uploads), ``flag`` (``flag``),
    ``supply_cut`` (no water, ``dry`` flag). Plows: ``gps_gap``, ``invalid_fix``.
    Without ``duration_h`` a fault lasts until the end of the scenario.
    """

    type: Literal["fault"]
    device: str
    fault: FaultName
    start: AwareDatetime
    duration_h: Hours | None = None
    rate: Annotated[float, Field(gt=0, le=1)] | None = None
    rate_lph: Annotated[float, Field(gt=0, le=2000)] | None = None
    flag: DeviceFlag | None = None
    register_after_l: Annotated[float, Field(ge=0)] | None = None

    @model_validator(mode="after")
    def _params(self) -> FaultEvent:
        if self.fault == "flag" and self.flag is None:
            raise ValueError("fault = 'flag' needs flag = 'tamper' (or leak/burst/reverse/dry/...)")
        if self.fault == "reverse" and self.rate_lph is None:
            raise ValueError("fault = 'reverse' needs rate_lph")
        if self.flag is not None and self.fault != "flag":
            raise ValueError("flag is only for fault = 'flag'")
        if self.rate is not None and self.fault != "spikes":
            raise ValueError("rate is only for fault = 'spikes'")
        if self.rate_lph is not None and self.fault != "reverse":
            raise ValueError("rate_lph is only for fault = 'reverse'")
        if self.register_after_l is not None and self.fault != "swap":
            raise ValueError("register_after_l is only for fault = 'swap'")
        return self


class DispatchEvent(_Timed):
    """Plows leave the depot at ``at`` and clear ``segments`` (split between them)."""

    type: Literal["dispatch"]
    at: AwareDatetime
    plows: DeviceSelection = "all"
    segments: Literal["all"] | tuple[str, ...] = "all"


Event = Annotated[
    StormEvent | WarmEvent | LeakEvent | BurstEvent | FaultEvent | DispatchEvent,
    Field(discriminator="type"),
]


class Scenario(_Model):
    name: Annotated[str, Field(min_length=1, max_length=80)]
    description: str = ""
    seed: Annotated[int, Field(ge=0, lt=2**63)]
    start: AwareDatetime
    end: AwareDatetime
    timezone: str = "Asia/Tokyo"
    format: WireFormat = "native"
    devices: Devices = Field(default_factory=Devices)
    intervals: Intervals = Field(default_factory=Intervals)
    weather: Weather = Field(default_factory=Weather)
    climate: Climate | None = None
    auto_dispatch: AutoDispatch | None = None
    sensors: Sensors = Field(default_factory=Sensors)
    meter_settings: dict[str, MeterSettings] = Field(default_factory=dict)
    events: tuple[Event, ...] = ()

    @model_validator(mode="after")
    def _range(self) -> Scenario:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        if self.end - self.start > timedelta(days=MAX_DAYS):
            raise ValueError(f"a scenario may cover at most {MAX_DAYS} days")
        if self.start.second or self.start.microsecond:
            raise ValueError("start must be on a whole minute")
        return self

    def shifted_to(self, start: datetime) -> Scenario:
        """The same scenario moved in time so that it starts at ``start``."""
        delta = start - self.start
        return self.model_copy(
            update={
                "start": start,
                "end": self.end + delta,
                "events": tuple(e.shifted(delta) for e in self.events),
            }
        )


def parse_scenario(data: dict[str, Any], source: str = "<scenario>") -> Scenario:
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(f"invalid scenario {source}:\n{describe_errors(exc)}") from None


def load_scenario(path: Path) -> Scenario:
    """Read and validate a scenario TOML file; raise :class:`ScenarioError`."""
    return parse_scenario(read_toml(path, "scenario", ScenarioError), str(path))
