"""The device registry: the shipped sample, look-ups, and errors that point at the cell."""

from __future__ import annotations

import csv
import io
import itertools
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sensors.registry import (
    BBox,
    Meter,
    Plow,
    Registry,
    RegistryError,
    RouteSegment,
    Station,
    normalise_dev_eui,
)

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config"
# The town's bounding box as in the sample config (see scripts/make_sample_registry.py).
TOWN = BBox(lat_min=38.355, lat_max=38.405, lon_min=140.165, lon_max=140.235)

NAMES = ("stations.csv", "meters.csv", "plows.csv", "routes.geojson", "zones.csv")


def load(folder: Path, *, bbox: BBox | None = TOWN, zones: bool = True) -> Registry:
    return Registry.load(
        folder / "stations.csv",
        folder / "meters.csv",
        folder / "plows.csv",
        folder / "routes.geojson",
        bbox=bbox,
        zones=folder / "zones.csv" if zones else None,
    )


@pytest.fixture(scope="module")
def sample() -> Registry:
    return load(CONFIG)


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """A private copy of the sample to break."""
    for name in NAMES:
        shutil.copy(CONFIG / name, tmp_path / name)
    return tmp_path


def edit_cell(path: Path, line: int, column: str, value: str) -> None:
    """Set one cell; line is the 1-based file line (the header is line 1)."""
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
    rows[line - 1][rows[0].index(column)] = value
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    path.write_text(buf.getvalue(), encoding="utf-8")


def load_error(folder: Path) -> RegistryError:
    with pytest.raises(RegistryError) as info:
        load(folder)
    return info.value


# --------------------------------------------------------------------------- sample


def test_sample_counts(sample: Registry) -> None:
    assert len(sample.stations) == 10
    assert len(sample.meters) == 30
    assert len(sample.plows) == 5
    assert len(sample.routes) == 42
    assert sorted(sample.stations) == [f"ST{n:02d}" for n in range(1, 11)]
    assert sorted(sample.meters) == [f"M{n:03d}" for n in range(1, 31)]
    assert sorted(sample.plows) == [f"P{n:02d}" for n in range(1, 6)]
    assert sum(s.dev_eui is not None for s in sample.stations.values()) == 2
    assert sum(m.dev_eui is not None for m in sample.meters.values()) == 10
    assert sum(p.dev_eui is not None for p in sample.plows.values()) == 2
    assert sum(m.watched for m in sample.meters.values()) == 5
    assert {m.diameter_mm for m in sample.meters.values()} == {13, 20, 25}
    assert len({p.contractor for p in sample.plows.values()}) == 3


def test_sample_is_inside_the_town(sample: Registry) -> None:
    devices: list[Station | Meter] = [*sample.stations.values(), *sample.meters.values()]
    for device in devices:
        assert TOWN.contains(device.lat, device.lon), device
    for segment in sample.routes.values():
        for lon, lat in segment.coords:
            assert TOWN.contains(lat, lon), segment.id
    assert sample.depot is not None
    assert TOWN.contains(sample.depot[1], sample.depot[0])


def test_sample_values_are_plausible(sample: Registry) -> None:
    for station in sample.stations.values():
        assert 250 <= station.mount_height_cm <= 400
        assert station.sensor_type in {"ultrasonic", "laser"}
    for meter in sample.meters.values():
        assert (meter.diameter_mm, meter.q3_m3h) in {(13, 2.5), (20, 4.0), (25, 6.3)}
        assert 5 <= meter.register_digits <= 8
    for segment in sample.routes.values():
        assert segment.priority in {1, 2, 3}
        assert 200 <= segment.length_m <= 1500, (segment.id, segment.length_m)


def test_sample_routes_chain_from_the_depot(sample: Registry) -> None:
    segments = [sample.routes[k] for k in sorted(sample.routes)]
    assert segments[0].id == "R001"
    for a, b in itertools.pairwise(segments):
        assert a.coords[-1] == b.coords[0], (a.id, b.id)
    assert segments[-1].coords[-1] == segments[0].coords[0]  # back at the start
    assert sample.depot is not None
    start = RouteSegment("x", "depot access", 1, (sample.depot, segments[0].coords[0]))
    assert start.length_m < 100


def test_sample_is_reproducible(tmp_path: Path) -> None:
    script = ROOT / "scripts" / "make_sample_registry.py"
    subprocess.run([sys.executable, str(script), "--out", str(tmp_path)], check=True)
    for name in NAMES:
        assert (tmp_path / name).read_bytes() == (CONFIG / name).read_bytes(), name


# --------------------------------------------------------------------------- look-ups


def test_lookup_by_id(sample: Registry) -> None:
    kind, station = sample.lookup("ST01") or (None, None)
    assert kind == "snow"
    assert isinstance(station, Station)
    assert station.name == "役場前"
    assert sample.lookup("M004") == ("water", sample.meters["M004"])
    assert sample.lookup("P03") == ("plow", sample.plows["P03"])
    assert sample.lookup("M999") is None
    assert sample.lookup("st01") is None  # ids are exact


@pytest.mark.parametrize(
    "spelling",
    [
        "A84041A04116BE20",
        "a84041a04116be20",
        "a8:40:41:a0:41:16:be:20",
        "A8-40-41-A0-41-16-BE-20",
        "a8 40 41 a0 41 16 be 20",
        "  A84041a04116bE20\n",
    ],
)
def test_lookup_by_dev_eui_in_any_spelling(sample: Registry, spelling: str) -> None:
    assert sample.by_dev_eui(spelling) == ("snow", sample.stations["ST01"])


def test_lookup_by_dev_eui_each_kind(sample: Registry) -> None:
    for kind, devices in (
        ("snow", sample.stations),
        ("water", sample.meters),
        ("plow", sample.plows),
    ):
        for device in devices.values():
            if device.dev_eui is not None:
                assert device.dev_eui == device.dev_eui.lower()
                assert sample.by_dev_eui(device.dev_eui.upper()) == (kind, device)
    assert sample.by_dev_eui("0000000000000000") is None
    assert sample.by_dev_eui("not an eui") is None
    assert sample.by_dev_eui("") is None


def test_normalise_dev_eui() -> None:
    assert normalise_dev_eui(" 70:B3:D5-7E d0 00 00 01 ") == "70b3d57ed0000001"


def test_meter_register() -> None:
    litres = Meter("M1", "本町", 38.38, 140.2, 13, 2.5, 8, "L", False, None)
    cubic = Meter("M2", "本町", 38.38, 140.2, 13, 2.5, 5, "m3", True, None)
    assert (litres.litres_per_unit, litres.rollover_l) == (1, 100_000_000)
    assert (cubic.litres_per_unit, cubic.rollover_l) == (1000, 100_000_000)


def test_segment_length() -> None:
    # 0.01° of latitude is 1,111.95 m on the IUGG mean sphere.
    segment = RouteSegment("R1", "x", 1, ((140.2, 38.38), (140.2, 38.385), (140.2, 38.39)))
    assert segment.length_m == pytest.approx(1111.95, abs=0.01)


def test_registry_is_read_only(sample: Registry) -> None:
    with pytest.raises(TypeError):
        sample.meters["M999"] = sample.meters["M001"]  # type: ignore[index]


def test_direct_construction_rejects_shared_ids() -> None:
    station = Station("X1", "a", "本町", 38.38, 140.2, 300.0, "laser", None)
    plow = Plow("X1", "b", "c", None)
    with pytest.raises(ValueError, match="'X1' used twice"):
        Registry({"X1": station}, {}, {"X1": plow}, {})


def test_routes_are_optional(files: Path) -> None:
    registry = Registry.load(files / "stations.csv", files / "meters.csv", files / "plows.csv")
    assert registry.routes == {}
    assert registry.depot is None


# --------------------------------------------------------------------------- CSV errors


def test_error_message_format(files: Path) -> None:
    edit_cell(files / "meters.csv", 7, "q3_m3h", "abc")
    error = load_error(files)
    path = files / "meters.csv"
    assert str(error) == f"{path} line 7: column 'q3_m3h': 'abc' is not a number"
    assert (error.path, error.line, error.column) == (str(path), 7, "q3_m3h")
    assert isinstance(error, ValueError)


def test_missing_column(files: Path) -> None:
    path = files / "meters.csv"
    text = path.read_text(encoding="utf-8").replace(",q3_m3h", ",flow", 1)
    path.write_text(text, encoding="utf-8")
    error = load_error(files)
    assert (error.path, error.line, error.column) == (str(path), 1, "q3_m3h")
    assert "missing" in str(error)


def test_duplicate_column(files: Path) -> None:
    path = files / "plows.csv"
    path.write_text("id,name,id,contractor,dev_eui\n", encoding="utf-8")
    error = load_error(files)
    assert (error.line, error.column) == (1, "id")


def test_duplicate_id_in_one_file(files: Path) -> None:
    edit_cell(files / "meters.csv", 4, "id", "M001")
    error = load_error(files)
    assert (error.path, error.line, error.column) == (str(files / "meters.csv"), 4, "id")
    assert f"{files / 'meters.csv'} line 2" in str(error)


def test_duplicate_id_across_kinds(files: Path) -> None:
    edit_cell(files / "plows.csv", 3, "id", "ST05")
    error = load_error(files)
    assert (error.path, error.line, error.column) == (str(files / "plows.csv"), 3, "id")
    assert f"{files / 'stations.csv'} line 6" in str(error)


@pytest.mark.parametrize("bad", ["", "ST 11", "ST/11", "snow/#"])
def test_bad_id(files: Path, bad: str) -> None:
    edit_cell(files / "stations.csv", 5, "id", bad)
    error = load_error(files)
    assert (error.line, error.column) == (5, "id")


@pytest.mark.parametrize(
    "case",
    [
        ("meters.csv", 3, "lat", "38,38", "is not a number"),
        ("meters.csv", 3, "lon", "nan", "is not a number"),
        ("meters.csv", 3, "lat", "95", "outside -90..90"),
        ("meters.csv", 3, "lon", "200.1", "outside -180..180"),
        ("meters.csv", 3, "lat", "35.68", "bounding box"),
        ("meters.csv", 3, "lon", "139.69", "bounding box"),
        ("meters.csv", 5, "diameter_mm", "13.5", "is not a whole number"),
        ("meters.csv", 5, "diameter_mm", "0", "greater than 0"),
        ("meters.csv", 5, "q3_m3h", "-2.5", "greater than 0"),
        ("meters.csv", 9, "register_digits", "2", "outside 3..12"),
        ("meters.csv", 9, "register_digits", "13", "outside 3..12"),
        ("meters.csv", 9, "register_unit", "gal", "is not 'L' or 'm3'"),
        ("meters.csv", 10, "watched", "maybe", "true/false"),
        ("meters.csv", 10, "watched", "", "empty"),
        ("stations.csv", 4, "mount_height_cm", "0", "greater than 0"),
        ("stations.csv", 4, "mount_height_cm", "3m", "is not a number"),
        ("stations.csv", 4, "sensor_type", "radar", "is not one of"),
        ("stations.csv", 4, "name", "  ", "empty"),
        ("plows.csv", 2, "contractor", "", "empty"),
        ("meters.csv", 5, "register_digits", "1_0", "is not a whole number"),
    ],
    ids=lambda case: f"{case[0]}-{case[2]}-{case[3]!r}",
)
def test_bad_value(files: Path, case: tuple[str, int, str, str, str]) -> None:
    file, line, column, value, problem = case
    edit_cell(files / file, line, column, value)
    error = load_error(files)
    assert (error.path, error.line, error.column) == (str(files / file), line, column)
    assert problem in str(error)


@pytest.mark.parametrize("value", ["true", "TRUE", "1", "yes", " Yes "])
def test_watched_true_spellings(files: Path, value: str) -> None:
    edit_cell(files / "meters.csv", 2, "watched", value)
    assert load(files).meters["M001"].watched


@pytest.mark.parametrize("value", ["false", "False", "0", "no", "NO"])
def test_watched_false_spellings(files: Path, value: str) -> None:
    edit_cell(files / "meters.csv", 4, "watched", value)
    assert not load(files).meters["M003"].watched


@pytest.mark.parametrize(
    "bad", ["A84041A04116BE", "A84041A04116BE2000", "G84041A04116BE20", "0x84041a04116be2"]
)
def test_bad_dev_eui(files: Path, bad: str) -> None:
    edit_cell(files / "stations.csv", 2, "dev_eui", bad)
    error = load_error(files)
    assert (error.line, error.column) == (2, "dev_eui")
    assert "16 hex digits" in str(error)


def test_duplicate_dev_eui_in_another_spelling(files: Path) -> None:
    # ST01's EUI, written the way a LoRaWAN console shows it.
    edit_cell(files / "plows.csv", 4, "dev_eui", "a8:40:41:a0:41:16:be:20")
    error = load_error(files)
    assert (error.path, error.line, error.column) == (str(files / "plows.csv"), 4, "dev_eui")
    assert f"{files / 'stations.csv'} line 2" in str(error)


def test_too_many_fields(files: Path) -> None:
    path = files / "plows.csv"
    path.write_text("id,name,contractor,dev_eui\nP01,a,b,,surplus\n", encoding="utf-8")
    error = load_error(files)
    assert error.line == 2
    assert "5 fields" in str(error)


def test_short_row_names_the_first_missing_cell(files: Path) -> None:
    (files / "plows.csv").write_text("id,name,contractor,dev_eui\nP01,a\n", encoding="utf-8")
    error = load_error(files)
    assert (error.line, error.column) == (2, "contractor")


def test_excel_bom_blank_lines_and_whitespace(files: Path) -> None:
    path = files / "plows.csv"
    text = (
        "id , name,contractor,dev_eui\r\n"
        "\r\n"
        " P01 ,除雪1号車 , 町直営 , 00-04-A3-9D-F1-EC-22-9B\r\n"
        ",,,\r\n"
        "P02,除雪2号車,朝日建設,\r\n"
    )
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    registry = load(files, zones=False)  # P03-P05 are gone, and so are their zones
    assert registry.plows["P01"] == Plow("P01", "除雪1号車", "町直営", "0004a39df1ec229b")
    assert registry.plows["P02"].dev_eui is None
    assert list(registry.plows) == ["P01", "P02"]


def test_bom_file_errors_keep_column_names_and_line_numbers(files: Path) -> None:
    path = files / "stations.csv"
    edit_cell(path, 3, "lat", "north")
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    error = load_error(files)
    assert (error.line, error.column) == (3, "lat")
    # Without utf-8-sig the first column would be named '\ufeffid' and be "missing".
    path.write_bytes(b"\xef\xbb\xbf" + (CONFIG / "stations.csv").read_bytes())
    assert load(files).stations["ST01"].id == "ST01"


def test_shift_jis_file(files: Path) -> None:
    path = files / "plows.csv"
    text = "id,name,contractor,dev_eui\r\nP01,除雪1号車,町直営,\r\n"
    path.write_bytes(text.encode("cp932"))
    error = load_error(files)
    assert error.line == 2
    assert "UTF-8" in str(error)


def test_empty_file(files: Path) -> None:
    (files / "plows.csv").write_text("\n\n", encoding="utf-8")
    assert "header" in str(load_error(files))


def test_missing_file(files: Path) -> None:
    (files / "meters.csv").unlink()
    error = load_error(files)
    assert error.path == str(files / "meters.csv")
    assert "cannot read" in str(error)


# --------------------------------------------------------------------------- GeoJSON errors


def edit_routes(folder: Path, change: Callable[[Any], object]) -> Path:
    """Apply change(doc) to routes.geojson and write it back."""
    path = folder / "routes.geojson"
    doc = json.loads(path.read_text(encoding="utf-8"))
    change(doc)
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    return path


@pytest.mark.parametrize("prop", ["segment_id", "name", "priority"])
def test_route_missing_property(files: Path, prop: str) -> None:
    path = edit_routes(files, lambda doc: doc["features"][4]["properties"].pop(prop))
    error = load_error(files)
    assert (error.path, error.feature, error.column) == (str(path), 4, prop)
    assert f"feature 4: property '{prop}'" in str(error)


@pytest.mark.parametrize("priority", ["1", 0, 1.5, True, None])
def test_route_bad_priority(files: Path, priority: object) -> None:
    edit_routes(files, lambda doc: doc["features"][2]["properties"].update(priority=priority))
    error = load_error(files)
    assert (error.feature, error.column) == (2, "priority")


def test_route_duplicate_segment_id(files: Path) -> None:
    edit_routes(files, lambda doc: doc["features"][7]["properties"].update(segment_id="R001"))
    error = load_error(files)
    assert (error.feature, error.column) == (7, "segment_id")
    assert "used twice" in str(error)


@pytest.mark.parametrize(
    ("geometry", "problem"),
    [
        ({"type": "Polygon", "coordinates": []}, "not LineString"),
        ({"type": "LineString", "coordinates": [[140.2, 38.38]]}, "at least two"),
        ({"type": "LineString", "coordinates": [[140.2, 38.38], [140.2]]}, "bad position"),
        ({"type": "LineString", "coordinates": [[140.2, 38.38], ["140.2", 38.4]]}, "bad position"),
        # [lat, lon] instead of [lon, lat]: the error reminds of the GeoJSON order.
        ({"type": "LineString", "coordinates": [[38.38, 140.2], [38.39, 140.2]]}, "[lon, lat]"),
        ({"type": "LineString", "coordinates": [[140.2, 38.38], [139.69, 35.68]]}, "bounding box"),
        ({"type": "LineString", "coordinates": [[140.2, 38.38], [190.0, 38.4]]}, "out of range"),
    ],
)
def test_route_bad_geometry(files: Path, geometry: object, problem: str) -> None:
    edit_routes(files, lambda doc: doc["features"][3].update(geometry=geometry))
    error = load_error(files)
    assert error.feature == 3
    assert problem in str(error)


def test_route_point_must_be_the_only_depot(files: Path) -> None:
    def add_depot(doc: Any) -> None:
        doc["features"].append(doc["features"][-1])

    edit_routes(files, add_depot)
    error = load_error(files)
    assert error.feature == 43
    assert "second depot" in str(error)


def test_route_point_without_kind(files: Path) -> None:
    edit_routes(files, lambda doc: doc["features"][-1]["properties"].pop("kind"))
    error = load_error(files)
    assert (error.feature, error.column) == (42, "kind")


@pytest.mark.parametrize(
    "text",
    [
        '{"type": "FeatureCollection", "features": [\n{"type": "Feature",}\n]}',
        '{"type": "Feature", "features": []}',
        '{"type": "FeatureCollection"}',
        '{"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": null}]}',
    ],
)
def test_bad_geojson_document(files: Path, text: str) -> None:
    path = files / "routes.geojson"
    path.write_text(text, encoding="utf-8")
    error = load_error(files)
    assert error.path == str(path)


def test_invalid_json_names_the_line(files: Path) -> None:
    path = files / "routes.geojson"
    path.write_text('{"type": "FeatureCollection",\n "features": [\n  oops\n]}', encoding="utf-8")
    error = load_error(files)
    assert error.line == 3
    assert "invalid JSON" in str(error)


# --------------------------------------------------------------------------- work zones


def test_sample_zones(sample: Registry) -> None:
    """Every segment in exactly one zone; each zone's vehicles are its contractor's and
    its planned order is a connected drive (each segment starts where the last ended)."""
    assert sorted(sample.zones) == ["Z1", "Z2", "Z3"]
    seen: list[str] = []
    for zone in sample.zones.values():
        assert zone.planned
        assert zone.plows, zone.id
        for plow in zone.plows:
            assert sample.plows[plow].contractor == zone.contractor
        for a, b in itertools.pairwise(zone.segments):
            assert sample.routes[a].coords[-1] == sample.routes[b].coords[0], (a, b)
        seen += zone.segments
    assert sorted(seen) == sorted(sample.routes)
    z = sample.zone_of("R020")
    assert z is not None and z.id == "Z2" and z.plows == ("P02", "P03")
    assert sample.zone_of("nope") is None


def test_zones_are_optional(files: Path) -> None:
    registry = Registry.load(
        files / "stations.csv", files / "meters.csv", files / "plows.csv", files / "routes.geojson"
    )
    assert registry.zones == {}
    assert registry.zone_of("R001") is None


def test_zone_without_planned_order_is_derived(files: Path) -> None:
    """Without zone_order: priority 1 first, nearest by road from the depot next."""

    def drop(doc: Any) -> None:
        for f in doc["features"]:
            if f["properties"].get("zone") == "Z2":
                del f["properties"]["zone_order"]

    edit_routes(files, drop)
    registry = load(files)
    zone = registry.zones["Z2"]
    assert not zone.planned
    assert sorted(zone.segments) == sorted(registry.zones["Z2"].segments)
    assert len(zone.segments) == 18
    priorities = [registry.routes[s].priority for s in zone.segments]
    assert priorities == sorted(priorities)  # main roads first
    # the first is the priority-1 segment nearest the depot by road
    first = registry.routes[zone.segments[0]]
    assert first.priority == 1
    assert registry.zones["Z1"].planned  # the other zones keep theirs


@pytest.mark.parametrize(
    ("cell", "value", "problem"),
    [
        ("plows", "P02 P99", "'P99' is not a plow"),
        ("plows", "P04", "'P04' belongs to '最上土木', not to '朝日建設'"),
        ("plows", "P02 P02", "'P02' already plows zone 'Z2'"),
        ("id", "Z 2", "may only contain"),
        ("name", "", "empty"),
    ],
)
def test_bad_zone_row(files: Path, cell: str, value: str, problem: str) -> None:
    edit_cell(files / "zones.csv", 3, cell, value)
    error = load_error(files)
    assert (error.path, error.line, error.column) == (str(files / "zones.csv"), 3, cell)
    assert problem in str(error)


def test_zone_plow_in_two_zones(files: Path) -> None:
    edit_cell(files / "zones.csv", 4, "contractor", "朝日建設")
    edit_cell(files / "zones.csv", 4, "plows", "P03")
    error = load_error(files)
    assert (error.line, error.column) == (4, "plows")
    assert "'P03' already plows zone 'Z2'" in str(error)


@pytest.mark.parametrize(
    ("value", "problem"),
    [(None, "every segment needs a work zone"), ("Z9", "'Z9' is not a zone"), ("", "not a zone")],
)
def test_segment_bad_zone(files: Path, value: object, problem: str) -> None:
    def change(doc: Any) -> None:
        props = doc["features"][5]["properties"]
        if value is None:
            del props["zone"]
        else:
            props["zone"] = value

    path = edit_routes(files, change)
    error = load_error(files)
    assert (error.path, error.feature, error.column) == (str(path), 5, "zone")
    assert problem in str(error)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (None, "has a planned order, so 'R006' needs one too"),
        (0, "not a whole number >= 1"),
        ("2", "not a whole number >= 1"),
        (2, "2 already used by 'R002'"),
    ],
)
def test_segment_bad_zone_order(files: Path, value: object, problem: str) -> None:
    def change(doc: Any) -> None:
        props = doc["features"][5]["properties"]
        if value is None:
            del props["zone_order"]
        else:
            props["zone_order"] = value

    edit_routes(files, change)
    error = load_error(files)
    assert (error.feature, error.column) == (5, "zone_order")
    assert problem in str(error)


def test_zone_without_segments(files: Path) -> None:
    with (files / "zones.csv").open("a", encoding="utf-8") as fh:
        fh.write("Z4,第4工区,町直営,\n")
    error = load_error(files)
    assert error.column == "id"
    assert "zone 'Z4' has no route segments" in str(error)
