"""Generate the sample device registry and road network under config/.

Deterministic: the same script always writes byte-identical files, so the shipped
sample can be regenerated and diffed (tests/test_registry.py checks this).

    python scripts/make_sample_registry.py [--out config]

The town is fictional but placed in the Yamagata basin around 38.38 °N 140.20 °E.
Its validation bounding box (every device, route and the depot lie inside, with a
margin of at least ~400 m):

    lat_min = 38.355   lat_max = 38.405
    lon_min = 140.165  lon_max = 140.235
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

SEED = 38_380_140  # fixed: the output must not change between runs

# Keep in sync with the docstring above and the sample config file.
BBOX_LAT_MIN, BBOX_LAT_MAX = 38.355, 38.405
BBOX_LON_MIN, BBOX_LON_MAX = 140.165, 140.235

# District centres (lat, lon). 大平 and 沢口 are hamlets outside the grid of streets.
DISTRICTS: dict[str, tuple[float, float]] = {
    "本町": (38.3800, 140.2000),
    "中町": (38.3815, 140.2045),
    "上町": (38.3845, 140.1965),
    "下町": (38.3765, 140.2030),
    "新田": (38.3735, 140.1915),
    "上野": (38.3870, 140.2095),
    "原町": (38.3755, 140.2105),
    "川端": (38.3825, 140.1900),
    "大平": (38.3955, 140.2195),
    "沢口": (38.3645, 140.1805),
}

Coord = tuple[float, float]  # (lon, lat), the GeoJSON order


def _jitter(rng: random.Random, centre: tuple[float, float], spread: float) -> tuple[float, float]:
    lat, lon = centre
    lat += rng.uniform(-spread, spread)
    lon += rng.uniform(-spread, spread)
    return round(lat, 6), round(lon, 6)


def _eui(rng: random.Random, prefix: str) -> str:
    # Upper case as printed on device labels; the registry normalises it.
    rest = 16 - len(prefix)
    return (prefix + f"{rng.getrandbits(4 * rest):0{rest}x}").upper()


def _csv_text(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


# --------------------------------------------------------------------------- devices


def stations(rng: random.Random) -> str:
    # (district, station name, sensor type); lasers where the ±1 cm matters most.
    plan = [
        ("本町", "役場前", "laser"),
        ("中町", "中町公民館", "ultrasonic"),
        ("上町", "上町児童公園", "ultrasonic"),
        ("下町", "下町消防詰所", "ultrasonic"),
        ("新田", "新田集会所", "ultrasonic"),
        ("上野", "上野小学校", "laser"),
        ("原町", "原町浄水場", "ultrasonic"),
        ("川端", "川端橋", "ultrasonic"),
        ("大平", "大平分校跡", "laser"),
        ("沢口", "沢口配水池", "ultrasonic"),
    ]
    with_eui = {"ST01", "ST09"}  # the trial station and the remote hamlet use LoRaWAN
    rows: list[list[object]] = []
    for n, (district, name, sensor) in enumerate(plan, start=1):
        sid = f"ST{n:02d}"
        lat, lon = _jitter(rng, DISTRICTS[district], 0.0012)
        height = rng.choice([250, 280, 300, 300, 320, 350, 400])
        eui = _eui(rng, "a84041") if sid in with_eui else ""
        rows.append([sid, name, district, f"{lat:.6f}", f"{lon:.6f}", height, sensor, eui])
    header = ["id", "name", "district", "lat", "lon", "mount_height_cm", "sensor_type", "dev_eui"]
    return _csv_text(header, rows)


def meters(rng: random.Random) -> str:
    # Larger services: town hall, school, clinic, care home, inn.
    big = {
        "M004": (20, 4.0),
        "M011": (25, 6.3),
        "M017": (20, 4.0),
        "M022": (25, 6.3),
        "M026": (20, 4.0),
    }
    watched = {"M003", "M009", "M014", "M020", "M028"}  # 見守り households (13 mm)
    lorawan = {f"M{n:03d}" for n in (1, 2, 5, 8, 12, 15, 19, 23, 27, 30)}
    districts = list(DISTRICTS)
    rows: list[list[object]] = []
    for n in range(1, 31):
        mid = f"M{n:03d}"
        district = districts[(n - 1) % len(districts)]
        lat, lon = _jitter(rng, DISTRICTS[district], 0.0015)
        diameter, q3 = big.get(mid, (13, 2.5))
        # Electronic registers count litres with 7–8 digits; mechanical dials in m³ with 5–6.
        unit = "L" if rng.random() < 0.5 else "m3"
        digits = rng.choice([7, 8]) if unit == "L" else rng.choice([5, 6])
        eui = _eui(rng, "70b3d5") if mid in lorawan else ""
        rows.append(
            [
                mid,
                district,
                f"{lat:.6f}",
                f"{lon:.6f}",
                diameter,
                q3,
                digits,
                unit,
                "true" if mid in watched else "false",
                eui,
            ]
        )
    header = [
        "id",
        "district",
        "lat",
        "lon",
        "diameter_mm",
        "q3_m3h",
        "register_digits",
        "register_unit",
        "watched",
        "dev_eui",
    ]
    return _csv_text(header, rows)


def plows(rng: random.Random) -> str:
    contractors = ["町直営", "朝日建設", "朝日建設", "最上土木", "最上土木"]
    rows: list[list[object]] = []
    for n, contractor in enumerate(contractors, start=1):
        eui = _eui(rng, "0004a3") if n in (1, 4) else ""
        rows.append([f"P{n:02d}", f"除雪{n}号車", contractor, eui])
    return _csv_text(["id", "name", "contractor", "dev_eui"], rows)


# --------------------------------------------------------------------------- roads
#
# A 5 x 5 grid of junctions (about 520 m east-west, 440 m north-south) around the
# centre: the outer ring, the inner 3 x 3 streets, four spokes joining them, two old
# diagonal roads, and loops out to the hamlets 大平 (north-east) and 沢口 (south-west).
# Every junction has an even number of roads, so one Euler circuit from the depot
# drives every segment exactly once with no dead running: R001 ends where R002
# starts, and so on.

LONS = [140.188, 140.194, 140.200, 140.206, 140.212]
LATS = [38.372, 38.376, 38.380, 38.384, 38.388]


@dataclass(frozen=True)
class Road:
    a: str
    b: str
    name: str
    priority: int


def _junctions(rng: random.Random) -> dict[str, Coord]:
    nodes: dict[str, Coord] = {}
    for i, lon in enumerate(LONS):
        for j, lat in enumerate(LATS):
            # Real streets are not a ruled grid; move junctions by up to ~40 m.
            nodes[f"J{i}{j}"] = (
                round(lon + rng.uniform(-0.0004, 0.0004), 6),
                round(lat + rng.uniform(-0.0003, 0.0003), 6),
            )
    nodes |= {
        "大平入口": (140.2150, 38.3925),
        "大平": (140.2210, 38.3960),
        "沢口入口": (140.1850, 38.3675),
        "沢口": (140.1790, 38.3640),
    }
    return nodes


def _roads() -> list[Road]:
    roads: list[Road] = []
    # Outer ring: the south and east sides carry the through traffic.
    for i in range(4):
        roads.append(Road(f"J{i}0", f"J{i + 1}0", "町道南環状線", 2))
        roads.append(Road(f"J{i}4", f"J{i + 1}4", "町道北環状線", 3))
    for j in range(4):
        roads.append(Road(f"J0{j}", f"J0{j + 1}", "町道西環状線", 3))
        roads.append(Road(f"J4{j}", f"J4{j + 1}", "町道東環状線", 2))
    # Inner streets. Row 2 and column 2 cross at the town hall: the main streets.
    for i in (1, 2):
        for j in (1, 2, 3):
            main = j == 2
            name = {1: "下町通り", 2: "本町通り", 3: "上町通り"}[j]
            roads.append(Road(f"J{i}{j}", f"J{i + 1}{j}", name, 1 if main else 2))
    for i in (1, 2, 3):
        for j in (1, 2):
            main = i == 2
            name = {1: "川端通り", 2: "駅前通り", 3: "中町通り"}[i]
            roads.append(Road(f"J{i}{j}", f"J{i}{j + 1}", name, 1 if main else 2))
    # Spokes from the centre streets out to the ring.
    roads += [
        Road("J21", "J20", "駅前通り", 1),
        Road("J23", "J24", "上野線", 1),
        Road("J12", "J02", "本町通り", 1),
        Road("J32", "J42", "本町通り", 1),
    ]
    # Old diagonal roads through two inner corners; they also give the four ring
    # junctions met by a spoke an even number of roads.
    roads += [
        Road("J20", "J11", "旧街道", 2),
        Road("J11", "J02", "旧街道", 2),
        Road("J24", "J33", "上野新道", 2),
        Road("J33", "J42", "上野新道", 2),
    ]
    # Hamlet loops: out by the town road, back by the farm road.
    roads += [
        Road("J44", "大平入口", "町道大平線", 3),
        Road("大平入口", "大平", "町道大平線", 3),
        Road("大平", "J44", "農道大平線", 3),
        Road("J00", "沢口入口", "町道沢口線", 3),
        Road("沢口入口", "沢口", "町道沢口線", 3),
        Road("沢口", "J00", "農道沢口線", 3),
    ]
    return roads


def _euler_circuit(roads: Sequence[Road], start: str) -> list[tuple[int, bool]]:
    """Hierholzer's algorithm; returns (road index, reversed?) in driving order."""
    adjacency: dict[str, list[tuple[int, str, bool]]] = {}
    for k, road in enumerate(roads):
        adjacency.setdefault(road.a, []).append((k, road.b, False))
        adjacency.setdefault(road.b, []).append((k, road.a, True))
    odd = [node for node, edges in adjacency.items() if len(edges) % 2]
    assert not odd, f"junctions with an odd number of roads: {odd}"
    for edges in adjacency.values():
        # Pop from the end: prefer main roads first, then the declared order.
        edges.sort(key=lambda e: (roads[e[0]].priority, e[0]), reverse=True)
    used: set[int] = set()
    stack: list[tuple[str, int, bool]] = [(start, -1, False)]
    circuit: list[tuple[int, bool]] = []
    while stack:
        node = stack[-1][0]
        edges = adjacency[node]
        while edges and edges[-1][0] in used:
            edges.pop()
        if edges:
            k, other, rev = edges.pop()
            used.add(k)
            stack.append((other, k, rev))
        else:
            _, k, rev = stack.pop()
            if k >= 0:
                circuit.append((k, rev))
    circuit.reverse()
    assert len(circuit) == len(roads)
    return circuit


def _haversine_m(a: Coord, b: Coord) -> float:
    lon1, lat1, lon2, lat2 = map(math.radians, (*a, *b))
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * 6_371_008.8 * math.asin(math.sqrt(h))


def _polyline(rng: random.Random, a: Coord, b: Coord) -> list[Coord]:
    """Straight-ish road from a to b with a gentle bend every ~150 m."""
    steps = max(1, round(_haversine_m(a, b) / 150))
    points = [a]
    for s in range(1, steps):
        t = s / steps
        points.append(
            (
                round(a[0] + (b[0] - a[0]) * t + rng.uniform(-0.00012, 0.00012), 6),
                round(a[1] + (b[1] - a[1]) * t + rng.uniform(-0.0001, 0.0001), 6),
            )
        )
    points.append(b)
    return points


# Work zones (除雪工区): the Euler circuit cut into five runs of about equal length,
# one per plow; 町直営 takes the first run (沢口 and the west), 朝日建設 the next two
# (the centre and the south), 最上土木 the last two (the north and 大平). Each zone's
# planned order (zone_order) is the circuit's order, a connected drive.
ZONES = [
    ("Z1", "第1工区 (沢口・西部)", "町直営", "P01", (0,)),
    ("Z2", "第2工区 (中心部・南部)", "朝日建設", "P02 P03", (1, 2)),
    ("Z3", "第3工区 (北部・大平)", "最上土木", "P04 P05", (3, 4)),
]


def zones() -> str:
    rows = [[zid, name, contractor, plows] for zid, name, contractor, plows, _ in ZONES]
    return _csv_text(["id", "name", "contractor", "plows"], rows)


def _zone_of_run(lengths: Sequence[float]) -> list[tuple[str, int]]:
    """(zone id, place in its planned order) of each circuit segment."""
    total = sum(lengths)
    runs = len([r for *_, rs in ZONES for r in rs])
    zone_by_run = {r: zid for zid, *_, rs in ZONES for r in rs}
    out: list[tuple[str, int]] = []
    counts: dict[str, int] = {}
    acc = 0.0
    for length in lengths:
        run = min(runs - 1, int((acc + length / 2) / total * runs))
        acc += length
        zid = zone_by_run[run]
        counts[zid] = counts.get(zid, 0) + 1
        out.append((zid, counts[zid]))
    return out


def routes(rng: random.Random) -> str:
    nodes = _junctions(rng)
    roads = _roads()
    depot_junction = "J10"  # on the southern ring road, near the highway
    features: list[dict[str, object]] = []
    drives: list[tuple[Road, list[Coord]]] = []
    for k, rev in _euler_circuit(roads, depot_junction):
        road = roads[k]
        a, b = (road.b, road.a) if rev else (road.a, road.b)
        drives.append((road, _polyline(rng, nodes[a], nodes[b])))
    lengths = [sum(_haversine_m(p, q) for p, q in itertools.pairwise(c)) for _, c in drives]
    for n, ((road, coords), length, (zone, place)) in enumerate(
        zip(drives, lengths, _zone_of_run(lengths), strict=True), start=1
    ):
        assert 200 <= length <= 1500, (road, length)
        features.append(
            {
                "type": "Feature",
                "properties": {
                    "segment_id": f"R{n:03d}",
                    "name": road.name,
                    "priority": road.priority,
                    "zone": zone,
                    "zone_order": place,
                },
                "geometry": {"type": "LineString", "coordinates": [list(p) for p in coords]},
            }
        )
    lon, lat = nodes[depot_junction]
    features.append(
        {
            "type": "Feature",
            "properties": {"kind": "depot", "name": "町道路除雪基地"},
            # Set back ~60 m south of the ring road.
            "geometry": {"type": "Point", "coordinates": [lon, round(lat - 0.00055, 6)]},
        }
    )
    # One feature per line: readable, and a diff shows which segment changed.
    body = ",\n".join(json.dumps(f, ensure_ascii=False) for f in features)
    return '{"type": "FeatureCollection", "features": [\n' + body + "\n]}\n"


# --------------------------------------------------------------------------- main


def _check_bbox(outputs: dict[str, str]) -> None:
    points: list[tuple[float, float]] = []  # (lat, lon)
    for name in ("stations.csv", "meters.csv"):
        for row in csv.DictReader(io.StringIO(outputs[name])):
            points.append((float(row["lat"]), float(row["lon"])))
    geo = json.loads(outputs["routes.geojson"])
    for feature in geo["features"]:
        geom = feature["geometry"]
        coords = geom["coordinates"] if geom["type"] == "LineString" else [geom["coordinates"]]
        points += [(lat, lon) for lon, lat in coords]
    for lat, lon in points:
        assert BBOX_LAT_MIN + 0.004 <= lat <= BBOX_LAT_MAX - 0.004, (lat, lon)
        assert BBOX_LON_MIN + 0.005 <= lon <= BBOX_LON_MAX - 0.005, (lat, lon)


def generate() -> dict[str, str]:
    """Return {file name: content}; one RNG per file so editing one leaves the rest."""
    outputs = {
        "stations.csv": stations(random.Random(f"{SEED}/stations")),
        "meters.csv": meters(random.Random(f"{SEED}/meters")),
        "plows.csv": plows(random.Random(f"{SEED}/plows")),
        "routes.geojson": routes(random.Random(f"{SEED}/routes")),
        "zones.csv": zones(),
    }
    _check_bbox(outputs)
    return outputs


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "config")
    args = parser.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    for name, text in generate().items():
        (out / name).write_text(text, encoding="utf-8", newline="")
        print(f"wrote {out / name}")


if __name__ == "__main__":
    main()
