"""Device registry: which stations, meters and plows exist, and the roads plows clear.

Staff keep the devices in spreadsheets (CSV) and the roads in GeoJSON (QGIS). The
files are validated once at start-up; every problem is a :class:`RegistryError` naming
the file, the line and the column, so it can be fixed in the spreadsheet. After
loading, look-ups by device id or LoRaWAN DevEUI are dictionary hits.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Final, Literal, NoReturn, Protocol, TypeAlias

from sensors.models import Kind
from sensors.zones import RoadGraph, WorkZone, derive_order

__all__ = [
    "BBox",
    "Device",
    "Kind",
    "Meter",
    "Plow",
    "Registry",
    "RegistryError",
    "RouteSegment",
    "Station",
    "WorkZone",
    "normalise_dev_eui",
]

RegisterUnit = Literal["L", "m3"]

EARTH_RADIUS_M: Final = 6_371_008.8  # IUGG mean radius
SENSOR_TYPES: Final = frozenset({"ultrasonic", "laser"})
# Ids become MQTT topic levels and InfluxDB tag values: no '/', '+', '#' or spaces.
_ID_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_EUI_RE: Final = re.compile(r"[0-9a-f]{16}")
_INT_RE: Final = re.compile(r"[+-]?[0-9]+")
_EUI_SEPARATORS: Final = str.maketrans("", "", ":- ")
_TRUE: Final = frozenset({"true", "1", "yes"})
_FALSE: Final = frozenset({"false", "0", "no"})


class RegistryError(ValueError):
    """A registry file is unreadable or invalid.

    The message reads like ``config/meters.csv line 7: column 'q3_m3h': 'abc' is not a
    number``; the parts are also available as attributes. GeoJSON problems name the
    feature (0-based index) and property instead of a line and column.
    """

    def __init__(
        self,
        path: Path | str,
        problem: str,
        *,
        line: int | None = None,
        column: str | None = None,
        feature: int | None = None,
    ) -> None:
        self.path = str(path)
        self.problem = problem
        self.line = line
        self.column = column
        self.feature = feature
        where = self.path
        if line is not None:
            where += f" line {line}"
        if feature is not None:
            where += f" feature {feature}"
        if column is not None:
            label = "property" if feature is not None else "column"
            problem = f"{label} {column!r}: {problem}"
        super().__init__(f"{where}: {problem}")


def normalise_dev_eui(text: str) -> str:
    """Canonical DevEUI: 16 lower-case hex digits, separators ':' '-' and spaces removed.

    Does not check the result; see :func:`_is_dev_eui`.
    """
    return text.strip().translate(_EUI_SEPARATORS).lower()


def _haversine_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance in metres between two (lon, lat) points."""
    lon1, lat1, lon2, lat2 = map(math.radians, (*a, *b))
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(h))


# --------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class BBox:
    """Where the town's devices may be; catches swapped or mistyped coordinates."""

    lat_min: float
    lat_max: float
    lon_min: float
    lon_max: float

    def __post_init__(self) -> None:
        if not (-90 <= self.lat_min < self.lat_max <= 90):
            raise ValueError(f"bad latitude range {self.lat_min}..{self.lat_max}")
        if not (-180 <= self.lon_min < self.lon_max <= 180):
            raise ValueError(f"bad longitude range {self.lon_min}..{self.lon_max}")

    def contains(self, lat: float, lon: float) -> bool:
        return self.lat_min <= lat <= self.lat_max and self.lon_min <= lon <= self.lon_max


@dataclass(frozen=True, slots=True)
class Station:
    """A snow-depth station; depth = mount height − measured distance."""

    id: str
    name: str
    district: str
    lat: float
    lon: float
    mount_height_cm: float
    sensor_type: str  # one of SENSOR_TYPES
    dev_eui: str | None  # normalised, or None when not on LoRaWAN


@dataclass(frozen=True, slots=True)
class Meter:
    """A smart water meter reporting a cumulative register."""

    id: str
    district: str
    lat: float
    lon: float
    diameter_mm: int
    q3_m3h: float  # permanent flow rate (JIS B 8570 / ISO 4064), for burst thresholds
    register_digits: int
    register_unit: RegisterUnit
    watched: bool  # 見守り: a household on the watch-over service
    dev_eui: str | None

    @property
    def litres_per_unit(self) -> int:
        return 1 if self.register_unit == "L" else 1000

    @property
    def rollover_l(self) -> int:
        """Litres at which the register wraps to zero."""
        # int(): typeshed types int ** int as Any (a negative exponent gives a float).
        return int(10**self.register_digits) * self.litres_per_unit


@dataclass(frozen=True, slots=True)
class Plow:
    id: str
    name: str
    contractor: str
    dev_eui: str | None


@dataclass(frozen=True, slots=True)
class RouteSegment:
    """A stretch of road plowed as a unit; coords are (lon, lat) as in GeoJSON."""

    id: str
    name: str
    priority: int  # 1 = town centre / main roads first
    coords: tuple[tuple[float, float], ...]
    zone: str | None = None  # its work zone (除雪工区), when the town has zones
    zone_order: int | None = None  # its place in the zone's planned order, if any

    @property
    def length_m(self) -> float:
        return sum(_haversine_m(a, b) for a, b in itertools.pairwise(self.coords))


Device: TypeAlias = Station | Meter | Plow


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Registry:
    """All devices and road segments of the town, indexed for O(1) look-ups."""

    stations: Mapping[str, Station]
    meters: Mapping[str, Meter]
    plows: Mapping[str, Plow]
    routes: Mapping[str, RouteSegment]
    depot: tuple[float, float] | None = None  # (lon, lat)
    zones: Mapping[str, WorkZone] = field(default_factory=dict)
    _by_id: Mapping[str, tuple[Kind, Device]] = field(init=False, repr=False, compare=False)
    _by_eui: Mapping[str, tuple[Kind, Device]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_id: dict[str, tuple[Kind, Device]] = {}
        by_eui: dict[str, tuple[Kind, Device]] = {}
        groups: tuple[tuple[Kind, Mapping[str, Device]], ...] = (
            ("snow", self.stations),
            ("water", self.meters),
            ("plow", self.plows),
        )
        for kind, devices in groups:
            for key, device in devices.items():
                if key != device.id:
                    raise ValueError(f"registry key {key!r} differs from device id {device.id!r}")
                if key in by_id:
                    raise ValueError(f"device id {key!r} used twice")
                by_id[key] = (kind, device)
                if device.dev_eui is not None:
                    eui = normalise_dev_eui(device.dev_eui)
                    if eui in by_eui:
                        raise ValueError(f"dev_eui {eui} used twice")
                    by_eui[eui] = (kind, device)
        # Read-only views: the registry is shared between worker threads.
        for name in ("stations", "meters", "plows", "routes", "zones"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))
        object.__setattr__(self, "_by_id", MappingProxyType(by_id))
        object.__setattr__(self, "_by_eui", MappingProxyType(by_eui))

    def zone_of(self, segment_id: str) -> WorkZone | None:
        """The work zone a segment belongs to, or None (no zones, or not in one)."""
        seg = self.routes.get(segment_id)
        if seg is None or seg.zone is None:
            return None
        return self.zones.get(seg.zone)

    def lookup(self, device_id: str) -> tuple[Kind, Device] | None:
        """The device with this id and its kind, or None if unknown."""
        return self._by_id.get(device_id)

    def by_dev_eui(self, dev_eui: str) -> tuple[Kind, Device] | None:
        """The device with this DevEUI in any spelling (case, ':' '-' ' '), or None."""
        return self._by_eui.get(normalise_dev_eui(dev_eui))

    @classmethod
    def load(
        cls,
        stations: Path,
        meters: Path,
        plows: Path,
        routes: Path | None = None,
        *,
        bbox: BBox | None = None,
        zones: Path | None = None,
    ) -> Registry:
        """Read and validate the registry files; raise RegistryError on the first problem.

        With ``bbox``, every device, route point and the depot must lie inside it. With
        ``zones`` (work zones, needs ``routes``), every segment names its zone.
        """
        ids = _IdBook()
        loaded_stations = {s.id: s for s in _load_stations(stations, ids, bbox)}
        loaded_meters = {m.id: m for m in _load_meters(meters, ids, bbox)}
        loaded_plows = {p.id: p for p in _load_plows(plows, ids)}
        segments: dict[str, RouteSegment] = {}
        depot: tuple[float, float] | None = None
        if routes is not None:
            segments, depot = _load_routes(routes, bbox)
        loaded_zones: dict[str, WorkZone] = {}
        if zones is not None:
            if routes is None:
                raise RegistryError(zones, "work zones need a routes file")
            loaded_zones = _load_zones(zones, routes, loaded_plows, segments, depot)
        return cls(loaded_stations, loaded_meters, loaded_plows, segments, depot, loaded_zones)


# --------------------------------------------------------------------------- CSV


class _IdBook:
    """Where each device id and DevEUI was first seen, across all files."""

    def __init__(self) -> None:
        self._ids: dict[str, str] = {}
        self._euis: dict[str, str] = {}

    def add_id(self, row: _Row, device_id: str) -> None:
        self._add(self._ids, row, "id", device_id)

    def add_eui(self, row: _Row, eui: str) -> None:
        self._add(self._euis, row, "dev_eui", eui)

    @staticmethod
    def _add(seen: dict[str, str], row: _Row, column: str, value: str) -> None:
        first = seen.get(value)
        if first is not None:
            row.fail(column, f"{value!r} already used at {first}")
        seen[value] = f"{row.path} line {row.line}"


@dataclass(frozen=True, slots=True)
class _Row:
    """One CSV record, with typed accessors that raise RegistryError with its location."""

    path: Path
    line: int
    cells: Mapping[str, str]

    def fail(self, column: str, problem: str) -> NoReturn:
        raise RegistryError(self.path, problem, line=self.line, column=column)

    def raw(self, column: str) -> str:
        return self.cells.get(column, "")

    def text(self, column: str) -> str:
        value = self.raw(column)
        if not value:
            self.fail(column, "empty")
        return value

    def device_id(self, ids: _IdBook) -> str:
        value = self.text("id")
        if not _ID_RE.fullmatch(value):
            self.fail("id", f"{value!r} may only contain letters, digits, '_', '-' and '.'")
        ids.add_id(self, value)
        return value

    def dev_eui(self, ids: _IdBook) -> str | None:
        value = self.raw("dev_eui")
        if not value:
            return None
        eui = normalise_dev_eui(value)
        if not _EUI_RE.fullmatch(eui):
            self.fail("dev_eui", f"{value!r} is not 16 hex digits")
        ids.add_eui(self, eui)
        return eui

    def number(self, column: str) -> float:
        value = self.text(column)
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            self.fail(column, f"{value!r} is not a number")
        return number

    def integer(self, column: str) -> int:
        value = self.text(column)
        # Not int(): it also takes '1_000' and non-ASCII digits.
        if not _INT_RE.fullmatch(value):
            self.fail(column, f"{value!r} is not a whole number")
        return int(value)

    def positive(self, column: str) -> float:
        number = self.number(column)
        if number <= 0:
            self.fail(column, f"{self.raw(column)!r} must be greater than 0")
        return number

    def boolean(self, column: str) -> bool:
        value = self.text(column).lower()
        if value in _TRUE:
            return True
        if value not in _FALSE:
            self.fail(column, f"{self.raw(column)!r} is not one of true/false/1/0/yes/no")
        return False

    def position(self, bbox: BBox | None) -> tuple[float, float]:
        lat, lon = self.number("lat"), self.number("lon")
        if not -90 <= lat <= 90:
            self.fail("lat", f"{self.raw('lat')!r} is outside -90..90")
        if not -180 <= lon <= 180:
            self.fail("lon", f"{self.raw('lon')!r} is outside -180..180")
        if bbox is not None and not bbox.contains(lat, lon):
            column = "lat" if not bbox.lat_min <= lat <= bbox.lat_max else "lon"
            self.fail(column, f"position {lat}, {lon} is outside the town's bounding box {bbox}")
        return lat, lon


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise RegistryError(path, f"cannot read: {exc.strerror or exc}") from exc
    try:
        # utf-8-sig: Excel's "CSV UTF-8" starts with a byte-order mark.
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise RegistryError(
            path,
            "not UTF-8 (save as 'CSV UTF-8'; Excel's plain CSV is Shift_JIS)",
            line=line,
        ) from exc


def _read_csv(path: Path, required: tuple[str, ...]) -> Iterator[_Row]:
    """Yield the non-blank records of a CSV file as _Rows, cells stripped."""
    reader = csv.reader(io.StringIO(_read_text(path), newline=""))
    header: list[str] | None = None
    try:
        for cells in reader:
            stripped = [c.strip() for c in cells]
            if not any(stripped):
                continue
            if header is None:
                header = stripped
                _check_header(path, reader.line_num, header, required)
                continue
            if len(stripped) > len(header) and any(stripped[len(header) :]):
                raise RegistryError(
                    path,
                    f"{len(stripped)} fields but the header has {len(header)}",
                    line=reader.line_num,
                )
            yield _Row(path, reader.line_num, dict(zip(header, stripped, strict=False)))
    except csv.Error as exc:
        raise RegistryError(path, f"malformed CSV: {exc}", line=reader.line_num) from exc
    if header is None:
        raise RegistryError(path, "empty file: expected a header line")


def _check_header(path: Path, line: int, header: list[str], required: tuple[str, ...]) -> None:
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise RegistryError(path, "duplicate column in header", line=line, column=name)
        seen.add(name)
    for name in required:
        if name not in seen:
            raise RegistryError(path, "missing from header", line=line, column=name)


_STATION_COLUMNS: Final = (
    "id", "name", "district", "lat", "lon", "mount_height_cm", "sensor_type", "dev_eui",
)  # fmt: skip
_METER_COLUMNS: Final = (
    "id", "district", "lat", "lon", "diameter_mm", "q3_m3h", "register_digits",
    "register_unit", "watched", "dev_eui",
)  # fmt: skip
_PLOW_COLUMNS: Final = ("id", "name", "contractor", "dev_eui")
_ZONE_COLUMNS: Final = ("id", "name", "contractor", "plows")


def _load_stations(path: Path, ids: _IdBook, bbox: BBox | None) -> Iterator[Station]:
    for row in _read_csv(path, _STATION_COLUMNS):
        device_id = row.device_id(ids)
        lat, lon = row.position(bbox)
        sensor_type = row.text("sensor_type").lower()
        if sensor_type not in SENSOR_TYPES:
            choices = "/".join(sorted(SENSOR_TYPES))
            row.fail("sensor_type", f"{row.raw('sensor_type')!r} is not one of {choices}")
        yield Station(
            id=device_id,
            name=row.text("name"),
            district=row.text("district"),
            lat=lat,
            lon=lon,
            mount_height_cm=row.positive("mount_height_cm"),
            sensor_type=sensor_type,
            dev_eui=row.dev_eui(ids),
        )


def _load_meters(path: Path, ids: _IdBook, bbox: BBox | None) -> Iterator[Meter]:
    for row in _read_csv(path, _METER_COLUMNS):
        device_id = row.device_id(ids)
        lat, lon = row.position(bbox)
        diameter = row.integer("diameter_mm")
        if diameter <= 0:
            row.fail("diameter_mm", f"{row.raw('diameter_mm')!r} must be greater than 0")
        digits = row.integer("register_digits")
        if not 3 <= digits <= 12:
            row.fail("register_digits", f"{row.raw('register_digits')!r} is outside 3..12")
        unit_text = row.text("register_unit")
        unit: RegisterUnit
        if unit_text in ("L", "l"):
            unit = "L"
        elif unit_text in ("m3", "M3", "m³"):
            unit = "m3"
        else:
            row.fail("register_unit", f"{unit_text!r} is not 'L' or 'm3'")
        yield Meter(
            id=device_id,
            district=row.text("district"),
            lat=lat,
            lon=lon,
            diameter_mm=diameter,
            q3_m3h=row.positive("q3_m3h"),
            register_digits=digits,
            register_unit=unit,
            watched=row.boolean("watched"),
            dev_eui=row.dev_eui(ids),
        )


def _load_plows(path: Path, ids: _IdBook) -> Iterator[Plow]:
    for row in _read_csv(path, _PLOW_COLUMNS):
        yield Plow(
            id=row.device_id(ids),
            name=row.text("name"),
            contractor=row.text("contractor"),
            dev_eui=row.dev_eui(ids),
        )


def _load_zones(
    path: Path,
    routes: Path,
    plows: Mapping[str, Plow],
    segments: Mapping[str, RouteSegment],
    depot: tuple[float, float] | None,
) -> dict[str, WorkZone]:
    """zones.csv (``id,name,contractor,plows``; plows space-separated) checked against
    the plows and the segments' ``zone`` / ``zone_order`` properties."""
    rows = _zone_rows(path, plows)
    index = {sid: n for n, sid in enumerate(segments)}  # feature order, for errors
    members: dict[str, list[RouteSegment]] = {z: [] for z in rows}
    for seg in segments.values():
        where = index[seg.id]
        if seg.zone is None:
            raise RegistryError(
                routes, "missing: every segment needs a work zone", feature=where, column="zone"
            )
        if seg.zone not in rows:
            raise RegistryError(
                routes, f"{seg.zone!r} is not a zone in {path}", feature=where, column="zone"
            )
        members[seg.zone].append(seg)
    graph = RoadGraph(segments)
    out: dict[str, WorkZone] = {}
    for zone_id, (name, contractor, vehicles) in rows.items():
        segs = members[zone_id]
        if not segs:
            raise RegistryError(path, f"zone {zone_id!r} has no route segments", column="id")
        planned = _planned_order(routes, zone_id, segs, index)
        order = planned if planned is not None else derive_order(segs, graph, depot)
        out[zone_id] = WorkZone(zone_id, name, contractor, vehicles, order, planned is not None)
    return out


def _zone_rows(
    path: Path, plows: Mapping[str, Plow]
) -> dict[str, tuple[str, str, tuple[str, ...]]]:
    """zone id → (name, contractor, plows) from zones.csv."""
    rows: dict[str, tuple[str, str, tuple[str, ...]]] = {}
    ids = _IdBook()
    plow_zone: dict[str, str] = {}
    for row in _read_csv(path, _ZONE_COLUMNS):
        zone_id = row.device_id(ids)
        contractor = row.text("contractor")
        vehicles = tuple(row.raw("plows").replace(",", " ").split())
        for v in vehicles:
            plow = plows.get(v)
            if plow is None:
                row.fail("plows", f"{v!r} is not a plow in the plows file")
            if plow.contractor != contractor:
                row.fail("plows", f"{v!r} belongs to {plow.contractor!r}, not to {contractor!r}")
            if v in plow_zone:
                row.fail("plows", f"{v!r} already plows zone {plow_zone[v]!r}")
            plow_zone[v] = zone_id
        rows[zone_id] = (row.text("name"), contractor, vehicles)
    return rows


def _planned_order(
    routes: Path, zone_id: str, segs: list[RouteSegment], index: Mapping[str, int]
) -> tuple[str, ...] | None:
    """The zone's order by ``zone_order``, or None when none of its segments has one."""
    ordered = [s for s in segs if s.zone_order is not None]
    if not ordered:
        return None
    if len(ordered) < len(segs):
        lacking = next(s for s in segs if s.zone_order is None)
        raise RegistryError(
            routes,
            f"zone {zone_id!r} has a planned order, so {lacking.id!r} needs one too",
            feature=index[lacking.id],
            column="zone_order",
        )
    seen: dict[int, str] = {}
    for s in ordered:
        n = s.zone_order or 0
        if n in seen:
            raise RegistryError(
                routes,
                f"{n} already used by {seen[n]!r} in zone {zone_id!r}",
                feature=index[s.id],
                column="zone_order",
            )
        seen[n] = s.id
    return tuple(seen[n] for n in sorted(seen))


# --------------------------------------------------------------------------- GeoJSON


def _load_routes(
    path: Path, bbox: BBox | None
) -> tuple[dict[str, RouteSegment], tuple[float, float] | None]:
    segments: dict[str, RouteSegment] = {}
    depot: tuple[float, float] | None = None
    for index, feature in enumerate(_features(path)):

        def fail(problem: str, prop: str | None = None, index: int = index) -> RegistryError:
            return RegistryError(path, problem, feature=index, column=prop)

        if not isinstance(feature, dict) or feature.get("type") != "Feature":
            raise fail("not a GeoJSON Feature")
        props = feature.get("properties")
        geometry = feature.get("geometry")
        if not isinstance(props, dict):
            raise fail("has no properties")
        if not isinstance(geometry, dict):
            raise fail("has no geometry")
        gtype = geometry.get("type")
        coords = geometry.get("coordinates")

        if gtype == "Point":
            if props.get("kind") != "depot":
                raise fail("a Point must have property kind = 'depot'", "kind")
            if depot is not None:
                raise fail("second depot; only one is supported", "kind")
            depot = _position(coords, bbox, fail)
            continue
        if gtype != "LineString":
            raise fail(f"geometry type {gtype!r} is not LineString (or a depot Point)")
        segment = _route_segment(props, coords, bbox, fail, segments)
        segments[segment.id] = segment
    return segments, depot


def _features(path: Path) -> list[object]:
    """The features of a GeoJSON FeatureCollection file."""
    text = _read_text(path)
    try:
        doc: object = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RegistryError(
            path, f"invalid JSON: {exc.msg} (column {exc.colno})", line=exc.lineno
        ) from exc
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection":
        raise RegistryError(path, "expected a GeoJSON FeatureCollection")
    features = doc.get("features")
    if not isinstance(features, list):
        raise RegistryError(path, "FeatureCollection has no 'features' list")
    return features


class _FeatureFail(Protocol):
    """Builds the error for a problem with one feature (and, optionally, a property)."""

    def __call__(self, problem: str, prop: str | None = None) -> RegistryError: ...


def _route_segment(
    props: dict[str, object],
    coords: object,
    bbox: BBox | None,
    fail: _FeatureFail,
    known: Mapping[str, RouteSegment],
) -> RouteSegment:
    """A LineString feature's segment; its id must not be one of ``known``."""
    segment_id = props.get("segment_id")
    if not isinstance(segment_id, str) or not segment_id.strip():
        raise fail("missing or not a string", "segment_id")
    segment_id = segment_id.strip()
    if segment_id in known:
        raise fail(f"{segment_id!r} used twice", "segment_id")
    name = props.get("name")
    if not isinstance(name, str) or not name.strip():
        raise fail("missing or not a string", "name")
    priority = props.get("priority")
    # bool is an int subclass; `true` is not a priority.
    if not isinstance(priority, int) or isinstance(priority, bool) or priority < 1:
        raise fail(f"{priority!r} is not a whole number >= 1", "priority")
    if not isinstance(coords, list) or len(coords) < 2:
        raise fail("a LineString needs at least two positions")
    points = tuple(_position(p, bbox, fail) for p in coords)
    zone = props.get("zone")
    if zone is not None and (not isinstance(zone, str) or not zone.strip()):
        raise fail(f"{zone!r} is not a zone id", "zone")
    order = props.get("zone_order")
    if order is not None and (not isinstance(order, int) or isinstance(order, bool) or order < 1):
        raise fail(f"{order!r} is not a whole number >= 1", "zone_order")
    return RouteSegment(
        segment_id,
        name.strip(),
        priority,
        points,
        zone.strip() if isinstance(zone, str) else None,
        order,
    )


def _position(
    value: object, bbox: BBox | None, fail: Callable[[str], RegistryError]
) -> tuple[float, float]:
    """A GeoJSON position [lon, lat(, alt)] as (lon, lat)."""
    if (
        not isinstance(value, list)
        or len(value) < 2
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value[:2])
    ):
        raise fail(f"bad position {value!r}: expected [lon, lat]")
    lon, lat = float(value[0]), float(value[1])
    if not (-180 <= lon <= 180 and -90 <= lat <= 90):
        raise fail(f"position {value!r} is out of range (GeoJSON order is [lon, lat])")
    if bbox is not None and not bbox.contains(lat, lon):
        raise fail(f"position {value!r} is outside the town's bounding box {bbox}")
    return lon, lat
