"""What a reading *is*: pydantic models for the three kinds of device.

These models are the one definition of a reading's fields. Each stored field's type
alias (:data:`StoredFloat`, :data:`StoredInt`, :data:`StoredBool`) carries both how
the value is validated and the InfluxDB type it is written as; the InfluxDB schema
(``sensors.schema.FIELDS``), the payload field names (:data:`PAYLOAD_FIELDS`) and the
fields ingest writes (:func:`stored_values`) are all computed from the models. Adding
a field is one line here.

Units are in the field names. Ranges are physical plausibility limits, not alarm
thresholds: a value outside them is a broken sensor or a broken decoder, and the
reading is dead-lettered rather than written.

Input is strict about types: a number sent as a string (``"12"``), a number where a
boolean is expected or a float where an int is expected is rejected, not converted,
because a device or codec that sends the wrong type is misconfigured and guessing
would hide it. An int where a float is expected is fine. A decoder may convert on
purpose and say so (ingest's LoRaWAN decoders turn ChirpStack v4's ``12.0`` into
``12`` for int fields).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Annotated, Final, Literal, get_args, get_origin

from pydantic import (
    AllowInfNan,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    model_validator,
)
from pydantic.fields import FieldInfo

Kind = Literal["snow", "water", "plow"]
KINDS: tuple[Kind, ...] = get_args(Kind)

FieldType = Literal["float", "int", "bool", "str"]

# Echo quality below this is a poor echo (weak or scattered, e.g. in heavy snowfall):
# ingest stores such readings as received; derived series drop them
# (docs/domain.md#echo-quality).
QUALITY_POOR_BELOW: Final = 50


@dataclass(frozen=True, slots=True)
class Stored:
    """Annotation marker: the field is written to InfluxDB as a field of this type.

    Types are pinned because InfluxDB refuses a point whose field type differs from
    what the shard already holds: never change the type of an existing field.
    """

    type: FieldType


@dataclass(frozen=True, slots=True)
class Flattened:
    """Annotation marker: a nested model whose stored fields are written as ``prefix + name``."""

    prefix: str


# InfluxDB's integers are signed 64-bit: a larger int would pass Python and make
# InfluxDB refuse the whole line (found by fuzzing: seq = 2**63).
INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1

# Strict: a float field accepts an int but no string or bool, an int field only an int,
# a bool field only a bool. A float must be finite (line protocol has no NaN or inf;
# a unit conversion such as m³ → L can overflow to inf) and an int must fit int64.
# The checks run inside pydantic-core (no Python call per field, which would cost
# ingest about 0.3 µs a field).
StoredFloat = Annotated[float, Strict(), AllowInfNan(False), Stored("float")]
StoredInt = Annotated[int, Strict(), Field(ge=INT64_MIN, le=INT64_MAX), Stored("int")]
StoredBool = Annotated[bool, Strict(), Stored("bool")]


class Alarms(BaseModel):
    """Device alarm flags as the device reports them (None: the device did not say)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    leak: StoredBool | None = None
    burst: StoredBool | None = None
    reverse: StoredBool | None = None
    tamper: StoredBool | None = None
    dry: StoredBool | None = None
    low_battery: StoredBool | None = None


ALARM_FLAGS: tuple[str, ...] = tuple(Alarms.model_fields)


class ReadingBase(BaseModel):
    """Fields every device may send.

    ``time`` must carry a UTC offset (ISO 8601 with ``Z`` or ``+09:00``) or be a Unix
    epoch number (seconds, or milliseconds when larger than 2e10). A naive local time
    is rejected: a Yamagata device sending JST without an offset would otherwise be
    stored nine hours off. ``device`` becomes a tag and ``time`` the timestamp, so
    neither is a stored field.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    device: Annotated[str, Field(min_length=1, max_length=64)]
    time: AwareDatetime
    seq: Annotated[StoredInt, Field(ge=0)] | None = None
    battery_v: Annotated[StoredFloat, Field(ge=0, le=20)] | None = None
    rssi_dbm: Annotated[StoredFloat, Field(ge=-200, le=0)] | None = None
    alarms: Annotated[Alarms | None, Flattened("alarm_")] = None


class SnowReading(ReadingBase):
    """A snow-depth station reading.

    Either ``depth_cm`` (the sensor computed it) or ``distance_mm`` (raw ultrasonic or
    laser distance to the surface; ingest derives depth from the station's mount
    height and the air temperature). ``quality`` is the echo quality code, stored as
    received (docs/domain.md#echo-quality, :data:`QUALITY_POOR_BELOW`).
    """

    depth_cm: Annotated[StoredFloat, Field(ge=0, le=600)] | None = None
    distance_mm: Annotated[StoredFloat, Field(ge=0, le=20_000)] | None = None
    air_temp_c: Annotated[StoredFloat, Field(ge=-40, le=50)] | None = None
    quality: Annotated[StoredInt, Field(ge=0, le=255)] | None = None

    @model_validator(mode="after")
    def _depth_or_distance(self) -> SnowReading:
        if self.depth_cm is None and self.distance_mm is None:
            raise ValueError("a snow reading needs depth_cm or distance_mm")
        return self


class MeterReading(ReadingBase):
    """A water-meter reading: the cumulative register, normalised to litres."""

    register_l: Annotated[StoredFloat, Field(ge=0)]
    flow_lph: Annotated[StoredFloat, Field(ge=-100_000, le=100_000)] | None = None


class PlowPosition(ReadingBase):
    """A GPS fix from a snowplow."""

    lat: Annotated[StoredFloat, Field(ge=-90, le=90)]
    lon: Annotated[StoredFloat, Field(ge=-180, le=180)]
    speed_kmh: Annotated[StoredFloat, Field(ge=0, le=150)] | None = None
    heading_deg: Annotated[StoredFloat, Field(ge=0, le=360)] | None = None
    blade_down: StoredBool | None = None
    spreader: StoredBool | None = None


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


# --- the derivations ----------------------------------------------------------------


def _markers(info: FieldInfo) -> list[object]:
    """A field's annotation metadata, also from inside ``X | None``."""
    found = list(info.metadata)
    for arg in get_args(info.annotation):
        if get_origin(arg) is Annotated:
            found.extend(arg.__metadata__)
    return found


def _nested_model(info: FieldInfo) -> type[BaseModel]:
    for arg in (info.annotation, *get_args(info.annotation)):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    raise TypeError(f"Flattened field of type {info.annotation} is not a model")


# One step per model field, in model order: (name, None) for a stored field, or
# (name, ((column, nested name), ...)) for a flattened model.
_Plan = tuple[tuple[str, tuple[tuple[str, str], ...] | None], ...]


@functools.cache
def _plan(model: type[BaseModel]) -> _Plan:
    steps: list[tuple[str, tuple[tuple[str, str], ...] | None]] = []
    for name, info in model.model_fields.items():
        for marker in _markers(info):
            if isinstance(marker, Stored):
                steps.append((name, None))
            elif isinstance(marker, Flattened):
                nested = _plan(_nested_model(info))
                if any(sub_columns is not None for _, sub_columns in nested):
                    raise TypeError(f"{model.__name__}.{name}: Flattened inside Flattened")
                steps.append((name, tuple((marker.prefix + sub, sub) for sub, _ in nested)))
    return tuple(steps)


def stored_fields(model: type[BaseModel]) -> dict[str, FieldType]:
    """Column name → pinned InfluxDB type of every field a reading of ``model`` writes."""
    out: dict[str, FieldType] = {}
    for name, info in model.model_fields.items():
        for marker in _markers(info):
            if isinstance(marker, Stored):
                out[name] = marker.type
            elif isinstance(marker, Flattened):
                nested = stored_fields(_nested_model(info))
                out.update({marker.prefix + sub: t for sub, t in nested.items()})
    return out


def stored_values(reading: BaseModel) -> dict[str, object]:
    """Column name → value of every stored field of a validated reading (None: not sent).

    Columns come in the order of :func:`stored_fields`; a flattened model the reading
    does not carry (``alarms`` None) contributes none.
    """
    # __dict__ holds a pydantic model's field values; reading it directly is what
    # keeps this on par with the hand-written dict it replaced (ingest's hot path).
    values = reading.__dict__
    out: dict[str, object] = {}
    for name, columns in _plan(type(reading)):
        if columns is None:
            out[name] = values[name]
        else:
            nested = values[name]
            if nested is not None:
                nested_values = nested.__dict__
                for column, sub in columns:
                    out[column] = nested_values[sub]
    return out


# Field names a device payload may carry (the models' fields, plus the register in
# other units and the time aliases the decoders normalise).
PAYLOAD_FIELDS: frozenset[str] = frozenset(
    {"ts", "register_m3", "register"}
    | {name for model in MODEL_BY_KIND.values() for name in model.model_fields}
) - {"device"}
