"""Generated payloads that know what is wrong with them (hypothesis strategies).

A :class:`Case` is one MQTT message in one of the real wire formats (native JSON, a
native batch, SenML, ChirpStack v4 and The Things Stack v3 uplinks, NMEA RMC; see
:mod:`simulators.formats` and :mod:`ingest.decode`) built from a valid reading with
edge values, with at most one defect put in on purpose: a field of the wrong JSON type,
a value out of range or beyond int64, a unit that is an object, a time in the future,
a broken checksum, truncated JSON, and so on. The case carries the outcome the defect
must produce (``stored``, or the dead-letter reason that names the defect), so a fuzz
run checks not only that ingest survives but that it says *why* truthfully.

:func:`garbage` adds payloads with no intended meaning (random JSON documents with the
formats' keys, random bytes, random NMEA-ish text): for those only "no crash, no
internal error, no line InfluxDB would refuse" is checked.

Used by ``tests/test_fuzz.py``, ``tests/test_fuzz_broker.py`` and ``benchmarks/fuzz.py``;
hypothesis is a development dependency, so nothing outside tests and benchmarks imports
this module.
"""

from __future__ import annotations

import functools
import json
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Final, Protocol

import hypothesis
import orjson
from hypothesis import strategies as st

from core import nmea
from core.message import Message
from devtools.localstack import InfluxDB1
from devtools.processes import IngestProcess
from ingest.deadletter import DeadLetterStore
from ingest.pipeline import Limits, Processor, Result
from ingest.reasons import Reason
from sensors.models import INT64_MAX, INT64_MIN
from sensors.registry import Meter, Plow, Registry, Station

STORED: Final = "stored"
DROPPED: Final = "dropped"  # deliberately not written, counted (an invalid GPS fix)
V: Final = str(Reason.VALIDATION)
FORMATS: Final = ("native", "batch", "senml", "chirpstack", "ttn", "nmea")

Draw = st.DrawFn
Device = Station | Meter | Plow


@dataclass(frozen=True, slots=True)
class Case:
    """One message and what ingest must make of it."""

    fmt: str
    defect: str  # "none" for a good message
    topic: str
    payload: bytes
    expect: frozenset[str]  # acceptable outcomes: STORED, DROPPED or Reason values
    readings: int = 0  # lines a good message (or the good part of a batch) must give

    @property
    def label(self) -> str:
        return f"{self.fmt}/{self.defect}"


def outcome(result: Result) -> str:
    """What the processor made of a message: a dead-letter reason, stored, or dropped."""
    if result.reason is not None:
        return str(result.reason)
    if result.lines:
        return STORED
    return DROPPED if result.drops else "nothing"


_INT_FIELD = re.compile(r"^(-?\d+)i$")


def line_problem(line: str) -> str | None:
    """Why InfluxDB 1.x would refuse this line of line protocol, or None.

    Checks what a validated reading can still get wrong: an integer beyond int64, a
    non-finite float, a timestamp beyond int64 nanoseconds.
    """
    head, _, rest = line.rpartition(" ")
    _, _, fields = head.rpartition(" ")
    if not rest.lstrip("-").isdigit() or not -(2**63) < int(rest) * 1_000_000 < 2**63:
        return f"timestamp {rest!r} (ms) does not fit int64 nanoseconds"
    for item in fields.split(","):
        name, _, value = item.partition("=")
        m = _INT_FIELD.match(value)
        if m:
            if not INT64_MIN <= int(m.group(1)) <= INT64_MAX:
                return f"{name}: integer {value} beyond int64"
        elif value not in ("true", "false"):
            try:
                number = float(value)
            except ValueError:
                return f"{name}: {value!r} is not a field value"
            if not math.isfinite(number):
                return f"{name}: {value} is not finite"
    return None


def check(case: Case, result: Result) -> str | None:
    """Why the processor's answer to ``case`` is wrong, or None."""
    got = outcome(result)
    if got == str(Reason.INTERNAL_ERROR):
        return f"internal error: {result.detail}"
    if got not in case.expect:
        return f"expected {sorted(case.expect)}, got {got}: {result.detail}"
    if case.readings and len(result.lines) != case.readings:
        return f"expected {case.readings} lines, got {len(result.lines)}: {result.detail}"
    for line in result.lines:
        problem = line_problem(line)
        if problem:
            return f"line InfluxDB would refuse ({problem}): {line}"
    return None


# --------------------------------------------------------------------------- the world


@dataclass(frozen=True)
class World:
    """The registry, limits and topic names a run generates payloads for."""

    registry: Registry = field(repr=False)
    limits: Limits = field(repr=False)
    now: float  # the received_at the processor will see (within a few minutes)
    lora_prefix: str = ""  # bridge prefix of LoRaWAN topics, e.g. "t1-lora/"
    # devices the generated payloads may name (the broker run keeps one back for the
    # interleaved good readings)
    exclude: frozenset[str] = field(default_factory=frozenset)

    @property
    def prefix(self) -> str:
        return self.limits.topic_prefix

    def devices(self, kind: str, lora: bool = False) -> list[Device]:
        table: dict[str, Any] = {
            "snow": self.registry.stations,
            "water": self.registry.meters,
            "plow": self.registry.plows,
        }
        devs = [d for d in table[kind].values() if d.id not in self.exclude]
        return [d for d in devs if d.dev_eui] if lora else devs


# Valid ranges of the numeric fields ingest stores (sensors/models.py).
_COMMON: Final[dict[str, tuple[float, float]]] = {"battery_v": (0, 20), "rssi_dbm": (-200, 0)}
_FLOATS: Final[dict[str, dict[str, tuple[float, float]]]] = {
    "snow": {"depth_cm": (0, 600), "air_temp_c": (-40, 50), **_COMMON},
    "water": {"flow_lph": (-100_000, 100_000), **_COMMON},
    "plow": {"speed_kmh": (0, 150), "heading_deg": (0, 360), **_COMMON},
}
_INTS: Final[dict[str, dict[str, tuple[int, int]]]] = {
    "snow": {"seq": (0, INT64_MAX), "quality": (0, 255)},
    "water": {"seq": (0, INT64_MAX)},
    "plow": {"seq": (0, INT64_MAX)},
}
_BOOLS: Final[dict[str, tuple[str, ...]]] = {
    "snow": (),
    "water": (),
    "plow": ("blade_down", "spreader"),
}
_ALARMS: Final = ("leak", "burst", "reverse", "tamper", "dry", "low_battery")
# SenML values are IEEE doubles: an integer above 2**53 does not survive the trip.
_SENML_INT_MAX: Final = 2**53
# SenML name and unit of a native field (the units ingest accepts, native scale)
_SENML: Final[dict[str, tuple[str, str | None]]] = {
    "depth_cm": ("depth", "cm"),
    "distance_mm": ("distance", "mm"),
    "air_temp_c": ("temperature", "Cel"),
    "quality": ("quality", None),
    "battery_v": ("battery", "V"),
    "rssi_dbm": ("rssi", "dBm"),
    "seq": ("seq", None),
    "lat": ("lat", "lat"),
    "lon": ("lon", "lon"),
    "speed_kmh": ("speed", "km/h"),
    "heading_deg": ("heading", "deg"),
    "flow_lph": ("flow", "L/h"),
    "register_l": ("register", "l"),
    "blade_down": ("blade_down", None),
    "spreader": ("spreader", None),
}
JST: Final = timezone(timedelta(hours=9))


# Strategies are built once per argument set: building one (validation included) costs
# more than drawing from it, and a case draws dozens.
@functools.cache
def _edge_float(lo: float, hi: float) -> st.SearchStrategy[float]:
    edges = [lo, hi, (lo + hi) / 2, float(int(lo)), float(int(hi)), 0.0, -0.0]
    return st.one_of(
        st.sampled_from([float(e) for e in edges if lo <= e <= hi]),
        st.floats(lo, hi, allow_nan=False, allow_infinity=False),
    )


@functools.cache
def _edge_int(lo: int, hi: int) -> st.SearchStrategy[int]:
    edges = [lo, hi, lo + 1, hi - 1, 2**31 - 1, 2**32, 2**53 + 1]
    return st.one_of(st.sampled_from([e for e in edges if lo <= e <= hi]), st.integers(lo, hi))


@functools.cache
def _subset(items: tuple[str, ...], least: int, most: int) -> st.SearchStrategy[list[str]]:
    return st.lists(st.sampled_from(items), unique=True, min_size=least, max_size=most)


@functools.cache
def _choice(items: tuple[Any, ...]) -> st.SearchStrategy[Any]:
    return st.sampled_from(items)


def _choice_of(items: Sequence[Any]) -> st.SearchStrategy[Any]:
    """``st.sampled_from(items)``, built once for hashable items."""
    try:
        return _choice(tuple(items))
    except TypeError:  # unhashable items (lists, dicts): a fresh strategy
        return st.sampled_from(items)


# --------------------------------------------------------------------------- readings


@dataclass
class Reading:
    """A valid reading in native field names; ``time`` in Unix seconds."""

    kind: str
    device: Device
    time: float
    values: dict[str, Any]


def _time_text(draw: Draw, t: float) -> Any:
    """A time as a device may send it: ISO 8601 with Z or +09:00, epoch s or ms."""
    style = draw(_choice_of(["iso_z", "iso_jst", "epoch_s", "epoch_s_float", "epoch_ms"]))
    if style == "epoch_ms" and t * 1000 <= 2e10:
        style = "epoch_s"  # a number up to 2e10 is read as seconds (sensors/models.py)
    when = datetime.fromtimestamp(t, UTC)
    if style == "iso_z":
        return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if style == "iso_jst":
        return when.astimezone(JST).isoformat(timespec="seconds")
    if style == "epoch_s":
        return int(t)
    if style == "epoch_s_float":
        return round(t, 3)
    return int(t * 1000)


def _reading(  # noqa: PLR0917 - a reading's coordinates
    draw: Draw, w: World, kind: str, dev: Device, t: float, senml: bool, nmea: bool = False
) -> Reading:
    """``nmea``: RMC's resolution (1e-4 minute, 0.1 knot) must not push a value out."""
    values: dict[str, Any] = {}
    if kind == "snow":
        assert isinstance(dev, Station)
        if draw(st.booleans()):
            values["depth_cm"] = draw(_edge_float(0, 600))
        else:
            # below the mount height even after the temperature correction (×1.09 at 50 °C)
            values["distance_mm"] = draw(_edge_float(0, dev.mount_height_cm * 9))
    elif kind == "water":
        assert isinstance(dev, Meter)
        values["register_l"] = draw(_edge_float(0, dev.rollover_l * 0.99))
    else:
        lim = w.limits
        m = 1e-5 if nmea else 0.0
        values["lat"] = draw(_edge_float(lim.lat_min + m, lim.lat_max - m))
        values["lon"] = draw(_edge_float(lim.lon_min + m, lim.lon_max - m))
    optional_f = [k for k in _FLOATS[kind] if k != "depth_cm"]
    for name in draw(_subset(tuple(optional_f), 0, 3)):
        lo, hi = _FLOATS[kind][name]
        values[name] = draw(_edge_float(lo, 149.0 if nmea and name == "speed_kmh" else hi))
    for name in draw(_subset(tuple(_INTS[kind]), 0, 2)):
        lo, hi = _INTS[kind][name]
        values[name] = draw(_edge_int(lo, min(hi, _SENML_INT_MAX) if senml else hi))
    for name in _BOOLS[kind]:
        if draw(st.booleans()):
            values[name] = draw(st.booleans())
    if draw(st.integers(0, 3)) == 0:
        flags = draw(_subset(_ALARMS, 1, 3))
        values["alarms"] = {f: draw(st.booleans()) for f in flags}
    return Reading(kind, dev, t, values)


def _past(draw: Draw, w: World) -> float:
    return w.now - draw(st.floats(0, 30 * 86_400, allow_nan=False))


# --------------------------------------------------------------------------- defects

# Field defects change a reading's values before a format encodes them; the other
# defects (_DEFECTS, per format) are put in by each format's case builder below.
_WRONG_TYPES: Final = st.one_of(
    st.text(max_size=8),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


def _wrong_value(draw: Draw, name: str) -> Any:
    """A JSON value of the wrong type for field ``name``."""
    if name in ("blade_down", "spreader") or name in _ALARMS:
        return draw(st.one_of(st.integers(0, 1), st.floats(0, 1), _WRONG_TYPES))
    if name in ("seq", "quality"):
        # a non-integral float: an integral one is converted on purpose for LoRaWAN
        return draw(
            st.one_of(st.booleans(), st.floats(0.01, 0.99).map(lambda f: f + 3), _WRONG_TYPES)
        )
    return draw(
        st.one_of(st.booleans(), st.text(max_size=8).map(lambda s: s or "12"), _WRONG_TYPES)
    )


def _out_of_range(draw: Draw, r: Reading, name: str) -> Any:
    """A number just or far outside field ``name``'s range (ints: also beyond int64)."""
    if name in ("seq", "quality"):
        ilo, ihi = _INTS[r.kind][name]
        return draw(
            st.sampled_from(
                [ilo - 1, ihi + 1, INT64_MAX + 1, 2**64 - 1, INT64_MIN - 1, -(2**63)]
            ).filter(lambda v: not ilo <= v <= ihi)
        )
    if name == "register_l":
        assert isinstance(r.device, Meter)
        return draw(_choice_of([-0.001, float(r.device.rollover_l), 1e300]))
    if name in ("lat", "lon"):
        return draw(
            st.sampled_from([-90.001, 90.5, 1e300, -1e300])
            if name == "lat"
            else st.sampled_from([-180.001, 180.5, 1e300, -1e300])
        )
    lo, hi = _range(r, name)
    return draw(
        st.one_of(
            st.sampled_from([lo - 0.001, hi + 0.001, 1.7976931348623157e308, -1e308]),
            st.floats(hi, 1e300, exclude_min=True),
            st.floats(-1e300, lo, exclude_max=True),
        )
    )


def _range(r: Reading, name: str) -> tuple[float, float]:
    """The valid range of field ``name`` (the model's, not the town's box)."""
    if name == "register_l":
        assert isinstance(r.device, Meter)
        return 0.0, r.device.rollover_l - 0.001
    fixed = {"lat": (-90.0, 90.0), "lon": (-180.0, 180.0), "distance_mm": (0.0, 20_000.0)}
    if name in fixed:
        return fixed[name]
    if name in _INTS[r.kind]:
        return _INTS[r.kind][name]
    return _FLOATS[r.kind][name]


def _numeric_fields(r: Reading) -> list[str]:
    return [
        k for k, v in r.values.items() if isinstance(v, int | float) and not isinstance(v, bool)
    ]


# --------------------------------------------------------------------------- encoders


def _dumps(doc: Any) -> bytes:
    # the standard library: orjson refuses integers beyond 64 bits, devices need not
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def _native_doc(draw: Draw, r: Reading) -> dict[str, Any]:
    doc = dict(r.values)
    key = draw(_choice_of(["time", "ts"]))
    doc[key] = _time_text(draw, r.time)
    register = doc.get("register_l")
    numeric = isinstance(register, float | int) and not isinstance(register, bool)
    if isinstance(r.device, Meter) and numeric and draw(st.booleans()):
        own = doc.pop("register_l") / r.device.litres_per_unit
        if r.device.register_unit == "m3" and draw(st.booleans()):
            doc["register_m3"] = own
        else:
            doc["register"] = own
    elif "register_l" in doc and not numeric and draw(st.booleans()):
        # a wrong type under the other register names (converted by ingest)
        doc[draw(_choice_of(["register_m3", "register"]))] = doc.pop("register_l")
    if "alarms" in doc and all(v is True for v in doc["alarms"].values()) and draw(st.booleans()):
        doc["alarms"] = sorted(doc["alarms"])  # the list form: flags that are on
    if draw(st.booleans()):
        doc["device"] = r.device.id
    return doc


def _senml_pack(r: Reading, t_text: float) -> list[dict[str, Any]]:
    pack: list[dict[str, Any]] = []
    for key, value in r.values.items():
        if key == "alarms":
            pack += [{"n": flag, "vb": on} for flag, on in value.items()]
            continue
        name, unit = _SENML[key]
        rec: dict[str, Any] = {"n": name, ("vb" if isinstance(value, bool) else "v"): value}
        if unit:
            rec["u"] = unit
        pack.append(rec)
    pack[0]["bn"] = f"urn:dev:yukimizu:{r.device.id}:"
    pack[0]["bt"] = t_text
    return pack


_LORA_ALIASES: Final = {"lat": "latitude", "lon": "longitude", "battery_v": "battery"}


def _lora_object(draw: Draw, r: Reading) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in r.values.items():
        if key == "alarms":
            obj.update(value)  # codecs send flags as top-level booleans
        elif key in _LORA_ALIASES and draw(st.booleans()):
            obj[_LORA_ALIASES[key]] = value
        elif key == "register_l" and not isinstance(value, float | int) and draw(st.booleans()):
            obj["volume_m3"] = value  # a wrong type under a name ingest converts
        elif (
            key in ("seq", "quality")
            and type(value) is int
            and 0 <= value <= _SENML_INT_MAX
            and draw(st.booleans())
        ):
            obj[key] = float(value)  # ChirpStack v4 writes every codec number as a float
        else:
            obj[key] = value
    if draw(st.booleans()):
        obj["fw"] = draw(st.text(max_size=6))  # extras a codec reports are ignored
    return obj


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _chirpstack(w: World, r: Reading, obj: Any, fcnt: int, t: Any) -> tuple[str, bytes]:
    assert r.device.dev_eui is not None
    eui = r.device.dev_eui.lower()
    doc: dict[str, Any] = {
        "deviceInfo": {"devEui": eui, "deviceName": r.device.id},
        "fCnt": fcnt,
        "time": t,
        "object": obj,
        "rxInfo": [{"gatewayId": "0016c001f153a14c", "rssi": -109, "snr": -4.5}],
    }
    return f"{w.lora_prefix}application/app/device/{eui}/event/up", _dumps(doc)


def _ttn(w: World, r: Reading, obj: Any, fcnt: int, t: Any) -> tuple[str, bytes]:
    assert r.device.dev_eui is not None
    doc = {
        "end_device_ids": {"device_id": r.device.id, "dev_eui": r.device.dev_eui},
        "received_at": t,
        "uplink_message": {
            "f_cnt": fcnt,
            "decoded_payload": obj,
            "rx_metadata": [{"rssi": -88, "channel_rssi": -88}],
            "received_at": t,
        },
    }
    return f"{w.lora_prefix}v3/town@ttn/devices/{r.device.id}/up", _dumps(doc)


def _rmc(r: Reading, t: float, status: str = "A") -> str:
    when = datetime.fromtimestamp(t, UTC)
    lat, lon = r.values["lat"], r.values["lon"]

    def angle(value: float, digits: int) -> str:
        units = round(abs(value) * 600_000)
        deg, rem = divmod(units, 600_000)
        return f"{deg:0{digits}d}{rem // 10_000:02d}.{rem % 10_000:04d}"

    speed = abs(r.values.get("speed_kmh", 0.0)) / 1.852  # abs: no "-0.0" on the wire
    heading = abs(r.values.get("heading_deg", 0.0))
    body = (
        f"GPRMC,{when:%H%M%S}.{when.microsecond // 10_000:02d},{status},"
        f"{angle(lat, 2)},{'N' if lat >= 0 else 'S'},{angle(lon, 3)},{'E' if lon >= 0 else 'W'},"
        f"{speed:.1f},{heading:.1f},{when:%d%m%y},,,A"
    )
    return nmea.sentence(body)


# --------------------------------------------------------------------------- cases

_DEFECTS: Final[dict[str, tuple[str, ...]]] = {
    "native": (
        "wrong_type",
        "out_of_range",
        "overflow",
        "unknown_field",
        "missing",
        "device_mismatch",
        "unknown_device",
        "wrong_kind",
        "future_time",
        "old_time",
        "naive_time",
        "bad_time",
        "out_of_area",
        "truncated",
        "too_large",
        "bad_topic",
    ),
    "batch": ("wrong_type", "out_of_range", "empty_readings", "reading_not_object"),
    "senml": (
        "wrong_type",
        "out_of_range",
        "overflow",
        "unit_object",
        "unit_unknown",
        "base_string",
        "unknown_device",
        "future_time",
        "old_time",
        "truncated",
        "not_array_record",
    ),
    "chirpstack": (
        "wrong_type",
        "out_of_range",
        "no_object",
        "unknown_eui",
        "future_time",
        "truncated",
        "out_of_area",
    ),
    "ttn": ("wrong_type", "out_of_range", "no_object", "unknown_eui", "future_time", "old_time"),
    "nmea": ("checksum", "garbled", "void_fix", "future_time", "wrong_kind_topic", "not_ascii"),
}
# Which kinds a format carries (LoRaWAN: devices with a DevEUI; NMEA: plows).
_KINDS: Final = {
    "native": ("snow", "water", "plow"),
    "batch": ("snow", "water", "plow"),
    "senml": ("snow", "water", "plow"),
    "chirpstack": ("snow", "water", "plow"),
    "ttn": ("snow", "water", "plow"),
    "nmea": ("plow",),
}


@dataclass(frozen=True, slots=True)
class Pick:
    """What a case is built from: the world, format, kind, device and defect."""

    w: World
    fmt: str
    kind: str
    dev: Device
    defect: str


def _one(reason: Reason | str) -> frozenset[str]:
    return frozenset({str(reason)})


@st.composite
def cases(draw: Draw, w: World, defective: float = 0.7) -> Case:
    """A message in one of the real formats: good, or with one defect (``defective``
    is roughly the share with a defect)."""
    fmt = draw(_choice_of(FORMATS))
    kind = draw(_choice_of(_KINDS[fmt]))
    devs = w.devices(kind, lora=fmt in ("chirpstack", "ttn"))
    dev = draw(_choice_of(devs))
    bad = draw(st.floats(0, 1)) < defective
    defect = draw(_choice_of(_DEFECTS[fmt])) if bad else "none"
    builder = {
        "native": _native_case,
        "batch": _batch_case,
        "senml": _senml_case,
        "chirpstack": _lora_case,
        "ttn": _lora_case,
        "nmea": _nmea_case,
    }[fmt]
    return builder(draw, Pick(w, fmt, kind, dev, defect))


def _field_defect(draw: Draw, r: Reading, defect: str) -> None:
    """Put a wrong type or an out-of-range value into one field of ``r``."""
    if defect == "wrong_type":
        names = [k for k in r.values if k != "alarms"]
        if r.values.get("alarms") and draw(st.booleans()):
            flag = draw(_choice_of(sorted(r.values["alarms"])))
            r.values["alarms"][flag] = _wrong_value(draw, flag)
            return
        name = draw(_choice_of(names))
        r.values[name] = _wrong_value(draw, name)
    else:
        name = draw(_choice_of(_numeric_fields(r)))
        r.values[name] = _out_of_range(draw, r, name)


def _future(draw: Draw, w: World) -> float:
    # an hour of margin: a benchmark publishes its cases minutes after generating them
    return w.now + w.limits.max_future_s + draw(st.floats(3600, 2e9))


def _old(draw: Draw) -> float:
    return draw(st.floats(86_400, 946_684_798))


def _topic(w: World, kind: str, device: str) -> str:
    return f"{w.prefix}/{kind}/{device}"


_ODD_ID: Final = st.text("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789-_", min_size=1, max_size=12)


def _native_case(draw: Draw, p: Pick) -> Case:  # noqa: PLR0912, PLR0915 - one branch per defect, a table read top to bottom
    w, fmt, kind, dev, defect = p.w, p.fmt, p.kind, p.dev, p.defect
    t = _past(draw, w)
    if defect == "future_time":
        t = _future(draw, w)
    elif defect == "old_time":
        t = _old(draw)
    r = _reading(draw, w, kind, dev, t, senml=False)
    topic = _topic(w, kind, dev.id)
    expect = _one(STORED)
    if defect in ("wrong_type", "out_of_range"):
        _field_defect(draw, r, defect)
        expect = _one(V)
    doc = _native_doc(draw, r)
    if defect == "overflow":
        # finite in JSON, infinite after ingest's unit conversion (m³ → L, own unit → L)
        if kind == "water":
            doc.pop("register_l", None)
            doc.pop("register", None)
            doc.pop("register_m3", None)
            assert isinstance(dev, Meter)
            key = "register_m3" if dev.register_unit == "m3" else "register"
            doc[key] = draw(_choice_of([1.7976931348623157e308, 1e306]))
            if dev.register_unit == "L" and key == "register":
                doc[key] = 1e300 * 1e8  # stays finite for a litre meter: too big anyway
        else:
            doc["battery_v"] = 1.7976931348623157e308
        expect = _one(V)
    elif defect == "unknown_field":
        doc[draw(_choice_of(["humidity", "Depth_cm", "firmware", "seq_no", ""]))] = 1
        expect = _one(V)
    elif defect == "missing":
        for key in ("depth_cm", "distance_mm", "register_l", "register", "register_m3", "lat"):
            doc.pop(key, None)
        expect = _one(V)
    elif defect == "device_mismatch":
        doc["device"] = draw(
            st.sampled_from([d.id for d in w.devices(kind)] + ["X1"]).filter(lambda d: d != dev.id)
        )
        expect = _one(V)
    elif defect == "unknown_device":
        odd = draw(_ODD_ID.filter(lambda d: w.registry.lookup(d) is None))
        doc.pop("device", None)
        topic = _topic(w, kind, odd)
        expect = _one(Reason.UNKNOWN_DEVICE)
    elif defect == "wrong_kind":
        other = draw(_choice_of([k for k in ("snow", "water", "plow") if k != kind]))
        topic = _topic(w, other, dev.id)
        expect = _one(Reason.WRONG_KIND)
    elif defect == "future_time":
        expect = _one(Reason.FUTURE_TIMESTAMP)
        if draw(st.integers(0, 4)) == 0:  # the last instant a datetime holds, far west
            doc.pop("ts", None)
            doc["time"] = "9999-12-31T23:59:59.999999-23:59"
    elif defect == "old_time":
        expect = _one(Reason.BAD_TIMESTAMP)
        if draw(st.integers(0, 4)) == 0:  # the first instant, far east: before year 1 UTC
            doc.pop("ts", None)
            doc["time"] = "0001-01-01T00:00:00+23:59"
    elif defect == "naive_time":
        doc.pop("ts", None)
        doc["time"] = datetime.fromtimestamp(t, JST).replace(tzinfo=None).isoformat()
        expect = _one(V)
    elif defect == "bad_time":
        doc.pop("ts", None)
        doc["time"] = draw(
            st.sampled_from(["yesterday", "", "2026-13-01T00:00:00Z", 1e19, -1e19, [1], {}])
        )
        expect = _one(V)
    elif defect == "out_of_area":
        if kind != "plow":
            return _native_case(draw, Pick(w, fmt, kind, dev, "none"))
        doc["lat"] = draw(_choice_of([w.limits.lat_min - 0.01, 0.0, -45.5, 90.0]))
        expect = _one(Reason.OUT_OF_AREA)
    payload = _dumps(doc)
    if defect == "truncated":
        payload = payload[: draw(st.integers(1, len(payload) - 1))]
        expect = _one(Reason.INVALID_JSON)
    elif defect == "too_large":
        payload = payload[:-1] + b"," + b'"pad":"' + b"x" * w.limits.max_payload_bytes + b'"}'
        expect = _one(Reason.TOO_LARGE)
    elif defect == "bad_topic":
        topic = draw(
            st.sampled_from(
                [
                    f"{w.prefix}/{kind}",
                    f"{w.prefix}/rain/{dev.id}",
                    f"{w.prefix}/{kind}/{dev.id}/x",
                    f"{w.prefix}/{kind}/",
                ]
            )
        )
        expect = _one(Reason.BAD_TOPIC)
    return Case(fmt, defect, topic, payload, expect, 1 if expect == _one(STORED) else 0)


def _batch_case(draw: Draw, p: Pick) -> Case:
    w, fmt, kind, dev, defect = p.w, p.fmt, p.kind, p.dev, p.defect
    n = draw(st.integers(2, 4))
    t0 = _past(draw, w) - 3600
    readings = [_reading(draw, w, kind, dev, t0 + 600 * i, senml=False) for i in range(n)]
    expect, good = _one(STORED), n
    if defect in ("wrong_type", "out_of_range"):
        bad = readings[draw(st.integers(0, n - 1))]
        _field_defect(draw, bad, defect)
        expect, good = _one(V), n - 1
    items = []
    for r in readings:
        item = _native_doc(draw, r)
        item.pop("device", None)
        items.append(item)
    doc: dict[str, Any] = {"device": dev.id, "readings": items}
    if defect == "empty_readings":
        doc["readings"] = draw(_choice_of([[], {}, "none", 0]))
        expect, good = _one(V), 0
    elif defect == "reading_not_object":
        items[draw(st.integers(0, n - 1))] = draw(_choice_of([1, "x", [], None]))
        expect, good = _one(V), 0
    return Case(fmt, defect, _topic(w, kind, dev.id), _dumps(doc), expect, good)


def _senml_case(draw: Draw, p: Pick) -> Case:  # noqa: PLR0912, PLR0915 - one branch per defect, a table read top to bottom
    w, fmt, kind, dev, defect = p.w, p.fmt, p.kind, p.dev, p.defect
    t = _past(draw, w)
    if defect == "future_time":
        t = _future(draw, w)
    elif defect == "old_time":
        t = draw(st.floats(2**28, 946_684_799))  # absolute (RFC 8428: ≥ 2**28), before 2000
    r = _reading(draw, w, kind, dev, t, senml=True)
    topic = _topic(w, kind, dev.id)
    expect = _one(STORED)
    pack = _senml_pack(r, round(t, 3))
    numeric = [i for i, rec in enumerate(pack) if "v" in rec]
    if defect == "wrong_type":
        i = draw(_choice_of(range(len(pack))))
        key = "vb" if "vb" in pack[i] else "v"
        pack[i][key] = draw(
            st.one_of(
                st.text(max_size=5),
                st.lists(st.integers(), max_size=2),
                st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
            )
            if key == "v"
            else st.one_of(st.integers(0, 1), st.text(max_size=3))
        )
        expect = _one(V)
    elif defect == "out_of_range":
        i = draw(_choice_of(numeric))
        name = next(k for k, (n, _) in _SENML.items() if n == pack[i]["n"])
        value = _out_of_range(draw, r, name)
        if name in ("seq", "quality") and value < 0:
            value = -1  # doubles: -2**63 - 1 rounds to -2**63, still negative
        lo, hi = _range(r, name)
        if lo <= round(value, 6) <= hi:  # SenML values are rounded to 6 decimals
            value = hi + 1
        pack[i]["v"] = value
        if name in ("seq", "quality") and value > _SENML_INT_MAX:
            pack[i]["v"] = float(value) * 2  # a double clearly beyond int64
        expect = _one(V)
    elif defect == "overflow":
        # v + bv overflows to inf (RFC 8428 base value)
        i = draw(_choice_of(numeric))
        pack[i]["v"] = 1.7976931348623157e308
        pack[0]["bv"] = 1.7976931348623157e308
        expect = _one(V)
    elif defect == "unit_object":
        i = draw(_choice_of(numeric))
        pack[i]["u"] = draw(_choice_of([{"unit": "cm"}, ["cm"], {}, [], 1, True]))
        expect = _one(V)
        if draw(st.booleans()):
            del pack[i]["u"]
            pack[0]["bu"] = draw(_choice_of([{"u": 1}, ["m"], 2.5]))
    elif defect == "unit_unknown":
        i = draw(_choice_of(numeric))
        pack[i]["u"] = draw(_choice_of(["furlong", "%RH", "", "CM", "m3/h"]))
        expect = _one(V)
    elif defect == "base_string":
        pack[0]["bt"] = draw(_choice_of(["NaN", "inf", str(round(t)), "1e999"]))
        expect = _one(V)
    elif defect == "unknown_device":
        odd = draw(_ODD_ID.filter(lambda d: w.registry.lookup(d) is None))
        topic = _topic(w, kind, odd)
        pack[0]["bn"] = f"urn:dev:yukimizu:{odd}:"
        expect = _one(Reason.UNKNOWN_DEVICE)
    elif defect == "future_time":
        expect = _one(Reason.FUTURE_TIMESTAMP)
    elif defect == "old_time":
        expect = _one(Reason.BAD_TIMESTAMP)
    elif defect == "not_array_record":
        pack.insert(draw(st.integers(0, len(pack))), draw(_choice_of([1, "x", [], None])))
        expect = _one(V)
    payload = _dumps(pack)
    if defect == "truncated":
        payload = payload[: draw(st.integers(1, len(payload) - 1))]
        expect = _one(Reason.INVALID_JSON)
    return Case(fmt, defect, topic, payload, expect, 1 if expect == _one(STORED) else 0)


def _lora_case(draw: Draw, p: Pick) -> Case:
    w, fmt, kind, dev, defect = p.w, p.fmt, p.kind, p.dev, p.defect
    t = _past(draw, w)
    if defect == "future_time":
        t = _future(draw, w)
    elif defect == "old_time":
        t = _old(draw)
    r = _reading(draw, w, kind, dev, t, senml=False)
    expect = _one(STORED)
    if defect in ("wrong_type", "out_of_range"):
        _field_defect(draw, r, defect)
        expect = _one(V)
    elif defect == "out_of_area":
        if kind != "plow":
            return _lora_case(draw, Pick(w, fmt, kind, dev, "none"))
        r.values["lon"] = draw(_choice_of([w.limits.lon_max + 0.01, 0.0, -179.9]))
        expect = _one(Reason.OUT_OF_AREA)
    elif defect == "future_time":
        expect = _one(Reason.FUTURE_TIMESTAMP)
    elif defect == "old_time":
        expect = _one(Reason.BAD_TIMESTAMP)
    obj: Any = _lora_object(draw, r)
    if defect == "no_object":
        obj = draw(_choice_of([None, {}, [], "AQID", 3]))
        expect = _one(Reason.NO_DECODED_PAYLOAD)
    encode = _chirpstack if fmt == "chirpstack" else _ttn
    fcnt = draw(st.integers(0, 2**32 - 1))
    topic, payload = encode(w, r, obj, fcnt, _iso(t))
    if defect == "unknown_eui":
        assert dev.dev_eui is not None
        other = draw(
            st.text("0123456789abcdef", min_size=16, max_size=16).filter(
                lambda e: w.registry.by_dev_eui(e) is None
            )
        )
        payload = payload.replace(dev.dev_eui.lower().encode(), other.encode())
        payload = payload.replace(dev.dev_eui.encode(), other.encode())
        topic = topic.replace(dev.dev_eui.lower(), other)
        if fmt == "ttn":
            doc = orjson.loads(payload)
            doc["end_device_ids"]["device_id"] = "x" + other
            payload = _dumps(doc)
            topic = f"{w.lora_prefix}v3/town@ttn/devices/x{other}/up"
        expect = _one(Reason.UNKNOWN_DEVICE)
    if defect == "truncated":
        payload = payload[: draw(st.integers(1, len(payload) - 1))]
        expect = _one(Reason.INVALID_JSON)
    return Case(fmt, defect, topic, payload, expect, 1 if expect == _one(STORED) else 0)


def _nmea_case(draw: Draw, p: Pick) -> Case:
    w, fmt, kind, dev, defect = p.w, p.fmt, p.kind, p.dev, p.defect
    n = draw(st.integers(1, 3))
    t0 = _future(draw, w) if defect == "future_time" else _past(draw, w) - 60
    readings = [_reading(draw, w, kind, dev, t0 + 5 * i, False, nmea=True) for i in range(n)]
    lines = [_rmc(r, r.time) for r in readings]
    topic = _topic(w, "plow", dev.id)
    expect, good = _one(STORED), n
    i = draw(st.integers(0, n - 1))
    if defect == "checksum":
        body, _, given = lines[i].partition("*")
        lines[i] = f"{body}*{(int(given, 16) + draw(st.integers(1, 255))) % 256:02X}"
        expect, good = _one(Reason.NMEA), 0
    elif defect == "garbled":
        fields = lines[i].split("*")[0][1:].split(",")
        j = draw(_choice_of([1, 3, 4, 5, 6, 7, 8, 9]))  # time … date
        garble = ["x", "inf", "nan", "99999999", "0000inf", "1e999", "1_0", " 1", "-5", "NaN"]
        if j not in (7, 8):  # speed and course may be empty
            garble.append("")
        fields[j] = draw(_choice_of(garble))
        lines[i] = nmea.sentence(",".join(fields))
        expect, good = _one(Reason.NMEA), 0
        if j in (7, 8) and fields[j] == "99999999":  # well-formed, but 99,999,999 knots
            expect, good = _one(V), n - 1
    elif defect == "void_fix":
        lines = [_rmc(r, r.time, "V") for r in readings]
        expect, good = _one(DROPPED), 0
    elif defect == "future_time":
        expect, good = _one(Reason.FUTURE_TIMESTAMP), 0
    elif defect == "wrong_kind_topic":
        topic = _topic(w, draw(_choice_of(["snow", "water"])), dev.id)
        expect, good = _one(Reason.NMEA), 0
    payload = "\r\n".join(lines).encode("ascii") + b"\r\n"
    if defect == "not_ascii":
        payload = payload[:10] + "度".encode() + payload[10:]
        expect, good = _one(Reason.UNDECODABLE), 0
    return Case(fmt, defect, topic, payload, expect, good)


# --------------------------------------------------------------------------- garbage

_KEYS: Final = st.sampled_from(
    [
        "time", "ts", "depth_cm", "distance_mm", "air_temp_c", "register_l", "register_m3",
        "register", "lat", "lon", "speed_kmh", "heading_deg", "seq", "quality", "battery_v",
        "rssi_dbm", "alarms", "leak", "readings", "device", "bn", "bt", "bu", "bv", "bs", "n",
        "u", "v", "s", "t", "vb", "object", "deviceInfo", "devEui", "devEUI", "fCnt",
        "rxInfo", "uplink_message", "end_device_ids", "decoded_payload", "dev_eui", "f_cnt",
        "received_at", "volume_m3", "latitude", "blade_down",
    ]
)  # fmt: skip
_LEAF: Final = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([INT64_MAX + 1, 2**64 - 1, INT64_MIN - 1, -0.0, 1.7976931348623157e308]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from(["cm", "m3", "Cel", "urn:dev:yukimizu:ST01:", "depth", "NaN", "²"]),
)
_JSON: Final = st.recursive(
    _LEAF,
    lambda kids: (
        st.lists(kids, max_size=5) | st.dictionaries(_KEYS | st.text(max_size=5), kids, max_size=6)
    ),
    max_leaves=25,
)


def _garbage_topics(w: World) -> st.SearchStrategy[str]:
    snow, water, plow = (w.devices(k)[0].id for k in ("snow", "water", "plow"))
    lora = w.devices("water", lora=True)[0]
    assert lora.dev_eui is not None
    return st.sampled_from(
        [
            _topic(w, "snow", snow),
            _topic(w, "water", water),
            _topic(w, "plow", plow),
            _topic(w, "snow", "ZZ"),
            f"{w.prefix}/water",
            f"{w.lora_prefix}application/1/device/{lora.dev_eui.lower()}/event/up",
            f"{w.lora_prefix}v3/a@ttn/devices/{lora.id}/up",
        ]
    )


_NEVER: Final = frozenset({str(Reason.INTERNAL_ERROR), str(Reason.INFLUX_REJECTED), "nothing"})
_ANY: Final = frozenset({STORED, DROPPED, *(str(r) for r in Reason)}) - _NEVER
_DECODE: Final = frozenset(
    {str(Reason.INVALID_JSON), str(Reason.UNDECODABLE), str(Reason.EMPTY), str(Reason.NMEA)}
)


@st.composite
def garbage(draw: Draw, w: World) -> Case:
    """A payload with no intended meaning: random JSON with the formats' keys, random
    bytes or NMEA-ish text."""
    what = draw(_choice_of(["json", "json", "bytes", "nmea"]))
    topic = draw(_garbage_topics(w))
    bad_topic = topic == f"{w.prefix}/water"
    if what == "json":
        payload = _dumps(draw(_JSON))
        return Case(
            "garbage", "json", topic, payload, _one(Reason.BAD_TOPIC) if bad_topic else _ANY
        )
    if what == "bytes":
        payload = draw(st.binary(max_size=200))
        head = payload.lstrip()[:1]
        # anything that does not start like JSON or NMEA must fail as a decode error
        expect = _ANY if head in (b"{", b"[", b"$") else _DECODE
        if not topic.startswith(w.prefix + "/"):  # LoRaWAN topics: JSON is required
            expect = _ANY if head in (b"{", b"[") else _DECODE
        return Case(
            "garbage", "bytes", topic, payload, _one(Reason.BAD_TOPIC) if bad_topic else expect
        )
    text = draw(st.text(alphabet="$GPRMCNAVSWE0123456789.,*\r\ninf", max_size=120))
    return Case("garbage", "nmea", _topic(w, "plow", w.devices("plow")[0].id), text.encode(), _ANY)


def payloads(w: World) -> st.SearchStrategy[Case]:
    """Structured cases most of the time, garbage the rest."""
    return st.one_of(cases(w), cases(w), cases(w), garbage(w))


def count_by(labels: Sequence[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for label in labels:
        out[label] = out.get(label, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))


# --------------------------------------------------------------------------- running


def collect(strategy: st.SearchStrategy[Case], n: int, seed: int = 0) -> list[Case]:
    """``n`` examples of ``strategy`` as hypothesis generates them (seeded, no shrinking)."""
    out: list[Case] = []

    @hypothesis.seed(seed)
    @hypothesis.settings(
        max_examples=n,
        database=None,
        deadline=None,
        phases=[hypothesis.Phase.generate],
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    @hypothesis.given(strategy)
    def run(case: Case) -> None:
        out.append(case)

    run()
    return out


@dataclass
class InProcess:
    """What the processor made of a list of cases."""

    outcomes: dict[str, int]  # outcome → count
    per_case: list[str]  # each case's outcome, in order
    problems: list[tuple[Case, str]]  # cases answered wrongly (a crash counts)
    elapsed_s: float


def run_in_process(
    cases: Sequence[Case], registry: Registry, limits: Limits, shared: bool = False
) -> InProcess:
    """Each case through a fresh :class:`Processor` (no frame-counter memory between them),
    or with ``shared`` all through one, as ingest does: a LoRaWAN uplink repeating its
    device's last frame counter is then dropped as a retransmission before validation,
    so only the outcomes (not the reasons) of a shared run are comparable with ingest's."""
    outcomes: list[str] = []
    problems: list[tuple[Case, str]] = []
    one = Processor(registry, limits)
    t0 = time.perf_counter()
    for case in cases:
        proc = one if shared else Processor(registry, limits)
        try:
            result = proc.process(Message(case.topic, case.payload, now()))
        except Exception as exc:  # noqa: BLE001 - a crash is this run's figure, reported
            problems.append((case, f"raised {type(exc).__name__}: {exc}"))
            outcomes.append("crash")
            continue
        outcomes.append(outcome(result))
        problem = check(case, result)
        if problem:
            problems.append((case, problem))
    return InProcess(count_by(outcomes), outcomes, problems, time.perf_counter() - t0)


def now() -> float:
    return time.time()


GOOD_MEASUREMENT: Final = "snow_depth"


class QosPublisher(Protocol):
    def publish(self, topic: str, payload: bytes) -> None: ...

    def close(self) -> None:
        """Wait for every PUBACK, then disconnect."""


@dataclass
class BrokerRun:
    """Cases published through a real broker into a running ingest, good readings between."""

    published: int  # cases + good readings, all acknowledged by the broker
    good: int
    good_stored: int  # distinct good seqs found in InfluxDB
    received: int  # ingest's own count, from its summary line at shutdown
    alive: bool  # ingest was still running when the publishing and checking ended
    deadletters: dict[str, int]  # ingest's dead-letter store by reason
    publish_s: float
    elapsed_s: float
    log_tail: str = ""


def good_reading(seq: int, time_ms: int) -> bytes:
    return b'{"time":%d,"depth_cm":%.1f,"seq":%d}' % (time_ms, (seq % 3000) / 10, seq)


@dataclass(frozen=True, slots=True)
class GoodReadings:
    """The good readings a broker run mixes in: one on ``topic`` (from ``device``)
    every ``every`` cases, each of which must be stored."""

    topic: str
    device: str
    every: int = 10


def broker_run(
    cases: Sequence[Case],
    *,
    publisher: Callable[[], QosPublisher],
    ingest: IngestProcess,
    influx: InfluxDB1,
    database: str,
    goods: GoodReadings,
    deadletter_path: Path,
    timeout_s: float = 300.0,
) -> BrokerRun:
    """Publish ``cases`` with a good reading (``goods``) every ``goods.every`` cases.

    ``publisher()`` returns a connected QoS 1 publisher (``publish``, ``close`` waiting
    for every PUBACK); ``ingest`` is a started :class:`devtools.processes.IngestProcess`.
    Returns once every good reading is in InfluxDB or ``timeout_s`` passed; ingest is
    stopped (SIGTERM) to read its summary and dead-letter store.
    """
    good_topic, good_device, good_every = goods.topic, goods.device, goods.every
    base_ms = int(now() * 1000) - 86_400_000
    t0 = time.perf_counter()
    pub = publisher()
    good = 0
    for i, case in enumerate(cases):
        pub.publish(case.topic, case.payload)
        if i % good_every == 0:
            pub.publish(good_topic, good_reading(good, base_ms + good))
            good += 1
    pub.close()
    publish_s = time.perf_counter() - t0
    q = f'SELECT COUNT("seq") FROM "{GOOD_MEASUREMENT}" WHERE "device" = \'{good_device}\''
    deadline = time.monotonic() + timeout_s
    stored = 0
    while time.monotonic() < deadline and ingest.running().poll() is None:
        series = influx.query(q, database)["results"][0].get("series")
        stored = int(series[0]["values"][0][1]) if series else 0
        if stored >= good:
            break
        time.sleep(0.2)
    alive = ingest.running().poll() is None
    ingest.stop(60)
    elapsed = time.perf_counter() - t0
    rows = influx.query(
        f'SELECT "seq" FROM "{GOOD_MEASUREMENT}" WHERE "device" = \'{good_device}\'', database
    )["results"][0].get("series", [])
    seqs = {int(v[1]) for s in rows for v in s["values"]}
    good_stored = len(seqs & set(range(good)))
    summary = re.search(r"ingest stopped: .*received=(\d+)", ingest.log())
    store = DeadLetterStore(deadletter_path)
    try:
        counts = store.counts()
    finally:
        store.close()
    return BrokerRun(
        published=len(cases) + good,
        good=good,
        good_stored=good_stored,
        received=int(summary.group(1)) if summary else -1,
        alive=alive,
        deadletters=counts,
        publish_s=publish_s,
        elapsed_s=elapsed,
        log_tail=ingest.log()[-2000:],
    )
