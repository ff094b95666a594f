"""decode → validate → enrich → encode, for one message at a time.

:class:`Processor` is pure apart from the LoRaWAN frame-counter memory: it takes a
:class:`Message` and returns a :class:`Result` (line-protocol lines, a dead-letter
reason, drop reasons). It never raises for bad input and knows nothing of MQTT or
InfluxDB connections, so it is unit-tested without either.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from core.message import Message
from ingest.decode import (
    LORAWAN_ALIASES,
    Decoded,
    Rejected,
    Route,
    decode_chirpstack,
    decode_native,
    decode_nmea,
    decode_senml,
    decode_ttn,
    route_topic,
)
from ingest.lineproto import encode_fields, series_key
from ingest.reasons import Drop, Reason
from sensors.models import (
    MODEL_BY_KIND,
    Kind,
    MeterReading,
    PlowPosition,
    Reading,
    SnowReading,
    corrected_distance_mm,
    stored_values,
)
from sensors.registry import Meter, Plow, Registry, Station, normalise_dev_eui
from sensors.schema import LAG_FIELD, MEASUREMENT_BY_KIND

log = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_OLDEST_MS = 946_684_800_000  # 2000-01-01T00:00:00Z
# A bare-ground ultrasonic reading is ±3 cm (docs/domain.md#sensor-noise): small
# negatives are noise.
_NEGATIVE_DEPTH_TOLERANCE_CM = 5.0


@dataclass(slots=True)
class Result:
    lines: list[str] = field(default_factory=list)
    reason: Reason | None = None  # dead-letter category, None when the message was fine
    detail: str = ""
    drops: list[Drop] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Limits:
    topic_prefix: str = "yukimizu"
    max_payload_bytes: int = 64 * 1024
    max_future_s: float = 300.0
    lat_min: float = -90.0
    lat_max: float = 90.0
    lon_min: float = -180.0
    lon_max: float = 180.0
    lorawan_aliases: Mapping[str, str] = field(default_factory=lambda: dict(LORAWAN_ALIASES))


# pydantic's "Input should be a valid number (got '12')" leaves a reader wondering
# what is wrong with 12: name the JSON type that was sent instead.
_TYPE_ERRORS = frozenset({"float_type", "int_type", "bool_type", "int_from_float"})


def _sent_as(value: object) -> str:
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    return f"a {type(value).__name__}"


def _format_validation(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "reading"
        got = err.get("input")
        msg = err["msg"]
        if err["type"] in _TYPE_ERRORS:
            msg += f", not {_sent_as(got)}"
        shown = "" if isinstance(got, dict) else f" (got {got!r:.40})"
        parts.append(f"{loc}: {msg}{shown}")
    return "; ".join(parts)


def device_tags(dev: Station | Meter | Plow) -> dict[str, str | None]:
    """The InfluxDB tags of a device's series (see sensors.schema.TAGS)."""
    if isinstance(dev, Plow):
        return {"device": dev.id, "contractor": dev.contractor}
    return {"device": dev.id, "district": dev.district}


class Processor:
    """Turns messages into line protocol using the device registry."""

    def __init__(self, registry: Registry, limits: Limits) -> None:
        self.registry = registry
        self.limits = limits
        self._last_fcnt: dict[str, int] = {}
        self._keys: dict[str, str] = {}  # device id → cached series key
        self._max_future_ms = int(limits.max_future_s * 1000)

    def set_registry(self, registry: Registry) -> None:
        """Use a new registry from the next message on (e.g. after the CSVs were edited)."""
        self.registry = registry
        self._keys = {}  # districts and contractors may have changed

    def process(self, msg: Message) -> Result:
        """Never raises: a bug on one odd payload must not stop the pipeline."""
        try:
            return self._process(msg)
        except Exception as exc:
            log.exception("internal error on a message on %s", msg.topic)
            return Result(reason=Reason.INTERNAL_ERROR, detail=f"{type(exc).__name__}: {exc}")

    def _process(self, msg: Message) -> Result:
        result = Result()
        if len(msg.payload) > self.limits.max_payload_bytes:
            result.reason = Reason.TOO_LARGE
            result.detail = (
                f"payload is {len(msg.payload)} bytes, limit {self.limits.max_payload_bytes}"
            )
            return result
        try:
            route = route_topic(msg.topic, self.limits.topic_prefix)
            items = self._decode(route, msg, result)
        except Rejected as exc:
            result.reason, result.detail = exc.reason, exc.detail
            return result
        errors: list[tuple[Reason, str]] = []
        for i, item in enumerate(items):
            try:
                line = self._reading_line(route, item, msg.received_at, result)
            except Rejected as exc:
                where = f"reading {i}: " if len(items) > 1 else ""
                errors.append((exc.reason, where + exc.detail))
                continue
            if line is not None:
                result.lines.append(line)
        if errors:
            result.reason = errors[0][0]
            result.detail = "; ".join(d for _, d in errors)
            if len(items) > 1:
                result.detail += f" ({len(result.lines)} of {len(items)} readings written)"
        return result

    def _decode(self, route: Route, msg: Message, result: Result) -> list[Decoded]:
        aliases = self.limits.lorawan_aliases
        if route.family == "chirpstack":
            return [decode_chirpstack(msg.payload, route.device, aliases)]
        if route.family == "ttn":
            return [decode_ttn(msg.payload, route.device, aliases)]
        head = msg.payload.lstrip()[:1]
        if head == b"{":
            return decode_native(msg.payload)
        if head == b"[":
            return decode_senml(msg.payload, msg.received_at)
        if head == b"$":
            if route.kind != "plow":
                raise Rejected(
                    Reason.NMEA, f"NMEA sentences come from plows, not {route.kind} devices"
                )
            items, drops = decode_nmea(msg.payload)
            result.drops.extend(drops)
            return items
        if not msg.payload.strip():
            raise Rejected(Reason.EMPTY, "empty payload")
        raise Rejected(Reason.UNDECODABLE, "payload is not JSON, SenML or NMEA text")

    def _resolve(self, route: Route, item: Decoded) -> tuple[Kind, Station | Meter | Plow]:
        reg = self.registry
        if route.family == "native":
            assert route.device is not None and route.kind is not None
            if item.device is not None and item.device != route.device:
                raise Rejected(
                    Reason.VALIDATION,
                    f"payload names device {item.device!r} but the topic says {route.device!r}",
                )
            found = reg.lookup(route.device)
            if found is None:
                raise Rejected(
                    Reason.UNKNOWN_DEVICE, f"device {route.device!r} is not in the registry"
                )
            if found[0] != route.kind:
                raise Rejected(
                    Reason.WRONG_KIND,
                    f"device {route.device!r} is a {found[0]} device, topic says {route.kind}",
                )
            return found
        found = None
        if item.dev_eui:
            found = reg.by_dev_eui(item.dev_eui)
        if found is None and item.device:
            found = reg.lookup(item.device)
        if found is None:
            who = item.dev_eui or item.device
            raise Rejected(Reason.UNKNOWN_DEVICE, f"LoRaWAN device {who!r} is not in the registry")
        return found

    def _reading_line(
        self, route: Route, item: Decoded, received_at: float, result: Result
    ) -> str | None:
        """One decoded reading → one line of line protocol (None: deliberately dropped)."""
        kind, dev = self._resolve(route, item)
        if item.fcnt is not None and self._is_retransmission(item):
            result.drops.append(Drop.LORAWAN_RETRANSMISSION)
            return None
        reading = _validate(kind, dev, item.values, received_at)
        time_ms = self._checked_time_ms(reading, received_at)
        fields = stored_values(reading)
        self._apply_device_rules(reading, dev, fields)
        # Arrival delay, last: the rules see a daily upload only once it has arrived
        # (docs/rules.md#backtest); it also shows how late devices report.
        fields[LAG_FIELD] = max(0.0, round(received_at - time_ms / 1000, 1))
        return encode_fields(
            MEASUREMENT_BY_KIND[kind], self._series_key(kind, dev), fields, time_ms
        )

    def _is_retransmission(self, item: Decoded) -> bool:
        """Same frame counter as the device's previous uplink (docs/domain.md#frame-counters)."""
        if item.fcnt is None or not item.dev_eui:  # not LoRaWAN
            return False
        eui = normalise_dev_eui(item.dev_eui)
        if self._last_fcnt.get(eui) == item.fcnt:
            return True
        # A lower counter means the device rejoined and restarted at 0: accept it.
        self._last_fcnt[eui] = item.fcnt
        return False

    def _checked_time_ms(self, reading: Reading, received_at: float) -> int:
        """The reading's time in epoch ms, rejected when implausibly late or early."""
        time_ms = (reading.time - _EPOCH) // _MS
        if time_ms > received_at * 1000 + self._max_future_ms:
            now = datetime.fromtimestamp(received_at, UTC)
            raise Rejected(
                Reason.FUTURE_TIMESTAMP,
                f"time {reading.time.isoformat()} is more than "
                f"{self.limits.max_future_s:.0f} s ahead of ingest's clock {now.isoformat()}",
            )
        if time_ms < _OLDEST_MS:
            raise Rejected(
                Reason.BAD_TIMESTAMP,
                f"time {reading.time.isoformat()} is before 2000: device clock not set?",
            )
        return time_ms

    def _apply_device_rules(
        self, reading: Reading, dev: Station | Meter | Plow, fields: dict[str, object]
    ) -> None:
        """Checks and derived values that need the registry entry or the site's limits."""
        if isinstance(reading, SnowReading):
            assert isinstance(dev, Station)
            fields["depth_cm"] = _snow_depth_cm(reading, dev)
        elif isinstance(reading, MeterReading):
            assert isinstance(dev, Meter)
            _check_register(reading, dev)
        else:
            self._check_area(reading)

    def _check_area(self, fix: PlowPosition) -> None:
        lim = self.limits
        if not (lim.lat_min <= fix.lat <= lim.lat_max and lim.lon_min <= fix.lon <= lim.lon_max):
            raise Rejected(
                Reason.OUT_OF_AREA,
                f"position {fix.lat:.5f},{fix.lon:.5f} is outside the town's bounding box",
            )

    def _series_key(self, kind: Kind, dev: Station | Meter | Plow) -> str:
        key = self._keys.get(dev.id)
        if key is None:
            key = self._keys[dev.id] = series_key(MEASUREMENT_BY_KIND[kind], device_tags(dev))
        return key


def _validate(
    kind: Kind, dev: Station | Meter | Plow, values: dict[str, Any], received_at: float
) -> Reading:
    """The decoded values as a validated reading of the device's kind."""
    values["device"] = dev.id
    values.setdefault("time", received_at)
    if "register_m3" in values:  # left by the decoder because it is not a number
        raise Rejected(
            Reason.VALIDATION, f"register_m3: expected a number (got {values['register_m3']!r:.40})"
        )
    if "register" in values and isinstance(dev, Meter):
        values["register_l"] = _register_litres(values.pop("register"), dev)
    try:
        return MODEL_BY_KIND[kind].model_validate(values)
    except ValidationError as exc:
        raise Rejected(Reason.VALIDATION, _format_validation(exc)) from None


def _register_litres(raw: object, meter: Meter) -> float:
    """A register in the meter's own unit (``register``) in litres."""
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        return round(raw * meter.litres_per_unit, 3)
    raise Rejected(Reason.VALIDATION, f"register: expected a number (got {raw!r:.40})")


def _check_register(reading: MeterReading, meter: Meter) -> None:
    if reading.register_l >= meter.rollover_l:
        raise Rejected(
            Reason.VALIDATION,
            f"register_l: {reading.register_l} exceeds the meter's "
            f"{meter.register_digits}-digit register ({meter.rollover_l:.0f} L)",
        )


def _snow_depth_cm(reading: SnowReading, station: Station) -> float:
    """The depth as sent, or derived from the raw distance and the station's mount height."""
    if reading.depth_cm is not None:
        return reading.depth_cm
    assert reading.distance_mm is not None
    dist = reading.distance_mm
    # Only sound depends on air temperature; a laser's distance is already right.
    if reading.air_temp_c is not None and station.sensor_type == "ultrasonic":
        dist = corrected_distance_mm(dist, reading.air_temp_c)
    depth = station.mount_height_cm - dist / 10.0
    if depth < 0:
        if depth < -_NEGATIVE_DEPTH_TOLERANCE_CM:
            raise Rejected(
                Reason.VALIDATION,
                f"distance_mm {reading.distance_mm} is more than the station's mount "
                f"height {station.mount_height_cm} cm: sensor misread or wrong mount "
                f"height in the registry",
            )
        depth = 0.0
    if depth > 600:
        raise Rejected(Reason.VALIDATION, f"derived depth {depth:.1f} cm is over 600 cm")
    return round(depth, 1)
