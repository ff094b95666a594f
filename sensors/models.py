"""What a reading *is*: pydantic models for the three kinds of device.

Units are in the field names. Ranges are physical plausibility limits, not alarm
thresholds: a value outside them is a broken sensor or a broken decoder, and the
reading is dead-lettered rather than written.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

Kind = Literal["snow", "water", "plow"]
KINDS: tuple[Kind, ...] = ("snow", "water", "plow")

ALARM_FLAGS: tuple[str, ...] = ("leak", "burst", "reverse", "tamper", "dry", "low_battery")


class Alarms(BaseModel):
    """Device alarm flags as the device reports them (None: the device did not say)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    leak: bool | None = None
    burst: bool | None = None
    reverse: bool | None = None
    tamper: bool | None = None
    dry: bool | None = None
    low_battery: bool | None = None


class ReadingBase(BaseModel):
    """Fields every device may send.

    ``time`` must carry a UTC offset (ISO 8601 with ``Z`` or ``+09:00``) or be a Unix
    epoch number (seconds, or milliseconds when larger than 2e10). A naive local time
    is rejected: a Yamagata device sending JST without an offset would otherwise be
    stored nine hours off.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    device: Annotated[str, Field(min_length=1, max_length=64)]
    time: AwareDatetime
    seq: Annotated[int, Field(ge=0)] | None = None
    battery_v: Annotated[float, Field(ge=0, le=20)] | None = None
    rssi_dbm: Annotated[float, Field(ge=-200, le=0)] | None = None
    alarms: Alarms | None = None


class SnowReading(ReadingBase):
    """A snow-depth station reading.

    Either ``depth_cm`` (the sensor computed it) or ``distance_mm`` (raw ultrasonic or
    laser distance to the surface; ingest derives depth from the station's mount
    height and the air temperature).
    """

    depth_cm: Annotated[float, Field(ge=0, le=600)] | None = None
    distance_mm: Annotated[float, Field(ge=0, le=20_000)] | None = None
    air_temp_c: Annotated[float, Field(ge=-40, le=50)] | None = None
    quality: Annotated[int, Field(ge=0, le=255)] | None = None

    @model_validator(mode="after")
    def _depth_or_distance(self) -> SnowReading:
        if self.depth_cm is None and self.distance_mm is None:
            raise ValueError("a snow reading needs depth_cm or distance_mm")
        return self


class MeterReading(ReadingBase):
    """A water-meter reading: the cumulative register, normalised to litres."""

    register_l: Annotated[float, Field(ge=0)]
    flow_lph: Annotated[float, Field(ge=-100_000, le=100_000)] | None = None


class PlowPosition(ReadingBase):
    """A GPS fix from a snowplow."""

    lat: Annotated[float, Field(ge=-90, le=90)]
    lon: Annotated[float, Field(ge=-180, le=180)]
    speed_kmh: Annotated[float, Field(ge=0, le=150)] | None = None
    heading_deg: Annotated[float, Field(ge=0, le=360)] | None = None
    blade_down: bool | None = None
    spreader: bool | None = None


Reading = SnowReading | MeterReading | PlowPosition

MODEL_BY_KIND: dict[Kind, type[SnowReading] | type[MeterReading] | type[PlowPosition]] = {
    "snow": SnowReading,
    "water": MeterReading,
    "plow": PlowPosition,
}


def corrected_distance_mm(raw_mm: float, air_temp_c: float) -> float:
    """Correct an ultrasonic distance for air temperature.

    The sensor assumes the speed of sound at 0 °C; sound travels faster in warmer
    air, so the true distance is raw × √((T + 273.15) / 273.15).
    """
    return float(raw_mm * ((air_temp_c + 273.15) / 273.15) ** 0.5)


# Field names a device payload may carry (the models' fields, plus the register in
# other units and the time aliases the decoders normalise).
PAYLOAD_FIELDS: frozenset[str] = frozenset(
    {"ts", "register_m3", "register"}
    | {name for model in MODEL_BY_KIND.values() for name in model.model_fields}
) - {"device"}
