"""Payload decoders: bytes + topic → device readings as plain dicts.

Each decoder knows one wire format and nothing about validation, the registry or
InfluxDB. It returns :class:`Decoded` items whose ``values`` use the native field
names of :mod:`sensors.models`; the pipeline validates them. Anything a decoder
cannot make sense of raises :class:`Rejected` with a reason category and a
human-readable detail, and the message is dead-lettered.

Topic scheme (``prefix`` is configurable, default ``yukimizu``)::

    {prefix}/{kind}/{device}                      native JSON, native batch, SenML, NMEA
    [...]/application/{app}/device/{devEUI}/event/up   ChirpStack v4 uplink event (JSON)
    [...]/v3/{app}@{tenant}/devices/{device}/up         The Things Stack v3 uplink

LoRaWAN topics may sit under any bridge prefix (``[...]/``).

For native topics the format is recognised from the payload: ``{`` → native JSON
(a batch when it has ``readings``), ``[`` → SenML, ``$`` → NMEA 0183 sentences.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import orjson

from core import nmea
from ingest.reasons import Drop, Reason
from sensors.models import (
    ALARM_FLAGS,
    KINDS,
    MODEL_BY_KIND,
    PAYLOAD_FIELDS,
    Kind,
    stored_fields,
)

Format = Literal["native", "batch", "senml", "nmea", "chirpstack", "ttn"]


class Rejected(Exception):
    """A payload that cannot be used. ``reason`` is a short category for counting."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(slots=True)
class Decoded:
    """One reading as decoded, before validation."""

    values: dict[str, Any]
    device: str | None = None
    kind: Kind | None = None
    dev_eui: str | None = None
    fcnt: int | None = None


@dataclass(frozen=True, slots=True)
class Route:
    """What the topic says about a message."""

    family: Literal["native", "chirpstack", "ttn"]
    kind: Kind | None = None
    device: str | None = None


def route_topic(topic: str, prefix: str) -> Route:
    """Classify a topic or raise ``Rejected(Reason.BAD_TOPIC, ...)``."""
    parts = topic.split("/")
    pre = prefix.split("/")
    if parts[: len(pre)] == pre:
        rest = parts[len(pre) :]
        if len(rest) == 2 and rest[0] in KINDS and rest[1]:
            return Route("native", rest[0], rest[1])
        raise Rejected(
            Reason.BAD_TOPIC,
            f"expected {prefix}/{{snow|water|plow}}/{{device}}, got {topic!r}",
        )
    # LoRaWAN servers' topics, possibly under a bridge prefix (e.g. "lora/application/...").
    cs = parts[-6:]
    if len(cs) == 6 and cs[0] == "application" and cs[2] == "device" and cs[4:] == ["event", "up"]:
        return Route("chirpstack", None, cs[3])
    tts = parts[-5:]
    if len(tts) == 5 and tts[0] == "v3" and tts[2] == "devices" and tts[4] == "up":
        return Route("ttn", None, tts[3])
    raise Rejected(Reason.BAD_TOPIC, f"topic {topic!r} matches no known scheme")


def _json(payload: bytes) -> Any:
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError as bad:
            if bad.reason != "unexpected end of data":
                raise Rejected(
                    Reason.UNDECODABLE, "payload is binary, not UTF-8 JSON text"
                ) from None
            # JSON text cut off inside a multi-byte character (found by fuzzing): it is
            # truncated JSON, not binary
            raise Rejected(
                Reason.INVALID_JSON, f"payload ends inside a UTF-8 character: {exc}"
            ) from None
        raise Rejected(Reason.INVALID_JSON, str(exc)) from None


def _normalise_alarms(values: dict[str, Any]) -> None:
    alarms = values.get("alarms")
    if isinstance(alarms, list):
        unknown = [a for a in alarms if a not in ALARM_FLAGS]
        if unknown:
            raise Rejected(Reason.VALIDATION, f"unknown alarm flags {unknown}")
        values["alarms"] = {a: True for a in alarms}


def _normalise_native(values: dict[str, Any]) -> dict[str, Any]:
    if "ts" in values and "time" not in values:
        values["time"] = values.pop("ts")
    v = values.get("register_m3")
    # a bool is an int to Python: `true` became 1000 L (found by fuzzing). A register
    # that is not a number stays under its name for validation to refuse, reading by
    # reading (the good readings of a batch are still written).
    if isinstance(v, int | float) and not isinstance(v, bool):
        del values["register_m3"]
        # round: 1234.567 m3 * 1000 is 1234567.0000000002 in binary floating point
        values["register_l"] = round(v * 1000, 3)
    _normalise_alarms(values)
    return values


def decode_native(payload: bytes) -> list[Decoded]:
    """Native JSON: one reading, or a batch ``{"readings": [...], <shared fields>}``."""
    doc = _json(payload)
    if isinstance(doc, list):
        return decode_senml_doc(doc)
    if not isinstance(doc, dict):
        raise Rejected(Reason.INVALID_JSON, f"expected a JSON object, got {type(doc).__name__}")
    readings = doc.pop("readings", None)
    if readings is None:
        return [Decoded(_normalise_native(doc), device=doc.get("device"))]
    if not isinstance(readings, list) or not readings:
        raise Rejected(Reason.VALIDATION, "'readings' must be a non-empty list")
    out: list[Decoded] = []
    for i, item in enumerate(readings):
        if not isinstance(item, dict):
            raise Rejected(Reason.VALIDATION, f"readings[{i}] is not an object")
        values = {**doc, **item}
        out.append(Decoded(_normalise_native(values), device=values.get("device")))
    return out


# --- SenML (RFC 8428) -------------------------------------------------------------

_SENML_REL_LIMIT = 2**28  # RFC 8428 §4.5.3: smaller times are relative to "now"


def _scale(
    unit: str | None, table: dict[str | None, tuple[float, float]], name: str
) -> tuple[float, float]:
    try:
        return table[unit]
    except KeyError:
        raise Rejected(
            Reason.VALIDATION,
            f"SenML record {name!r}: unit {unit!r} not accepted (use one of "
            f"{sorted(u for u in table if u)})",
        ) from None


# SenML name → (native field, {unit: (factor, offset)}) ; value_native = v*factor + offset
_SENML_NUMERIC: dict[str, tuple[str, dict[str | None, tuple[float, float]]]] = {
    "depth": ("depth_cm", {"m": (100.0, 0.0), "cm": (1.0, 0.0)}),
    "snow_depth": ("depth_cm", {"m": (100.0, 0.0), "cm": (1.0, 0.0)}),
    "distance": ("distance_mm", {"m": (1000.0, 0.0), "mm": (1.0, 0.0)}),
    "temperature": ("air_temp_c", {"Cel": (1.0, 0.0), "K": (1.0, -273.15)}),
    "temp": ("air_temp_c", {"Cel": (1.0, 0.0), "K": (1.0, -273.15)}),
    "volume": ("register_l", {"m3": (1000.0, 0.0), "l": (1.0, 0.0), "L": (1.0, 0.0)}),
    "register": ("register_l", {"m3": (1000.0, 0.0), "l": (1.0, 0.0), "L": (1.0, 0.0)}),
    "flow": (
        "flow_lph",
        {"m3/s": (3.6e6, 0.0), "l/s": (3600.0, 0.0), "L/h": (1.0, 0.0), "l/h": (1.0, 0.0)},
    ),
    "lat": ("lat", {"lat": (1.0, 0.0), None: (1.0, 0.0)}),
    "lon": ("lon", {"lon": (1.0, 0.0), None: (1.0, 0.0)}),
    "speed": ("speed_kmh", {"m/s": (3.6, 0.0), "km/h": (1.0, 0.0)}),
    "heading": ("heading_deg", {"deg": (1.0, 0.0), "rad": (57.29577951308232, 0.0)}),
    "battery": ("battery_v", {"V": (1.0, 0.0)}),
    "rssi": ("rssi_dbm", {"dBm": (1.0, 0.0), "dBW": (1.0, 30.0)}),
    "seq": ("seq", {None: (1.0, 0.0), "count": (1.0, 0.0)}),
    "quality": ("quality", {None: (1.0, 0.0), "/": (1.0, 0.0)}),
}
_SENML_INT = frozenset({"seq", "quality"})
_SENML_BOOL = {"blade": "blade_down", "blade_down": "blade_down", "spreader": "spreader"}


@dataclass(slots=True)
class _SenmlBase:
    """The base fields in force (RFC 8428 §4.1): each carries over to the records after it."""

    name: str = ""
    time: float = 0.0
    unit: Any = None
    value: float = 0.0
    sum: float = 0.0

    def update(self, rec: dict[str, Any], i: int) -> float:
        """Take record ``i``'s base fields; return its time, ``bt + t`` (maybe relative)."""
        self.time = _senml_finite(rec, "bt", self.time, i)
        self.value = _senml_finite(rec, "bv", self.value, i)
        self.sum = _senml_finite(rec, "bs", self.sum, i)
        t = self.time + _senml_finite(rec, "t", 0.0, i)
        if not math.isfinite(t):
            raise Rejected(Reason.VALIDATION, f"SenML record {i}: bt + t is not a finite time")
        bn = rec.get("bn", self.name)
        if not isinstance(bn, str):
            raise Rejected(Reason.VALIDATION, f"SenML record {i}: bn is not a string")
        self.name = bn
        self.unit = _senml_unit(rec, "bu", self.unit, f"SenML record {i}")
        return t


def _senml_finite(rec: dict[str, Any], key: str, default: float, i: int) -> float:
    """A base or time field: a JSON number (RFC 8428 §4.2), not a string or boolean."""
    if key not in rec:
        return default
    value = rec[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Rejected(
            Reason.VALIDATION, f"SenML record {i}: {key} is not a number (got {value!r:.40})"
        )
    return float(value)


def _senml_unit(rec: dict[str, Any], key: str, default: Any, where: str) -> Any:
    """``u`` or ``bu``: a unit is a string; an object or list is refused here (it would
    otherwise reach the unit table as an unhashable key)."""
    unit = rec.get(key, default)
    if unit is not None and not isinstance(unit, str):
        raise Rejected(Reason.VALIDATION, f"{where}: {key} is not a unit string (got {unit!r:.40})")
    return unit


def _senml_device_quantity(name: str) -> tuple[str | None, str]:
    """Split ``urn:dev:yukimizu:ST01:depth`` into device ``ST01`` and quantity ``depth``.

    The quantity follows the last ``:`` or ``/``; the device is the segment before it.
    """
    cut = max(name.rfind(":"), name.rfind("/"))
    if cut < 0:
        return None, name
    prefix = name[:cut]
    start = max(prefix.rfind(":"), prefix.rfind("/")) + 1
    return prefix[start:] or None, name[cut + 1 :]


def _senml_bool(rec: dict[str, Any], name: str) -> bool:
    vb = rec.get("vb")
    if not isinstance(vb, bool):
        raise Rejected(Reason.VALIDATION, f"SenML record {name!r}: expected vb (boolean)")
    return vb


def _senml_number(rec: dict[str, Any], base: _SenmlBase, name: str) -> float:
    """The record's sum ``s + bs`` if it has one, else its value ``v + bv``."""
    if "s" in rec:
        raw, offset = rec["s"], base.sum
    else:
        raw, offset = rec.get("v"), base.value
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise Rejected(Reason.VALIDATION, f"SenML record {name!r}: expected numeric v or s")
    return raw + offset


def _senml_store(
    values: dict[str, Any], quantity: str, rec: dict[str, Any], base: _SenmlBase, name: str
) -> None:
    """Put one record's value into its reading under the native field name."""
    if quantity in _SENML_BOOL:
        values[_SENML_BOOL[quantity]] = _senml_bool(rec, name)
    elif quantity in ALARM_FLAGS:
        values.setdefault("alarms", {})[quantity] = _senml_bool(rec, name)
    elif quantity in _SENML_NUMERIC:
        target, units = _SENML_NUMERIC[quantity]
        raw = _senml_number(rec, base, name)
        unit = _senml_unit(rec, "u", base.unit, f"SenML record {name!r}")
        factor, offset = _scale(unit, units, name)
        value = raw * factor + offset
        if not math.isfinite(value):  # v + bv or the unit factor overflowed
            raise Rejected(Reason.VALIDATION, f"SenML record {name!r}: value overflows to {value}")
        # round away binary noise of the unit conversion (m3 → L: 1e-9 L)
        values[target] = round(value) if quantity in _SENML_INT else round(value, 6)
    # anything else is an extra the models do not keep (humidity, firmware, ...)


def decode_senml_doc(doc: list[Any], received_at: float | None = None) -> list[Decoded]:
    """Resolve a SenML pack into one reading per (device, time).

    Names are ``bn + n``; the part after the last ``:`` or ``/`` is the quantity and
    the part before it (if any) names the device. Unknown quantities are ignored,
    as devices commonly report extras (humidity, firmware version, ...).
    """
    if not doc:
        raise Rejected(Reason.VALIDATION, "empty SenML pack")
    now = received_at if received_at is not None else datetime.now(UTC).timestamp()
    base = _SenmlBase()
    groups: dict[tuple[str | None, float], dict[str, Any]] = {}
    for i, rec in enumerate(doc):
        if not isinstance(rec, dict):
            raise Rejected(Reason.VALIDATION, f"SenML record {i} is not an object")
        t = base.update(rec, i)
        name = base.name + str(rec.get("n", ""))
        if not name:
            raise Rejected(Reason.VALIDATION, f"SenML record {i} has no name")
        if t < _SENML_REL_LIMIT:
            t = now + t
        device, quantity = _senml_device_quantity(name)
        _senml_store(groups.setdefault((device, t), {"time": t}), quantity, rec, base, name)
    return [Decoded(v, device=d) for (d, _), v in groups.items()]


def decode_senml(payload: bytes, received_at: float) -> list[Decoded]:
    doc = _json(payload)
    if not isinstance(doc, list):
        raise Rejected(Reason.VALIDATION, "SenML must be a JSON array")
    return decode_senml_doc(doc, received_at)


# --- NMEA 0183 RMC ----------------------------------------------------------------

_KNOTS_TO_KMH = 1.852
_NMEA_ADDRESS = re.compile(r"\$[A-Z]{2}[A-Z]{3}")  # $, talker, sentence type


def _nmea_checksum_ok(sentence: str) -> bool:
    body, star, given = sentence[1:].partition("*")
    if not star:
        return True  # checksum is optional in NMEA 0183
    try:
        return nmea.checksum(body) == int(given[:2], 16)
    except ValueError:
        return False


# NMEA numbers are unsigned decimals; float() alone would also take "1_0", " 1", "nan"
# and "inf" (found by fuzzing: an infinite seconds field raised OverflowError).
_NMEA_DECIMAL = re.compile(r"\d+(?:\.\d*)?")
_NMEA_TIME = re.compile(r"\d{6}(?:\.\d*)?")
_NMEA_DATE = re.compile(r"\d{6}")
_HEMISPHERES = {2: ("N", "S"), 3: ("E", "W")}


def _nmea_number(value: str, what: str) -> float:
    if not _NMEA_DECIMAL.fullmatch(value):
        raise ValueError(f"{what} {value[:20]!r} is not a decimal number")
    return float(value)


def _nmea_coord(value: str, hemi: str, deg_digits: int) -> float:
    """``ddmm.mmmm`` (latitude, 2 degree digits) or ``dddmm.mmmm`` and its hemisphere."""
    what = "latitude" if deg_digits == 2 else "longitude"
    if hemi not in _HEMISPHERES[deg_digits]:
        raise ValueError(
            f"{what} hemisphere {hemi[:5]!r} is not {'/'.join(_HEMISPHERES[deg_digits])}"
        )
    if len(value.partition(".")[0]) != deg_digits + 2:
        raise ValueError(f"{what} {value[:20]!r} is not {'d' * deg_digits}mm.mmmm")
    minutes = _nmea_number(value[deg_digits:], what)
    if minutes >= 60:
        raise ValueError(f"{what} {value[:20]!r} has {minutes} minutes")
    coord = int(value[:deg_digits]) + minutes / 60.0
    return -coord if hemi in ("S", "W") else coord


def _nmea_fields(line: str, n: int) -> list[str]:
    """The comma-separated fields of sentence ``line`` (line ``n``), framing checked."""
    if not line.startswith("$"):
        raise Rejected(Reason.NMEA, f"line {n}: not an NMEA sentence: {line[:40]!r}")
    if not _nmea_checksum_ok(line):
        raise Rejected(Reason.NMEA, f"line {n}: checksum mismatch: {line[:80]!r}")
    f = line.split("*", 1)[0].split(",")
    if len(f) < 2 or not _NMEA_ADDRESS.fullmatch(f[0]):
        raise Rejected(Reason.NMEA, f"line {n}: not an NMEA sentence: {line[:40]!r}")
    return f


def _rmc_values(f: list[str]) -> dict[str, Any]:
    """Time, position and (when given) speed and course of an RMC sentence with a fix."""
    if not _NMEA_TIME.fullmatch(f[1]) or not _NMEA_DATE.fullmatch(f[9]):
        raise ValueError(f"time {f[1][:20]!r} or date {f[9][:10]!r} is not hhmmss.ss / ddmmyy")
    hh, mm, ss = int(f[1][0:2]), int(f[1][2:4]), float(f[1][4:])
    dd, mo, yy = int(f[9][0:2]), int(f[9][2:4]), int(f[9][4:6])
    if ss >= 60:
        raise ValueError(f"second must be in 0..59: {f[1][:20]!r}")
    # rounded as a whole: 59.9999999 s is the next minute, not microsecond 1,000,000
    ts = datetime(2000 + yy, mo, dd, hh, mm, tzinfo=UTC) + timedelta(microseconds=round(ss * 1e6))
    lat = _nmea_coord(f[3], f[4], 2)
    lon = _nmea_coord(f[5], f[6], 3)
    values: dict[str, Any] = {"time": ts, "lat": lat, "lon": lon}
    if f[7]:
        values["speed_kmh"] = _nmea_number(f[7], "speed") * _KNOTS_TO_KMH
    if f[8]:
        values["heading_deg"] = _nmea_number(f[8], "course")
    return values


def _nmea_sentence(f: list[str], n: int, line: str) -> Decoded | Drop:
    """What one sentence gives: a reading, or why it gives none (not RMC, no fix)."""
    if not f[0].endswith("RMC"):
        return Drop.NMEA_OTHER_SENTENCE
    if len(f) < 10:
        raise Rejected(Reason.NMEA, f"line {n}: RMC sentence has {len(f)} fields, need 10+")
    if f[2] != "A":
        return Drop.INVALID_FIX
    try:
        return Decoded(_rmc_values(f))
    except (ValueError, IndexError, OverflowError) as exc:
        raise Rejected(Reason.NMEA, f"line {n}: {exc}: {line[:80]!r}") from None


def decode_nmea(payload: bytes) -> tuple[list[Decoded], list[Drop]]:
    """Decode RMC sentences. Returns readings and drop reasons (invalid fixes etc.)."""
    try:
        text = payload.decode("ascii")
    except UnicodeDecodeError:
        raise Rejected(Reason.UNDECODABLE, "NMEA payload is not ASCII") from None
    out: list[Decoded] = []
    drops: list[Drop] = []
    for n, raw_line in enumerate(text.splitlines(), 1):
        line = raw_line.strip()
        if not line:
            continue
        got = _nmea_sentence(_nmea_fields(line, n), n, line)
        if isinstance(got, Decoded):
            out.append(got)
        else:
            drops.append(got)
    if not out and not drops:
        raise Rejected(Reason.NMEA, "no NMEA sentences in payload")
    return out, drops


# --- LoRaWAN network servers ------------------------------------------------------

# Decoded-object keys accepted besides the native names (common decoder spellings);
# ingest.lorawan_aliases in the config adds a site's own.
LORAWAN_ALIASES = {
    "latitude": "lat",
    "longitude": "lon",
    "temperature": "air_temp_c",
    "battery": "battery_v",
    "volume_l": "register_l",
    "volume_m3": "register_m3",
    "distance": "distance_mm",
}


# Fields the models keep as integers. LoRaWAN codecs run JavaScript, which has only
# floats, and ChirpStack v4 writes every codec number as a float ("seq": 12.0,
# chirpstack/chirpstack#77): an integral float for one of these is converted on purpose.
_INT_FIELDS = frozenset(
    name
    for model in MODEL_BY_KIND.values()
    for name, influx_type in stored_fields(model).items()
    if influx_type == "int"
)


def _lora_values(obj: Any, source: str, aliases: Mapping[str, str] | None) -> dict[str, Any]:
    if not isinstance(obj, dict) or not obj:
        raise Rejected(
            Reason.NO_DECODED_PAYLOAD,
            f"{source} uplink has no decoded object: configure a payload codec for the device",
        )
    values: dict[str, Any] = {}
    for raw_key, value in obj.items():
        key = (aliases or LORAWAN_ALIASES).get(raw_key, raw_key)
        if key in PAYLOAD_FIELDS:
            integral = key in _INT_FIELDS and isinstance(value, float) and value.is_integer()
            values[key] = int(value) if integral else value
        elif key in ALARM_FLAGS:
            # Not filtered to booleans here: a codec sending "leak": 1 is rejected by
            # validation instead of losing the alarm silently.
            values.setdefault("alarms", {})[key] = value
    return _normalise_native(values)


def _best_rssi(gateways: list[Any], *keys: str) -> float | None:
    """The strongest RSSI any gateway heard the uplink with."""
    found: list[float] = []
    for gw in gateways:
        if isinstance(gw, dict):
            for key in keys:
                value = gw.get(key)
                if isinstance(value, int | float) and not isinstance(value, bool):
                    found.append(float(value))
                    break
    return max(found) if found else None


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return None


def _eui_text(value: Any) -> str | None:
    """A DevEUI as hex text: v4 sends hex, ChirpStack v3's JSON marshaler base64."""
    if not isinstance(value, str) or not value:
        return None
    if len(value) == 12 and value.endswith("="):
        try:
            raw = base64.b64decode(value, validate=True)
        except ValueError:
            return value
        return raw.hex() if len(raw) == 8 else value
    return value


def decode_chirpstack(
    payload: bytes, topic_eui: str | None = None, aliases: Mapping[str, str] | None = None
) -> Decoded:
    """ChirpStack ``event/up`` with a JSON marshaler: v4, and v3's ``devEUI`` layout."""
    doc = _json(payload)
    if not isinstance(doc, dict):
        raise Rejected(Reason.INVALID_JSON, "ChirpStack event must be a JSON object")
    info = doc.get("deviceInfo")
    eui = (
        _eui_text(info.get("devEui") if isinstance(info, dict) else None)
        or _eui_text(doc.get("devEUI"))
        or topic_eui
    )
    if eui is None:
        raise Rejected(Reason.VALIDATION, "ChirpStack event without deviceInfo.devEui")
    values = _lora_values(doc.get("object"), "ChirpStack", aliases)
    rx = doc.get("rxInfo")
    gateways = [g for g in rx if isinstance(g, dict)] if isinstance(rx, list) else []
    if "time" not in values:
        t = doc.get("time")
        for gw in gateways:
            t = t or gw.get("gwTime") or gw.get("time") or gw.get("nsTime")
        if t is not None:
            values["time"] = t
    if "rssi_dbm" not in values:
        best = _best_rssi(gateways, "rssi")
        if best is not None:
            values["rssi_dbm"] = best
    # protobuf's JSON mapping omits zero values: a missing fCnt is 0
    return Decoded(values, dev_eui=eui, fcnt=_int_or_none(doc.get("fCnt", 0)))


def decode_ttn(
    payload: bytes, topic_device: str | None, aliases: Mapping[str, str] | None = None
) -> Decoded:
    """The Things Stack v3 uplink message."""
    doc = _json(payload)
    if not isinstance(doc, dict):
        raise Rejected(Reason.INVALID_JSON, "The Things Stack uplink must be a JSON object")
    ids = doc.get("end_device_ids")
    up = doc.get("uplink_message")
    if not isinstance(ids, dict) or not isinstance(up, dict):
        raise Rejected(Reason.VALIDATION, "TTS uplink without end_device_ids / uplink_message")
    eui = ids.get("dev_eui")
    device = ids.get("device_id") or topic_device
    values = _lora_values(up.get("decoded_payload"), "The Things Stack", aliases)
    if "time" not in values:
        t = up.get("received_at") or doc.get("received_at")
        if t is not None:
            values["time"] = t
    if "rssi_dbm" not in values:
        meta = up.get("rx_metadata")
        if isinstance(meta, list):
            best = _best_rssi(meta, "rssi", "channel_rssi")
            if best is not None:
                values["rssi_dbm"] = best
    # TTS marshals protobuf to JSON and omits zero values: a missing f_cnt is 0.
    return Decoded(
        values,
        device=device if isinstance(device, str) else None,
        dev_eui=eui if isinstance(eui, str) else None,
        fcnt=_int_or_none(up.get("f_cnt", 0)),
    )


def payload_preview(payload: bytes, limit: int = 80) -> str:
    """First bytes of a payload for a log line: text if printable, base64 otherwise."""
    head = payload[:limit]
    try:
        text = head.decode("utf-8")
        if text.isprintable():
            return text + ("…" if len(payload) > limit else "")
    except UnicodeDecodeError:
        pass
    return "base64:" + base64.b64encode(head).decode("ascii")
