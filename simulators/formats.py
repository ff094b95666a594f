"""What goes on the wire: device readings → (topic, payload) in every format ingest takes.

A reading is a plain dict in the native field names of :mod:`sensors.models` with
``time`` as Unix seconds; meters carry ``register`` in the meter's own unit (L or m³)
and flags under ``alarms``. One encoder object per device keeps what a real device
or its network server keeps between messages (LoRaWAN frame counter, device address).

Formats (the topic scheme is the one :mod:`ingest.decode` routes):

* ``native``: ``{prefix}/{kind}/{device}`` JSON; a meter that logs hourly and uploads
  once a day sends the native batch form ``{"device": ..., "readings": [...]}``.
* ``senml``: RFC 8428 packs on the native topics (``bn`` = ``urn:dev:yukimizu:{id}:``,
  absolute ``bt``, the register as a sum ``s``; ``mm``/``cm``/``km/h`` are RFC 8798
  secondary units).
* ``chirpstack`` / ``ttn``: ChirpStack v4 ``event/up`` / The Things Stack v3 uplinks
  for devices with a DevEUI; a daily meter batch becomes one uplink per logged value,
  two seconds apart, as a LoRaWAN meter has to send it. ``data``/``frm_payload`` is the
  binary frame of a small sample codec (below) and ``object``/``decoded_payload`` what
  that codec decodes to.
* ``nmea``: plows send one ``$GPRMC`` sentence per fix (invalid fixes with status V).
  RMC has no blade input: the blade state is lost in this format.

Devices a format does not fit publish native JSON instead (see :func:`fallback_notes`).
"""

from __future__ import annotations

import base64
import math
import struct
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol, get_args

import orjson

from core import nmea
from sensors.registry import Meter, Plow, Station
from simulators.seeding import rng_for
from simulators.timeutil import iso, iso_ms

__all__ = [
    "WIRE_FORMATS",
    "DeviceWire",
    "Values",
    "WireFormat",
    "Wired",
    "device_wire",
    "fallback_notes",
    "wire_family",
]

WireFormat = Literal["native", "senml", "chirpstack", "ttn", "nmea"]
WIRE_FORMATS: Final[tuple[WireFormat, ...]] = get_args(WireFormat)
Family = Literal["native", "senml", "chirpstack", "ttn", "nmea"]
Kind = Literal["snow", "water", "plow"]
Device = Station | Meter | Plow
Values = dict[str, Any]
# (scenario time the message is sent, topic, payload, readings it carries; a LoRaWAN
# retransmission and an invalid GPS fix carry none)
Wired = tuple[int, str, bytes, int]

_OPT: Final = orjson.OPT_SORT_KEYS
_dumps = orjson.dumps

# Frame spacing of a LoRaWAN meter sending its daily log, and a retransmission's delay.
LORA_BATCH_SPACING_S: Final = 2
LORA_RETRANSMIT_DELAY_S: Final = 1
# A meter's backlog goes out in messages of at most two days of hourly values, one a
# second, so that a long outage never exceeds ingest's payload limit (64 KiB).
MAX_BATCH_READINGS: Final = 48


def _chunks(t: int, readings: Sequence[Values]) -> list[tuple[int, Sequence[Values]]]:
    return [
        (t + i // MAX_BATCH_READINGS, readings[i : i + MAX_BATCH_READINGS])
        for i in range(0, len(readings), MAX_BATCH_READINGS)
    ]


class DeviceWire(Protocol):
    family: Family

    def encode(self, t: int, readings: Sequence[Values]) -> list[Wired]:
        """Messages for readings sent at time t (several readings: a logged batch)."""
        ...

    def invalid_fix(self, t: int) -> list[Wired]:
        """What a GPS logger sends without a fix (nothing, except in NMEA)."""
        ...

    def rejoin(self) -> None:
        """The device was replaced or rebooted: LoRaWAN session and counters restart."""
        ...


def wire_family(fmt: WireFormat, kind: Kind, device: Device) -> Family:
    """The format this device really uses when the run asks for ``fmt``."""
    if fmt in ("chirpstack", "ttn"):
        return fmt if device.dev_eui else "native"
    if fmt == "nmea":
        return "nmea" if kind == "plow" else "native"
    return fmt


def fallback_notes(fmt: WireFormat, devices: Sequence[tuple[Kind, Device]]) -> list[str]:
    """Human-readable notes on devices that cannot use ``fmt`` and publish native JSON."""
    fallen = [d.id for k, d in devices if wire_family(fmt, k, d) != fmt]
    notes = []
    if fallen:
        why = "have no DevEUI" if fmt in ("chirpstack", "ttn") else "are not GPS loggers"
        notes.append(
            f"format {fmt}: {len(fallen)} devices {why} and publish native JSON: "
            + ", ".join(fallen)
        )
    if fmt == "nmea":
        notes.append("format nmea: RMC sentences carry no blade state (blade_down is not sent)")
    return notes


def device_wire(
    fmt: WireFormat,
    kind: Kind,
    device: Device,
    *,
    seed: int,
    topic_prefix: str = "yukimizu",
    lorawan_prefix: str = "",
    retransmit_rate: float = 0.0,
) -> DeviceWire:
    """The encoder for one device in the run's format (or its native fallback)."""
    family = wire_family(fmt, kind, device)
    if family == "native":
        return NativeWire(kind, device, topic_prefix)
    if family == "senml":
        return SenmlWire(kind, device, topic_prefix)
    if family == "nmea":
        return NmeaWire(device, topic_prefix)
    return LoraWire(
        family, kind, device, seed=seed, prefix=lorawan_prefix, retransmit_rate=retransmit_rate
    )


def _is_m3(device: Device) -> bool:
    return isinstance(device, Meter) and device.register_unit == "m3"


# --------------------------------------------------------------------------- native


class NativeWire:
    family: Family = "native"

    def __init__(self, kind: Kind, device: Device, prefix: str) -> None:
        self.device = device.id
        self.topic = f"{prefix}/{kind}/{device.id}"
        self.register_key = "register_m3" if _is_m3(device) else "register_l"

    def _doc(self, r: Values) -> Values:
        doc = dict(r)
        doc["time"] = iso(r["time"])
        if "register" in doc:
            doc[self.register_key] = doc.pop("register")
        return doc

    def encode(self, t: int, readings: Sequence[Values]) -> list[Wired]:
        if len(readings) > MAX_BATCH_READINGS:
            return [w for tt, part in _chunks(t, readings) for w in self.encode(tt, part)]
        if len(readings) == 1:
            doc = self._doc(readings[0])
            doc["device"] = self.device
        else:
            items = [self._doc(r) for r in readings]
            doc = {"device": self.device, "readings": items}
            # Fields equal in every reading (the battery at upload time) go up once.
            battery = {r.get("battery_v") for r in readings}
            if len(battery) == 1 and None not in battery:
                doc["battery_v"] = battery.pop()
                for item in items:
                    del item["battery_v"]
        return [(t, self.topic, _dumps(doc, option=_OPT), len(readings))]

    def invalid_fix(self, t: int) -> list[Wired]:
        return []

    def rejoin(self) -> None:
        return None


# --------------------------------------------------------------------------- SenML

# native field → (SenML name, unit, value key)
_SENML: Final[dict[str, tuple[str, str | None, str]]] = {
    "distance_mm": ("distance", "mm", "v"),
    "depth_cm": ("depth", "cm", "v"),
    "air_temp_c": ("temperature", "Cel", "v"),
    "quality": ("quality", None, "v"),
    "battery_v": ("battery", "V", "v"),
    "seq": ("seq", None, "v"),
    "lat": ("lat", "lat", "v"),
    "lon": ("lon", "lon", "v"),
    "speed_kmh": ("speed", "km/h", "v"),
    "heading_deg": ("heading", "deg", "v"),
    "blade_down": ("blade_down", None, "vb"),
}


class SenmlWire:
    family: Family = "senml"

    def __init__(self, kind: Kind, device: Device, prefix: str) -> None:
        self.topic = f"{prefix}/{kind}/{device.id}"
        self.bn = f"urn:dev:yukimizu:{device.id}:"
        self.register_unit = "m3" if _is_m3(device) else "l"

    def encode(self, t: int, readings: Sequence[Values]) -> list[Wired]:
        if len(readings) > MAX_BATCH_READINGS:
            return [w for tt, part in _chunks(t, readings) for w in self.encode(tt, part)]
        bt = readings[0]["time"]
        pack: list[Values] = []
        for r in readings:
            dt = r["time"] - bt
            for key, value in r.items():
                if key == "time" or value is None:
                    continue
                if key == "alarms":
                    for flag, on in value.items():
                        pack.append({"n": flag, "vb": on})
                        if dt:
                            pack[-1]["t"] = dt
                    continue
                if key == "register":
                    rec: Values = {"n": "register", "u": self.register_unit, "s": value}
                else:
                    name, unit, vkey = _SENML[key]
                    rec = {"n": name, vkey: value}
                    if unit:
                        rec["u"] = unit
                if dt:
                    rec["t"] = dt
                pack.append(rec)
        pack[0]["bn"] = self.bn
        pack[0]["bt"] = bt
        return [(t, self.topic, _dumps(pack, option=_OPT), len(readings))]

    def invalid_fix(self, t: int) -> list[Wired]:
        return []

    def rejoin(self) -> None:
        return None


# --------------------------------------------------------------------------- NMEA


def _nmea_angle(value: float, deg_digits: int) -> str:
    # ddmm.mmmm: whole ten-thousandths of a minute, carried so 59.99995' never shows as 60.
    units = round(abs(value) * 600_000)
    deg, rem = divmod(units, 600_000)
    return f"{deg:0{deg_digits}d}{rem // 10_000:02d}.{rem % 10_000:04d}"


class NmeaWire:
    family: Family = "nmea"

    def __init__(self, device: Device, prefix: str) -> None:
        self.topic = f"{prefix}/plow/{device.id}"

    @staticmethod
    def _clock(t: int) -> tuple[str, str]:
        stamp = iso(t)  # YYYY-MM-DDTHH:MM:SSZ
        hms = f"{stamp[11:13]}{stamp[14:16]}{stamp[17:19]}.00"
        dmy = f"{stamp[8:10]}{stamp[5:7]}{stamp[2:4]}"
        return hms, dmy

    @staticmethod
    def _sentence(body: str) -> bytes:
        return f"{nmea.sentence(body)}\r\n".encode("ascii")

    def encode(self, t: int, readings: Sequence[Values]) -> list[Wired]:
        out = []
        for r in readings:
            hms, dmy = self._clock(r["time"])
            lat, lon = r["lat"], r["lon"]
            body = (
                f"GPRMC,{hms},A,{_nmea_angle(lat, 2)},{'N' if lat >= 0 else 'S'},"
                f"{_nmea_angle(lon, 3)},{'E' if lon >= 0 else 'W'},"
                f"{r['speed_kmh'] / 1.852:.1f},{r['heading_deg']:.1f},{dmy},,,A"
            )
            out.append((t, self.topic, self._sentence(body), 1))
        return out

    def invalid_fix(self, t: int) -> list[Wired]:
        hms, dmy = self._clock(t)
        return [(t, self.topic, self._sentence(f"GPRMC,{hms},V,,,,,,,{dmy},,,N"), 0)]

    def rejoin(self) -> None:
        return None


# --------------------------------------------------------------------------- LoRaWAN

# Two town gateways: (EUI, TTS gateway id, lat, lon, altitude m).
GATEWAYS: Final = (
    ("E45F01FFFE6A1B01", "yakuba-roof", 38.37975, 140.20060, 18),
    ("E45F01FFFE6A1B02", "ueno-school", 38.38810, 140.20940, 14),
)
AS923_CHANNELS_HZ: Final = (
    923_200_000, 923_400_000, 922_000_000, 922_200_000,
    922_400_000, 922_600_000, 922_800_000, 923_000_000,
)  # fmt: skip
AIRTIME_S: Final = {7: "0.061696s", 8: "0.113152s", 9: "0.205824s", 10: "0.370688s"}
TTS_APPLICATION: Final = "yukimizu-town"
_NS: Final = uuid.UUID("6f0f1e7c-9b59-4a8e-8d0e-7a6b7973756d")
CHIRPSTACK_TENANT: Final = str(uuid.uuid5(_NS, "tenant"))
CHIRPSTACK_APPLICATION: Final = str(uuid.uuid5(_NS, "application"))
_PROFILES: Final = {
    "snow": ("snow-depth", str(uuid.uuid5(_NS, "profile/snow"))),
    "water": ("water-meter", str(uuid.uuid5(_NS, "profile/water"))),
    "plow": ("plow-gps", str(uuid.uuid5(_NS, "profile/plow"))),
}
_PORTS: Final = {"snow": 10, "water": 20, "plow": 30}
_CROCKFORD: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def _flags(alarms: dict[str, bool]) -> int:
    bits = 0
    for i, name in enumerate(("leak", "burst", "reverse", "tamper", "dry", "low_battery")):
        if alarms.get(name):
            bits |= 1 << i
    return bits


def frame(kind: Kind, r: Values, litres_per_unit: int = 1) -> bytes:
    """The sample codec's binary frame (big-endian) for one reading.

    snow (fPort 10): flags u8 (bit0 depth not distance, bit5 low battery), seq u16,
    distance mm or depth mm u16, air temperature 0.1 °C i16, quality u8,
    battery (V − 2) × 100 u8. water (fPort 20): time u32, register L u32, flags u8
    (bit0 leak … bit5 low battery), seq u16, battery u8. plow (fPort 30): lat, lon
    1e-6° i32, speed 0.1 km/h u16, heading 0.1° u16, flags u8 (bit0 blade down).
    """
    if kind == "snow":
        depth = r.get("depth_cm")
        value = round(depth * 10) if depth is not None else round(r["distance_mm"])
        flags = (1 if depth is not None else 0) | (_flags(r.get("alarms", {})) & 32)
        return struct.pack(
            ">BHHhBB",
            flags,
            r["seq"] & 0xFFFF,
            value,
            round(r["air_temp_c"] * 10),
            r["quality"],
            max(0, min(255, round((r["battery_v"] - 2) * 100))),
        )
    if kind == "water":
        return struct.pack(
            ">IIBHB",
            r["time"],
            round(r["register"] * litres_per_unit) & 0xFFFFFFFF,
            _flags(r.get("alarms", {})),
            r["seq"] & 0xFFFF,
            max(0, min(255, round((r["battery_v"] - 2) * 100))),
        )
    return struct.pack(
        ">iiHHB",
        round(r["lat"] * 1e6),
        round(r["lon"] * 1e6),
        round(r["speed_kmh"] * 10),
        round(r["heading_deg"] * 10) % 3600,
        1 if r.get("blade_down") else 0,
    )


def _distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    dy = (lat2 - lat1) * 111_195.0
    dx = (lon2 - lon1) * 111_195.0 * math.cos(math.radians(lat1))
    return math.hypot(dx, dy)


@dataclass(frozen=True, slots=True)
class _Uplink:
    """One LoRaWAN uplink as the gateways heard it: what both network servers report."""

    t: int
    ms: int  # milliseconds past t at which the gateways heard it
    when: str  # t + ms, ISO 8601
    sf: int  # spreading factor
    heard: list[tuple[int, int, float]]  # (gateway index, rssi, snr)
    freq: int  # channel, Hz
    data: str  # the binary frame, base64
    obj: Values  # what the codec decodes the frame to


class LoraWire:
    """A LoRaWAN end device as its network server publishes it (ChirpStack v4 or TTS v3)."""

    def __init__(
        self,
        family: Literal["chirpstack", "ttn"],
        kind: Kind,
        device: Device,
        *,
        seed: int,
        prefix: str,
        retransmit_rate: float,
    ) -> None:
        assert device.dev_eui is not None
        self.family: Family = family
        self.lora_family = family
        self.kind = kind
        self.device = device
        self.eui = device.dev_eui.lower()
        self.rng = rng_for(seed, "radio", device.id)
        self.retransmit_rate = retransmit_rate
        self.litres_per_unit = device.litres_per_unit if isinstance(device, Meter) else 1
        self.position = (
            (device.lat, device.lon) if isinstance(device, Station | Meter) else GATEWAYS[0][2:4]
        )
        if family == "chirpstack":
            self.topic = f"{prefix}application/{CHIRPSTACK_APPLICATION}/device/{self.eui}/event/up"
        else:
            self.tts_id = device.id.lower().replace("_", "-").replace(".", "-")
            self.topic = f"{prefix}v3/{TTS_APPLICATION}@ttn/devices/{self.tts_id}/up"
        self.fcnt = 0
        self._new_session()

    def _new_session(self) -> None:
        self.dev_addr = f"{0x26000000 | self.rng.getrandbits(24):08x}"
        self.session_key_id = base64.b64encode(self.rng.randbytes(16)).decode()

    def rejoin(self) -> None:
        self.fcnt = 0
        self._new_session()

    def invalid_fix(self, t: int) -> list[Wired]:
        return []

    def _object(self, r: Values) -> Values:
        obj: Values = {"time": iso(r["time"])}
        for key, value in r.items():
            if key == "time" or value is None:
                continue
            if key == "alarms":
                obj.update(value)
            else:
                obj[key] = value
        return obj

    def _radio(self, r: Values) -> tuple[int, list[tuple[int, int, float]]]:
        """(spreading factor, [(gateway index, rssi, snr)]) for one uplink."""
        lat, lon = (r["lat"], r["lon"]) if "lat" in r else self.position
        heard = []
        for i, (_eui, _name, glat, glon, _alt) in enumerate(GATEWAYS):
            d = max(30.0, _distance_m(lat, lon, glat, glon))
            rssi = round(-65 - 20 * math.log10(d / 30) + self.rng.gauss(0, 3))
            if rssi > -125 or i == 0:
                snr = round(max(-15.0, min(12.0, 10 - (-rssi - 90) / 3 + self.rng.gauss(0, 1))), 1)
                heard.append((i, rssi, snr))
        best = max(h[1] for h in heard)
        sf = 7 if best > -100 else 8 if best > -110 else 9 if best > -118 else 10
        return sf, heard

    def encode(self, t: int, readings: Sequence[Values]) -> list[Wired]:
        out: list[Wired] = []
        for i, r in enumerate(readings):
            tt = t + i * LORA_BATCH_SPACING_S
            out.append((tt, self.topic, self._uplink(tt, r), 1))
            if self.rng.random() < self.retransmit_rate:
                # An unconfirmed uplink sent again (NbTrans): same frame counter.
                tt += LORA_RETRANSMIT_DELAY_S
                out.append((tt, self.topic, self._uplink(tt, r), 0))
            self.fcnt += 1
        return out

    def _uplink(self, t: int, r: Values) -> bytes:
        rng = self.rng
        ms = rng.randrange(1000)
        sf, heard = self._radio(r)
        # Keyword order is draw order: the radio, then the channel (rng.choice).
        up = _Uplink(
            t=t,
            ms=ms,
            when=iso_ms(t, ms),
            sf=sf,
            heard=heard,
            freq=rng.choice(AS923_CHANNELS_HZ),
            data=base64.b64encode(frame(self.kind, r, self.litres_per_unit)).decode(),
            obj=self._object(r),
        )
        doc = self._chirpstack_doc(up) if self.lora_family == "chirpstack" else self._tts_doc(up)
        return _dumps(doc, option=_OPT)

    def _chirpstack_doc(self, up: _Uplink) -> Values:
        """A ChirpStack v4 ``event/up`` document."""
        name, profile_id = _PROFILES[self.kind]
        return {
            # Drawn before the gateways' uplink ids (dict values evaluate in order).
            "deduplicationId": str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
            "time": up.when,
            "deviceInfo": {
                "tenantId": CHIRPSTACK_TENANT,
                "tenantName": "yukimizu",
                "applicationId": CHIRPSTACK_APPLICATION,
                "applicationName": "yukimizu",
                "deviceProfileId": profile_id,
                "deviceProfileName": name,
                "deviceName": self.device.id,
                "devEui": self.eui,
                "deviceClassEnabled": "CLASS_A",
                "tags": {},
            },
            "devAddr": self.dev_addr,
            "adr": True,
            "dr": 12 - up.sf if up.sf <= 12 else 0,
            "fCnt": self.fcnt,
            "fPort": _PORTS[self.kind],
            "confirmed": False,
            "data": up.data,
            "object": up.obj,
            "rxInfo": [self._chirpstack_rx(up, g, rssi, snr) for g, rssi, snr in up.heard],
            "txInfo": {
                "frequency": up.freq,
                "modulation": {
                    "lora": {"bandwidth": 125000, "spreadingFactor": up.sf, "codeRate": "CR_4_5"}
                },
            },
            "regionConfigId": "as923",
        }

    def _chirpstack_rx(self, up: _Uplink, g: int, rssi: int, snr: float) -> Values:
        """One gateway's ``rxInfo`` entry (draws its uplink id, then its context)."""
        return {
            "gatewayId": GATEWAYS[g][0].lower(),
            "uplinkId": self.rng.getrandbits(31),
            "gwTime": up.when,
            "nsTime": iso_ms(up.t, min(999, up.ms + 20)),
            "rssi": rssi,
            "snr": snr,
            "channel": AS923_CHANNELS_HZ.index(up.freq),
            "location": {
                "latitude": GATEWAYS[g][2],
                "longitude": GATEWAYS[g][3],
                "altitude": GATEWAYS[g][4],
            },
            "context": base64.b64encode(self.rng.randbytes(4)).decode(),
            "crcStatus": "CRC_OK",
        }

    def _tts_doc(self, up: _Uplink) -> Values:
        """A The Things Stack v3 uplink message."""
        # The correlation id is drawn before the gateways' timestamps.
        ulid = "".join(self.rng.choice(_CROCKFORD) for _ in range(26))
        uplink: Values = {
            "session_key_id": self.session_key_id,
            "f_port": _PORTS[self.kind],
            "frm_payload": up.data,
            "decoded_payload": up.obj,
            "rx_metadata": [self._tts_rx(up, g, rssi, snr) for g, rssi, snr in up.heard],
            "settings": {
                "data_rate": {
                    "lora": {"bandwidth": 125000, "spreading_factor": up.sf, "coding_rate": "4/5"}
                },
                "frequency": str(up.freq),
            },
            "received_at": up.when,
            "consumed_airtime": AIRTIME_S[up.sf],
            "network_ids": {
                "net_id": "000013",
                "tenant_id": "ttn",
                "cluster_id": "au1",
                "cluster_address": "au1.cloud.thethings.network",
            },
        }
        if self.fcnt:  # protobuf JSON omits zero values: f_cnt 0 is absent
            uplink["f_cnt"] = self.fcnt
        return {
            "end_device_ids": {
                "device_id": self.tts_id,
                "application_ids": {"application_id": TTS_APPLICATION},
                "dev_eui": self.eui.upper(),
                "join_eui": "0000000000000000",
                "dev_addr": self.dev_addr.upper(),
            },
            "correlation_ids": [f"as:up:{ulid}"],
            "received_at": up.when,
            "uplink_message": uplink,
        }

    def _tts_rx(self, up: _Uplink, g: int, rssi: int, snr: float) -> Values:
        """One gateway's ``rx_metadata`` entry (draws its timestamp)."""
        return {
            "gateway_ids": {"gateway_id": GATEWAYS[g][1], "eui": GATEWAYS[g][0]},
            "time": up.when,
            "timestamp": self.rng.getrandbits(32),
            "rssi": rssi,
            "channel_rssi": rssi,
            "snr": snr,
            "location": {
                "latitude": GATEWAYS[g][2],
                "longitude": GATEWAYS[g][3],
                "altitude": GATEWAYS[g][4],
                "source": "SOURCE_REGISTRY",
            },
            "received_at": up.when,
        }
