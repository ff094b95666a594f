"""The reading models are the one definition of a reading's fields (sensors/models.py):
the InfluxDB schema and what ingest writes are derived from them, and input is strict
about JSON types."""

from __future__ import annotations

import json
import math
from typing import Annotated, Any, get_args, get_origin

import annotated_types
import pytest
from pydantic import BaseModel, Field
from pydantic.fields import FieldInfo

from core.config import load_config, load_registry
from core.message import Message
from ingest.pipeline import Limits, Processor
from sensors.models import (
    ALARM_FLAGS,
    MODEL_BY_KIND,
    PAYLOAD_FIELDS,
    Alarms,
    Kind,
    SnowReading,
    StoredFloat,
    StoredInt,
    stored_fields,
    stored_values,
)
from sensors.schema import FIELDS, LAG_FIELD, MEASUREMENT_BY_KIND
from tests.conftest import SAMPLE_CONFIG, without_lag

NOW = 1_790_000_000.0  # 2026-09-21T14:13:20Z
DEVICE: dict[Kind, str] = {"snow": "ST01", "water": "M001", "plow": "P01"}
NOT_STORED = {"device", "time", "alarms"}  # a tag, the timestamp, flattened to alarm_*
INFLUX_TYPE = {float: "float", int: "int", bool: "bool", str: "str"}


@pytest.fixture(scope="module")
def proc() -> Processor:
    cfg = load_config(SAMPLE_CONFIG, environ={})
    return Processor(load_registry(cfg), Limits())


def _python_type_and_bounds(info: FieldInfo) -> tuple[type, float, float]:
    """The field's Python type and its ge/le bounds, read from the annotation itself."""
    metadata: list[Any] = list(info.metadata)
    base: Any = info.annotation
    for arg in get_args(info.annotation) or (info.annotation,):
        if get_origin(arg) is Annotated:
            base = arg.__origin__
            metadata.extend(arg.__metadata__)
        elif arg is not type(None):
            base = arg
    lo, hi = -math.inf, math.inf
    for item in metadata:
        for constraint in item.metadata if isinstance(item, FieldInfo) else [item]:
            if isinstance(constraint, annotated_types.Ge):
                lo = float(constraint.ge)  # type: ignore[arg-type]
            elif isinstance(constraint, annotated_types.Le):
                hi = float(constraint.le)  # type: ignore[arg-type]
    return base, lo, hi


def _plausible(info: FieldInfo) -> object:
    """A value inside the field's physical range."""
    base, lo, hi = _python_type_and_bounds(info)
    if base is bool:
        return True
    if math.isfinite(lo) and math.isfinite(hi):
        value = (lo + hi) / 2
    elif math.isfinite(lo):
        value = lo + 1
    elif math.isfinite(hi):
        value = hi - 1
    else:
        value = 1.0
    return int(value) if base is int else value


def _stored_model_fields(model: type[BaseModel]) -> dict[str, FieldInfo]:
    return {n: i for n, i in model.model_fields.items() if n not in NOT_STORED}


@pytest.mark.parametrize("kind", list(MODEL_BY_KIND))
def test_every_model_field_is_in_the_schema_with_its_type(kind: Kind) -> None:
    model = MODEL_BY_KIND[kind]
    expected = {
        name: INFLUX_TYPE[_python_type_and_bounds(info)[0]]
        for name, info in _stored_model_fields(model).items()
    }
    expected |= {f"alarm_{flag}": "bool" for flag in Alarms.model_fields}
    expected[LAG_FIELD] = "float"  # written by ingest beside every reading
    assert FIELDS[MEASUREMENT_BY_KIND[kind]] == expected
    assert set(model.model_fields) - {"device"} <= PAYLOAD_FIELDS
    assert set(ALARM_FLAGS) == set(Alarms.model_fields)


def test_a_new_field_is_one_line() -> None:
    """Adding a field to a model is all it takes for the schema and the written fields."""

    class WithSurfaceTemp(SnowReading):
        surface_temp_c: Annotated[StoredFloat, Field(ge=-40, le=30)] | None = None
        echo_count: StoredInt | None = None

    types = stored_fields(WithSurfaceTemp)
    assert types == {
        **stored_fields(SnowReading),
        "surface_temp_c": "float",
        "echo_count": "int",
    }
    reading = WithSurfaceTemp.model_validate(
        {"device": "ST01", "time": NOW, "depth_cm": 1, "surface_temp_c": -3, "echo_count": 4}
    )
    values = stored_values(reading)
    assert [c for c in types if c in values] == list(values)  # the schema's order
    assert set(types) - set(values) == {f"alarm_{flag}" for flag in ALARM_FLAGS}  # no alarms
    assert {k: v for k, v in values.items() if v is not None} == {
        "depth_cm": 1.0,
        "surface_temp_c": -3.0,
        "echo_count": 4,
    }


# What shards already hold. A derived type may never differ from these (InfluxDB
# refuses a point whose field type flips); new fields need no entry here.
WRITTEN_BEFORE: dict[str, dict[str, str]] = {
    "snow_depth": {"depth_cm": "float", "distance_mm": "float", "air_temp_c": "float"}
    | {"quality": "int"},
    "water_meter": {"register_l": "float", "flow_lph": "float"},
    "plow_position": {"lat": "float", "lon": "float", "speed_kmh": "float"}
    | {"heading_deg": "float", "blade_down": "bool", "spreader": "bool"},
}
COMMON_BEFORE = {"seq": "int", "battery_v": "float", "rssi_dbm": "float"} | {
    f"alarm_{f}": "bool" for f in ("leak", "burst", "reverse", "tamper", "dry", "low_battery")
}


@pytest.mark.parametrize("measurement", list(WRITTEN_BEFORE))
def test_pinned_types_never_change(measurement: str) -> None:
    for name, influx_type in (WRITTEN_BEFORE[measurement] | COMMON_BEFORE).items():
        assert FIELDS[measurement].get(name) == influx_type, f"{measurement}.{name}"


@pytest.mark.parametrize("kind", list(MODEL_BY_KIND))
def test_pipeline_writes_every_stored_field(proc: Processor, kind: Kind) -> None:
    """A payload setting every model field writes every schema column, in its type."""
    model = MODEL_BY_KIND[kind]
    payload: dict[str, Any] = {
        name: _plausible(info) for name, info in _stored_model_fields(model).items()
    }
    payload["alarms"] = dict.fromkeys(Alarms.model_fields, True)
    payload["time"] = NOW - 10
    topic = f"yukimizu/{kind}/{DEVICE[kind]}"
    result = proc.process(Message(topic, json.dumps(payload).encode(), NOW))
    assert result.reason is None, result.detail
    [line] = result.lines
    written = dict(pair.split("=", 1) for pair in line.split(" ")[1].split(","))
    schema = FIELDS[MEASUREMENT_BY_KIND[kind]]
    assert set(written) == set(schema)
    assert float(written.pop(LAG_FIELD)) == 10.0  # received 10 s after the reading's time
    for name, text in written.items():
        if schema[name] == "int":
            assert text.endswith("i") and int(text[:-1]) == payload[name], name
        elif schema[name] == "bool":
            assert text == "true", name
        else:
            assert float(text) == pytest.approx(payload[name]), name


# --- strict input -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("topic", "values", "detail"),
    [
        # a number sent as a string is not converted (pydantic's lax mode would write 12 cm)
        (
            "snow/ST01",
            {"depth_cm": "12"},
            "depth_cm: Input should be a valid number, not a string (got '12')",
        ),
        (
            "snow/ST01",
            {"depth_cm": 12, "seq": "7"},
            "seq: Input should be a valid integer, not a string",
        ),
        (
            "snow/ST01",
            {"depth_cm": 12, "seq": 7.0},
            "seq: Input should be a valid integer, not a float",
        ),
        (
            "snow/ST01",
            {"depth_cm": True},
            "depth_cm: Input should be a valid number, not true/false",
        ),
        (
            "water/M001",
            {"register_m3": "1.5"},
            "register_m3: expected a number (got '1.5')",  # the name the device sent
        ),
        (
            "water/M001",
            {"register_l": 1, "flow_lph": "0"},
            "flow_lph: Input should be a valid number",
        ),
        # numbers and strings where a boolean is expected
        (
            "plow/P01",
            {"lat": 38.38, "lon": 140.2, "blade_down": 1},
            "blade_down: Input should be a valid boolean, not an integer (got 1)",
        ),
        (
            "plow/P01",
            {"lat": 38.38, "lon": 140.2, "spreader": "true"},
            "spreader: Input should be a valid boolean, not a string (got 'true')",
        ),
        (
            "water/M001",
            {"register_l": 1, "alarms": {"leak": 0}},
            "alarms.leak: Input should be a valid boolean, not an integer (got 0)",
        ),
    ],
)
def test_wrong_json_types_are_dead_lettered(
    proc: Processor, topic: str, values: dict[str, Any], detail: str
) -> None:
    payload = json.dumps({"time": NOW - 10, **values}).encode()
    result = proc.process(Message(f"yukimizu/{topic}", payload, NOW))
    assert result.lines == []
    assert result.reason == "validation"
    assert detail in result.detail


def test_ints_for_floats_are_fine(proc: Processor) -> None:
    payload = json.dumps({"time": NOW - 10, "depth_cm": 12, "air_temp_c": -4, "seq": 3})
    result = proc.process(Message("yukimizu/snow/ST01", payload.encode(), NOW))
    assert result.reason is None, result.detail
    assert result.lines[0].split(" ")[1] == "seq=3i,depth_cm=12.0,air_temp_c=-4.0,lag_s=10.0"


def test_lorawan_integral_floats_converted_booleans_strict(proc: Processor) -> None:
    topic = "application/1/device/a84041a04116be20/event/up"

    def up(obj: dict[str, Any], fcnt: int) -> tuple[list[str], str | None, str]:
        doc = {"time": "2026-09-21T14:00:00Z", "fCnt": fcnt, "object": obj}
        result = proc.process(Message(topic, json.dumps(doc).encode(), NOW))
        return result.lines, result.reason, result.detail

    # ChirpStack v4 writes codec integers as floats: accepted for int fields on purpose.
    lines, reason, detail = up({"depth_cm": 88.0, "quality": 80.0, "seq": 12.0}, 1)
    assert reason is None, detail
    assert without_lag(lines[0]).split(" ")[1] == "seq=12i,depth_cm=88.0,quality=80i"
    lines, reason, detail = up({"depth_cm": 88.0, "quality": 80.5}, 2)
    assert (lines, reason) == (
        [],
        "validation",
    ) and "quality: Input should be a valid integer" in detail
    # A number for an alarm flag is rejected, not silently ignored.
    lines, reason, detail = up({"depth_cm": 88.0, "low_battery": 1}, 3)
    assert (lines, reason) == ([], "validation") and "alarms.low_battery" in detail
    lines, reason, detail = up({"depth_cm": "88"}, 4)
    assert (lines, reason) == ([], "validation") and "not a string" in detail
