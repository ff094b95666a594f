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
from sensors.models import (
    MODEL_BY_KIND,
    Kind,
    MeterReading,
    PlowPosition,
    SnowReading,
    corrected_distance_mm,
)
from sensors.registry import Meter, Plow, Registry, Station, normalise_dev_eui
from sensors.schema import MEASUREMENT_BY_KIND

log = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_OLDEST_MS = 946_684_800_000  # 2000-01-01T00:00:00Z
# A bare-ground ultrasonic reading is ±3 cm (DOMAIN.md): small negatives are noise.
_NEGATIVE_DEPTH_TOLERANCE_CM = 5.0


@dataclass(slots=True)
class Result:
    lines: list[str] = field(default_factory=list)
    reason: str | None = None  # dead-letter category, None when the message was fine
    detail: str = ""
    drops: list[str] = field(default_factory=list)


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


def _format_validation(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "reading"
        got = err.get("input")
        shown = "" if isinstance(got, dict) else f" (got {got!r:.40})"
        parts.append(f"{loc}: {err['msg']}{shown}")
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
            return Result(reason="internal_error", detail=f"{type(exc).__name__}: {exc}")

    def _process(self, msg: Message) -> Result:
        result = Result()
        if len(msg.payload) > self.limits.max_payload_bytes:
            result.reason = "too_large"
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
        errors: list[tuple[str, str]] = []
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
                raise Rejected("nmea", f"NMEA sentences come from plows, not {route.kind} devices")
            items, drops = decode_nmea(msg.payload)
            result.drops.extend(drops)
            return items
        if not msg.payload.strip():
            raise Rejected("empty", "empty payload")
        raise Rejected("undecodable", "payload is not JSON, SenML or NMEA text")

    def _resolve(self, route: Route, item: Decoded) -> tuple[Kind, Station | Meter | Plow]:
        reg = self.registry
        if route.family == "native":
            assert route.device is not None and route.kind is not None
            if item.device is not None and item.device != route.device:
                raise Rejected(
                    "validation",
                    f"payload names device {item.device!r} but the topic says {route.device!r}",
                )
            found = reg.lookup(route.device)
            if found is None:
                raise Rejected("unknown_device", f"device {route.device!r} is not in the registry")
            if found[0] != route.kind:
                raise Rejected(
                    "wrong_kind",
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
            raise Rejected("unknown_device", f"LoRaWAN device {who!r} is not in the registry")
        return found

    def _reading_line(
        self, route: Route, item: Decoded, received_at: float, result: Result
    ) -> str | None:
        kind, dev = self._resolve(route, item)
        if item.fcnt is not None and item.dev_eui:
            eui = normalise_dev_eui(item.dev_eui)
            last = self._last_fcnt.get(eui)
            if last is not None and item.fcnt == last:
                # LoRaWAN retransmission of the same frame: already handled.
                result.drops.append("lorawan_retransmission")
                return None
            # A lower counter means the device rejoined and restarted at 0: accept it.
            self._last_fcnt[eui] = item.fcnt
        values = item.values
        values["device"] = dev.id
        values.setdefault("time", received_at)
        if kind == "water" and "register" in values:
            assert isinstance(dev, Meter)
            raw = values.pop("register")
            if isinstance(raw, int | float) and not isinstance(raw, bool):
                values["register_l"] = round(raw * dev.litres_per_unit, 3)
            else:
                raise Rejected("validation", f"register: expected a number (got {raw!r:.40})")
        try:
            reading = MODEL_BY_KIND[kind].model_validate(values)
        except ValidationError as exc:
            raise Rejected("validation", _format_validation(exc)) from None
        time_ms = (reading.time - _EPOCH) // _MS
        if time_ms > received_at * 1000 + self._max_future_ms:
            now = datetime.fromtimestamp(received_at, UTC)
            raise Rejected(
                "future_timestamp",
                f"time {reading.time.isoformat()} is more than "
                f"{self.limits.max_future_s:.0f} s ahead of ingest's clock {now.isoformat()}",
            )
        if time_ms < _OLDEST_MS:
            raise Rejected(
                "bad_timestamp",
                f"time {reading.time.isoformat()} is before 2000: device clock not set?",
            )
        fields: dict[str, object] = {
            "seq": reading.seq,
            "battery_v": reading.battery_v,
            "rssi_dbm": reading.rssi_dbm,
        }
        if reading.alarms is not None:
            for flag, value in reading.alarms:
                fields[f"alarm_{flag}"] = value
        if isinstance(reading, SnowReading):
            assert isinstance(dev, Station)
            fields.update(self._snow_fields(reading, dev))
        elif isinstance(reading, MeterReading):
            assert isinstance(dev, Meter)
            if reading.register_l >= dev.rollover_l:
                raise Rejected(
                    "validation",
                    f"register_l: {reading.register_l} exceeds the meter's "
                    f"{dev.register_digits}-digit register ({dev.rollover_l:.0f} L)",
                )
            fields["register_l"] = reading.register_l
            fields["flow_lph"] = reading.flow_lph
        else:
            assert isinstance(reading, PlowPosition) and isinstance(dev, Plow)
            lim = self.limits
            if not (
                lim.lat_min <= reading.lat <= lim.lat_max
                and lim.lon_min <= reading.lon <= lim.lon_max
            ):
                raise Rejected(
                    "out_of_area",
                    f"position {reading.lat:.5f},{reading.lon:.5f} is outside the town's "
                    f"bounding box",
                )
            fields.update(
                lat=reading.lat,
                lon=reading.lon,
                speed_kmh=reading.speed_kmh,
                heading_deg=reading.heading_deg,
                blade_down=reading.blade_down,
                spreader=reading.spreader,
            )
        # Arrival delay, last: the rules see a daily upload only once it has arrived
        # (docs/rules.md#backtest); it also shows how late devices report.
        fields["lag_s"] = max(0.0, round(received_at - time_ms / 1000, 1))
        measurement = MEASUREMENT_BY_KIND[kind]
        key = self._keys.get(dev.id)
        if key is None:
            key = self._keys[dev.id] = series_key(measurement, device_tags(dev))
        return encode_fields(measurement, key, fields, time_ms)

    @staticmethod
    def _snow_fields(reading: SnowReading, station: Station) -> dict[str, object]:
        depth = reading.depth_cm
        if depth is None:
            assert reading.distance_mm is not None
            dist = reading.distance_mm
            # Only sound depends on air temperature; a laser's distance is already right.
            if reading.air_temp_c is not None and station.sensor_type == "ultrasonic":
                dist = corrected_distance_mm(dist, reading.air_temp_c)
            depth = station.mount_height_cm - dist / 10.0
            if depth < 0:
                if depth < -_NEGATIVE_DEPTH_TOLERANCE_CM:
                    raise Rejected(
                        "validation",
                        f"distance_mm {reading.distance_mm} is more than the station's mount "
                        f"height {station.mount_height_cm} cm: sensor misread or wrong mount "
                        f"height in the registry",
                    )
                depth = 0.0
            if depth > 600:
                raise Rejected("validation", f"derived depth {depth:.1f} cm is over 600 cm")
            depth = round(depth, 1)
        return {
            "depth_cm": depth,
            "distance_mm": reading.distance_mm,
            "air_temp_c": reading.air_temp_c,
            "quality": reading.quality,
        }
