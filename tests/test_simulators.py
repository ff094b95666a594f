"""Simulators: determinism, physical plausibility, ground truth, and every wire format
decoded by the real ingest pipeline (``ingest.pipeline.Processor``).

Fast: the scenarios are short (a winter week stands in for the season); the one
MQTT test publishes ~700 messages to a private Mosquitto.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import itertools
import json
import math
import statistics
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from core.config import load_config, load_registry
from core.message import Message
from devtools.localstack import Mosquitto
from ingest.pipeline import Limits, Processor
from sensors.models import corrected_distance_mm
from sensors.registry import Registry
from simulators import cli
from simulators.fleet import assign_segments
from simulators.formats import WIRE_FORMATS, WireFormat
from simulators.roads import RoadNetwork
from simulators.run import Playback, Progress, publish_scenario, run, warn_future, write_jsonl
from simulators.scenario import Scenario, ScenarioError, load_scenario, parse_scenario
from simulators.stream import SimMessage, Simulation, TopicPrefixes
from simulators.timeutil import HOUR, iso
from simulators.truth import TRUTH_FILES, write_truth
from tests.conftest import SAMPLE_CONFIG, wait_for

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ROOT / "scenarios"
LIMITS = Limits(lat_min=38.355, lat_max=38.405, lon_min=140.165, lon_max=140.235)
JST = "+09:00"
# GPS error is at most 8 m; coordinates are rounded to 1e-6° (~0.1 m).
ROAD_TOLERANCE_M = 9.0


def at(text: str) -> datetime:
    return datetime.fromisoformat(text + JST)


@pytest.fixture(scope="module")
def registry() -> Registry:
    return load_registry(load_config(SAMPLE_CONFIG, environ={}))


def scenario(name: str) -> Scenario:
    return load_scenario(SCENARIOS / f"{name}.toml")


# --------------------------------------------------------------------------- ingest


@dataclass(frozen=True)
class Point:
    measurement: str
    device: str
    time_ms: int
    fields: dict[str, float | int | bool]


def parse_line(line: str) -> Point:
    """Our line protocol has no spaces or commas inside tags or values."""
    key, fields_text, time_text = line.split(" ")
    measurement, *tags = key.split(",")
    device = dict(t.split("=", 1) for t in tags)["device"]
    fields: dict[str, float | int | bool] = {}
    for item in fields_text.split(","):
        name, raw = item.split("=", 1)
        if raw in ("true", "false"):
            fields[name] = raw == "true"
        elif raw.endswith("i"):
            fields[name] = int(raw[:-1])
        else:
            fields[name] = float(raw)
    return Point(measurement, device, int(time_text), fields)


@dataclass
class Decoded:
    points: list[Point]
    reasons: Counter[str]
    drops: Counter[str]
    messages: list[SimMessage]

    def by_key(self) -> dict[tuple[str, str, int], dict[str, float | int | bool]]:
        return {(p.measurement, p.device, p.time_ms): p.fields for p in self.points}

    def series(self, measurement: str, device: str) -> list[Point]:
        return sorted(
            (p for p in self.points if p.measurement == measurement and p.device == device),
            key=lambda p: p.time_ms,
        )


def ingest(sim: Simulation, registry: Registry, keep_messages: bool = False) -> Decoded:
    """Every message through the real pipeline, received a second after it was sent."""
    proc = Processor(registry, LIMITS)
    out = Decoded([], Counter(), Counter(), [])
    for msg in sim.messages():
        res = proc.process(Message(msg.topic, msg.payload, msg.time + 1.0))
        if res.reason:
            out.reasons[f"{res.reason}: {res.detail[:120]}"] += 1
        out.drops.update(res.drops)
        out.points.extend(parse_line(line) for line in res.lines)
        if keep_messages:
            out.messages.append(msg)
    return out


def stream_digest(sim: Simulation) -> str:
    h = hashlib.sha256()
    for m in sim.messages():
        h.update(f"{m.time} {m.topic} ".encode())
        h.update(m.payload)
        h.update(b"\n")
    return h.hexdigest()


# --------------------------------------------------------------------------- geometry


class Roads:
    """Vectorised distance to the road network (segments + the depot access road)."""

    def __init__(self, network: RoadNetwork) -> None:
        self.network = network
        pieces: list[tuple[float, float, float, float]] = []
        self.owner: list[str] = []
        for sid, line in network.lines.items():
            for i in range(len(line.xs) - 1):
                pieces.append((line.xs[i], line.ys[i], line.xs[i + 1], line.ys[i + 1]))
                self.owner.append(sid)
        dx, dy = network.depot_xy
        nx, ny = network.node_xy(network.depot_node)
        pieces.append((dx, dy, nx, ny))
        self.owner.append("depot")
        self.p: npt.NDArray[np.float64] = np.array(pieces, dtype=np.float64)

    def distances(self, lat: float, lon: float) -> npt.NDArray[np.float64]:
        x, y = self.network.projection.to_xy(lon, lat)
        ax, ay, bx, by = self.p[:, 0], self.p[:, 1], self.p[:, 2], self.p[:, 3]
        vx, vy = bx - ax, by - ay
        seg2 = vx * vx + vy * vy
        u = np.clip(((x - ax) * vx + (y - ay) * vy) / np.where(seg2 == 0, 1, seg2), 0, 1)
        d: npt.NDArray[np.float64] = np.hypot(ax + u * vx - x, ay + u * vy - y)
        return d

    def nearest(self, lat: float, lon: float) -> float:
        return float(self.distances(lat, lon).min())

    def to_segment(self, lat: float, lon: float, segment: str) -> float:
        d = self.distances(lat, lon)
        mask = np.array([o == segment for o in self.owner])
        return float(d[mask].min())


# --------------------------------------------------------------------------- library


def test_every_shipped_scenario_builds(registry: Registry) -> None:
    names = sorted(p.stem for p in SCENARIOS.glob("*.toml"))
    assert names == [
        "burst-main",
        "heavy-snow-night",
        "quiet-winter-day",
        "sensor-faults-clear-day",
        "storm-morning-fleet",
        "watched-household-leak",
        "winter-season",
    ]
    for name in names:
        sim = Simulation(scenario(name), registry)
        assert sim.world.start < sim.world.end, name
    season = Simulation(scenario("winter-season"), registry).world
    assert iso(season.start) == "2025-11-30T15:00:00Z"  # 1 Dec 00:00 JST
    assert iso(season.end) == "2026-03-31T15:00:00Z"
    assert len(season.storms) > 20
    assert len(season.dispatches) > 10
    assert all(d.source == "auto" for d in season.dispatches)


def test_scenario_errors_name_the_problem(registry: Registry, tmp_path: Path) -> None:
    naive = tmp_path / "naive.toml"
    naive.write_text(
        'name = "x"\nseed = 1\nstart = 2026-01-15T00:00:00\nend = 2026-01-16T00:00:00+09:00\n'
    )
    with pytest.raises(ScenarioError, match=r"start: needs a UTC offset"):
        load_scenario(naive)
    base: dict[str, Any] = {"name": "x", "seed": 1, "start": at("2026-01-15T00:00:00")}
    base["end"] = base["start"] + timedelta(hours=6)
    with pytest.raises(ScenarioError, match=r"events\.0\.storm\.total_cm"):
        parse_scenario(
            {
                **base,
                "events": [
                    {"type": "storm", "start": base["start"], "duration_h": 2, "total_cm": -1}
                ],
            }
        )
    with pytest.raises(ScenarioError, match="unknown key"):
        parse_scenario({**base, "sead": 2})
    with pytest.raises(ScenarioError, match=r"sensors\.station_burst"):
        parse_scenario({**base, "sensors": {"station_burst": 0}})
    bad_kind = parse_scenario(
        {
            **base,
            "events": [
                {"type": "fault", "device": "ST01", "fault": "stuck", "start": base["start"]}
            ],
        }
    )
    with pytest.raises(ScenarioError, match=r"ST01 is a snow device; its faults are"):
        Simulation(bad_kind, registry)
    unknown = parse_scenario(
        {
            **base,
            "events": [{"type": "leak", "meter": "M999", "start": base["start"], "rate_lph": 10}],
        }
    )
    with pytest.raises(ScenarioError, match="M999"):
        Simulation(unknown, registry)


# --------------------------------------------------------------------------- determinism


def test_same_scenario_and_seed_give_the_same_bytes(registry: Registry, tmp_path: Path) -> None:
    sc = scenario("heavy-snow-night")
    first = stream_digest(Simulation(sc, registry))
    assert stream_digest(Simulation(sc, registry)) == first
    other_seed = sc.model_copy(update={"seed": sc.seed + 1})
    assert stream_digest(Simulation(other_seed, registry)) != first
    # Also through the file writer, with a LoRaWAN format (random radio metadata).
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    write_jsonl(Simulation(sc, registry, "chirpstack"), a)
    write_jsonl(Simulation(sc, registry, "chirpstack"), b)
    assert a.read_bytes() == b.read_bytes()
    ta, tb = tmp_path / "ta", tmp_path / "tb"
    sim = Simulation(sc, registry)
    write_truth(sim.world, ta, "native")
    write_truth(Simulation(sc, registry).world, tb, "native")
    for name in TRUTH_FILES:
        assert (ta / name).read_bytes() == (tb / name).read_bytes(), name


def test_stream_is_time_ordered_and_lazy(registry: Registry) -> None:
    sim = Simulation(scenario("winter-season"), registry)
    stream = sim.messages()
    first = [next(stream) for _ in range(2000)]  # a season's start, without the rest
    assert [m.time for m in first] == sorted(m.time for m in first)
    assert first[0].time >= sim.start


# --------------------------------------------------------------------------- formats

EQUIVALENCE = {
    "name": "formats",
    "seed": 7,
    "start": at("2026-01-27T00:00:00"),
    "end": at("2026-01-27T06:00:00"),
    "weather": {"mean_temp_c": -4.0, "initial_depth_cm": 90},
    "sensors": {"lorawan_retransmit_rate": 0.05, "spike_rate": 0.01},
    "events": [
        {"type": "storm", "start": at("2026-01-27T00:30:00"), "duration_h": 5, "total_cm": 15},
        {"type": "dispatch", "at": at("2026-01-27T02:30:00"), "plows": "all", "segments": "all"},
        {"type": "fault", "device": "M001", "fault": "swap", "start": at("2026-01-27T01:20:00")},
        {
            "type": "fault",
            "device": "M002",
            "fault": "reverse",
            "rate_lph": 40,
            "start": at("2026-01-27T01:00:00"),
            "duration_h": 2,
        },
        {
            "type": "fault",
            "device": "M005",
            "fault": "flag",
            "flag": "tamper",
            "start": at("2026-01-27T00:00:00"),
            "duration_h": 3,
        },
    ],
}


@pytest.fixture(scope="module")
def equivalence(registry: Registry) -> dict[WireFormat, Decoded]:
    sc = parse_scenario(EQUIVALENCE)
    return {
        fmt: ingest(Simulation(sc, registry, fmt), registry, keep_messages=True)
        for fmt in WIRE_FORMATS
    }


def _close(a: float | int | bool, b: float | int | bool, tol: float) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a == b
    return math.isclose(a, b, rel_tol=1e-12, abs_tol=tol)


# Resolution a format cannot beat: NMEA writes ddmm.mmmm, knots and degrees to 0.1.
_NMEA_TOL = {"lat": 2e-6, "lon": 2e-6, "speed_kmh": 0.1, "heading_deg": 0.051}


def test_every_format_decodes_to_the_same_values(
    equivalence: dict[WireFormat, Decoded],
) -> None:
    native = equivalence["native"].by_key()
    kinds = Counter(k[0] for k in native)
    assert (
        kinds["snow_depth"] > 300 and kinds["water_meter"] > 100 and kinds["plow_position"] > 1000
    )
    for fmt, decoded in equivalence.items():
        assert not decoded.reasons, (fmt, decoded.reasons)
        # "readings" counts distinct readings: exactly the points ingest writes.
        assert sum(m.readings for m in decoded.messages) == len(decoded.points), fmt
        got = decoded.by_key()
        assert got.keys() == native.keys(), fmt
        for key, want in native.items():
            fields = dict(got[key])
            fields.pop("rssi_dbm", None)  # only LoRaWAN metadata carries it
            expected = dict(want)
            # Formats are sent at different moments (a LoRaWAN uplink per value).
            fields.pop("lag_s"), expected.pop("lag_s")
            if fmt == "nmea" and key[0] == "plow_position":
                expected.pop("blade_down")  # RMC has no blade input
                for name, tol in _NMEA_TOL.items():
                    assert _close(fields.pop(name), expected.pop(name), tol), (fmt, key, name)
            assert fields.keys() == expected.keys(), (fmt, key)
            for name, value in expected.items():
                assert _close(fields[name], value, 1e-9), (fmt, key, name, fields[name], value)
    # LoRaWAN retransmissions (same frame counter) are recognised and dropped.
    assert equivalence["chirpstack"].drops["lorawan_retransmission"] > 0
    assert equivalence["ttn"].drops["lorawan_retransmission"] > 0
    nmea = equivalence["nmea"]
    invalid = [m for m in nmea.messages if m.kind == "plow" and m.readings == 0]
    assert invalid and nmea.drops["invalid_fix"] == len(invalid)


def test_lorawan_and_nmea_payloads_look_like_the_real_thing(registry: Registry) -> None:
    sc = parse_scenario(EQUIVALENCE)
    chirp = next(m for m in Simulation(sc, registry, "chirpstack").messages() if m.device == "ST01")
    assert chirp.topic.startswith("application/") and chirp.topic.endswith(
        "/device/a84041a04116be20/event/up"
    )
    doc = json.loads(chirp.payload)
    assert {
        "deduplicationId",
        "time",
        "deviceInfo",
        "fCnt",
        "fPort",
        "object",
        "rxInfo",
        "txInfo",
        "data",
    } <= doc.keys()
    assert doc["deviceInfo"]["devEui"] == "a84041a04116be20"
    ttn = next(m for m in Simulation(sc, registry, "ttn").messages() if m.device == "M001")
    assert ttn.topic == "v3/yukimizu-town@ttn/devices/m001/up"
    doc = json.loads(ttn.payload)
    assert doc["end_device_ids"]["dev_eui"] == "70B3D5E4A32AC06F"
    assert "decoded_payload" in doc["uplink_message"]
    nmea = [m for m in Simulation(sc, registry, "nmea").messages() if m.kind == "plow"]
    assert all(m.payload.startswith(b"$GPRMC,") and m.payload.endswith(b"\r\n") for m in nmea)
    assert any(b",V," in m.payload for m in nmea)  # invalid fixes are sent with status V
    # Devices without a DevEUI fall back to native and the run says so.
    notes = Simulation(sc, registry, "ttn").notes
    assert any("ST02" in n for n in notes)


# --------------------------------------------------------------------------- plausibility


@pytest.fixture(scope="module")
def season_week(registry: Registry) -> tuple[Simulation, Decoded]:
    """A week of the season: a burst, a reverse flow, a rollover, storms and plows."""
    sc = scenario("winter-season").model_copy(
        update={"start": at("2026-02-05T00:00:00"), "end": at("2026-02-12T06:00:00")}
    )
    sim = Simulation(sc, registry)
    return sim, ingest(sim, registry)


def test_season_week_is_physically_plausible(
    registry: Registry, season_week: tuple[Simulation, Decoded]
) -> None:
    sim, decoded = season_week
    world = sim.world
    assert not decoded.reasons, decoded.reasons
    kinds = Counter(p.measurement for p in decoded.points)
    assert kinds["snow_depth"] == pytest.approx(10 * 7.25 * 144, rel=0.02)
    assert kinds["plow_position"] > 5000

    # Snow: depth never negative; readings with good quality close to the truth.
    spikes = {s: world.station_faults[s].spikes for s in world.stations}
    for sid, truth in world.stations.items():
        laser = truth.station.sensor_type == "laser"
        for p in decoded.series("snow_depth", sid):
            depth = p.fields["depth_cm"]
            assert isinstance(depth, float) and depth >= 0
            t = p.time_ms // 1000
            true_depth, _, _, rate = truth.sample(t)
            if t in spikes[sid] or int(p.fields["quality"]) < 50:
                continue
            bound = 1.2 if laser else 3.2 + min(5.0, rate) if rate > 1.5 else 3.2
            assert abs(depth - true_depth) <= bound, (sid, iso(t), depth, true_depth)
            assert -40 <= p.fields["air_temp_c"] <= 50

    # Meters: registers only go down on a reverse flow, a swap or a rollover.
    for mid, meter in world.meters.items():
        series = decoded.series("water_meter", mid)
        assert len(series) >= 7 * 24 - 30, mid  # LPWA: the last day is not uploaded yet
        rollover = meter.meter.rollover_l
        for a, b in itertools.pairwise(series):
            ra, rb = float(a.fields["register_l"]), float(b.fields["register_l"])
            assert 0 <= rb < rollover
            if rb >= ra:
                continue
            k = (b.time_ms // 1000 - meter.h0) // HOUR
            explained = (
                meter.reverse_l[k - 1] > 0
                or ra - rb > 0.9 * rollover
                or any(a.time_ms // 1000 < s <= b.time_ms // 1000 for s in world.meter_swaps[mid])
            )
            assert explained, (mid, iso(b.time_ms // 1000), ra, rb)
    m018 = [float(p.fields["register_l"]) for p in decoded.series("water_meter", "M018")]
    assert m018[0] > 99_990_000 and m018[-1] < 10_000  # it rolled over
    m016 = decoded.series("water_meter", "M016")  # reverse flow on 12 Feb 02:00-03:00 JST
    assert any(p.fields.get("alarm_reverse") for p in m016) or world.end < int(
        at("2026-02-12T03:00:00").timestamp()
    )

    # Plows: on the roads within GPS error, plausible speeds, blade down only when plowing.
    assert world.network is not None
    roads = Roads(world.network)
    passes = [p for trips in world.trips.values() for t in trips for p in t.passes]
    plowing = defaultdict(list)
    for ps in passes:
        plowing[ps.plow].append(ps)
    for p in decoded.points:
        if p.measurement != "plow_position":
            continue
        lat, lon = float(p.fields["lat"]), float(p.fields["lon"])
        assert roads.nearest(lat, lon) <= ROAD_TOLERANCE_M, (p.device, p.time_ms)
        assert float(p.fields["speed_kmh"]) < 60
        t = p.time_ms // 1000
        if p.fields["blade_down"]:
            current = [ps for ps in plowing[p.device] if ps.start - 1 <= t <= ps.end + 1]
            assert current, (p.device, iso(t))
            assert min(roads.to_segment(lat, lon, ps.segment) for ps in current) <= (
                ROAD_TOLERANCE_M
            )


# --------------------------------------------------------------------------- ground truth


@pytest.fixture(scope="module")
def heavy_night(registry: Registry) -> tuple[Simulation, Decoded]:
    sim = Simulation(scenario("heavy-snow-night"), registry)
    return sim, ingest(sim, registry)


def test_snow_truth_matches_storm_and_stream(
    heavy_night: tuple[Simulation, Decoded], tmp_path: Path
) -> None:
    sim, decoded = heavy_night
    world = sim.world
    assert not decoded.reasons
    write_truth(world, tmp_path, sim.format)
    rows = list(csv.DictReader(io.StringIO((tmp_path / "snow_hourly.csv").read_text())))
    doc = json.loads((tmp_path / "truth.json").read_text())
    storm_start = int(at("2026-01-14T21:00:00").timestamp())
    storm_end = int(at("2026-01-15T05:00:00").timestamp())
    for sid, truth in world.stations.items():
        mine = [r for r in rows if r["station"] == sid]
        total = truth.storm_totals[0]
        assert 27 <= total <= 33  # 30 cm ± 10 % spread
        assert doc["stations"][sid]["storm_totals_cm"]["0"] == total
        assert sum(float(r["snowfall_cm"]) for r in mine) == pytest.approx(total, abs=0.01)
        # JMA new snow on the true depth: less than fallen (settling), but most of it.
        new = sum(float(r["new_snow_cm"]) for r in mine)
        assert 0.6 * total < new < total
        # The stream agrees with the truth: median measured depth before and after.
        good = [p for p in decoded.series("snow_depth", sid) if int(p.fields["quality"]) >= 50]

        def measured(a: int, b: int, series: list[Point] = good) -> float:
            return statistics.median(
                float(p.fields["depth_cm"]) for p in series if a <= p.time_ms // 1000 < b
            )

        before = measured(storm_start - HOUR, storm_start)
        after = measured(storm_end, storm_end + HOUR)
        true_before = truth.sample(storm_start - HOUR // 2)[0]
        true_after = truth.sample(storm_end + HOUR // 2)[0]
        assert abs((after - before) - (true_after - true_before)) < 3.0, sid
    # Ultrasonic stations send the raw distance: ingest's temperature correction matters.
    st02 = decoded.series("snow_depth", "ST02")[0].fields
    raw = float(st02["distance_mm"])
    corrected = corrected_distance_mm(raw, float(st02["air_temp_c"]))
    assert st02["depth_cm"] == pytest.approx(300 - corrected / 10, abs=0.06)
    assert abs(corrected - raw) > 5  # -3 °C: the correction is worth centimetres


def test_plow_truth_matches_the_fixes(
    registry: Registry, heavy_night: tuple[Simulation, Decoded], tmp_path: Path
) -> None:
    sim, decoded = heavy_night
    world = sim.world
    write_truth(world, tmp_path, sim.format)
    rows = list(csv.DictReader(io.StringIO((tmp_path / "plow_segments.csv").read_text())))
    assert {r["segment_id"] for r in rows} == set(registry.routes)  # every road plowed once
    assert {r["plow"] for r in rows} == set(registry.plows)
    assert world.network is not None
    roads = Roads(world.network)
    fixes: dict[str, list[Point]] = {p: decoded.series("plow_position", p) for p in registry.plows}
    for r in rows:
        start = datetime.fromisoformat(r["start"]).timestamp()
        end = datetime.fromisoformat(r["end"]).timestamp()
        inside = [p for p in fixes[r["plow"]] if start + 1 <= p.time_ms / 1000 <= end - 1]
        assert inside, r  # a GPS gap never swallows a whole segment here
        for p in inside:
            assert p.fields["blade_down"] is True, r
            lat, lon = float(p.fields["lat"]), float(p.fields["lon"])
            assert roads.to_segment(lat, lon, r["segment_id"]) <= ROAD_TOLERANCE_M, r
    trips = json.loads((tmp_path / "truth.json").read_text())["trips"]
    assert len(trips) == 5
    for trip in trips:  # leave at 03:00 JST, back at the depot
        assert trip["leave_depot"] == "2026-01-14T18:00:00Z"
        first, last = fixes[trip["plow"]][0], fixes[trip["plow"]][-1]
        for p in (first, last):
            assert roads.network.depot_xy == pytest.approx(
                roads.network.projection.to_xy(float(p.fields["lon"]), float(p.fields["lat"])),
                abs=ROAD_TOLERANCE_M,
            )


def test_leak_truth_matches_registers(registry: Registry, tmp_path: Path) -> None:
    sim = Simulation(scenario("watched-household-leak"), registry)
    decoded = ingest(sim, registry)
    assert not decoded.reasons
    write_truth(sim.world, tmp_path, sim.format)
    leaks = list(csv.DictReader(io.StringIO((tmp_path / "leaks.csv").read_text())))
    assert leaks == [
        {
            "meter": "M003",
            "kind": "leak",
            "start": "2026-02-03T01:00:00Z",
            "end": "2026-02-05T15:00:00Z",
            "rate_lph": "15.0",
        }
    ]
    leak_start = int(at("2026-02-03T10:00:00").timestamp())
    series = decoded.series("water_meter", "M003")
    assert len(series) == 4 * 24
    hourly = {
        r["hour_start"]: r
        for r in csv.DictReader(io.StringIO((tmp_path / "water_hourly.csv").read_text()))
        if r["meter"] == "M003"
    }
    dry_before = dry_after = 0
    for a, b in itertools.pairwise(series):
        use = float(b.fields["register_l"]) - float(a.fields["register_l"])
        t = a.time_ms // 1000
        truth = hourly[iso(t)]
        true_use = float(truth["use_l"]) + float(truth["leak_l"])
        assert abs(use - true_use) <= 1.0  # the register shows whole litres
        assert float(truth["register_l"]) == float(b.fields["register_l"])
        if use == 0:
            if t < leak_start:
                dry_before += 1
            else:
                dry_after += 1
        if t >= leak_start:
            assert use >= 15 - 1
    assert dry_before >= 4  # a healthy household has whole hours without water at night
    assert dry_after == 0  # the Kamstrup rule: no dry hour in 24 h → leak


def test_burst_and_supply_cut(registry: Registry) -> None:
    sim = Simulation(scenario("burst-main"), registry)
    decoded = ingest(sim, registry)
    assert not decoded.reasons
    m022 = {p.time_ms // 1000: p.fields for p in decoded.series("water_meter", "M022")}

    def use(hour: str) -> float:
        t = int(at(hour).timestamp())
        return float(m022[t + HOUR]["register_l"]) - float(m022[t]["register_l"])

    assert use("2026-02-10T15:00:00") >= 3000  # a full hour of burst
    assert use("2026-02-10T19:00:00") == 0  # valve closed, supply cut
    assert m022[int(at("2026-02-10T16:00:00").timestamp())]["alarm_burst"] is True
    assert m022[int(at("2026-02-10T20:00:00").timestamp())]["alarm_dry"] is True
    assert m022[int(at("2026-02-11T00:00:00").timestamp())]["alarm_dry"] is False
    # M012 is an LPWA meter: its cut shows up only in the next morning's batch.
    m012 = decoded.series("water_meter", "M012")
    assert any(p.fields["alarm_dry"] for p in m012)


def test_station_faults_on_a_clear_day(registry: Registry, tmp_path: Path) -> None:
    sim = Simulation(scenario("sensor-faults-clear-day"), registry)
    decoded = ingest(sim, registry)
    assert not decoded.reasons
    world = sim.world
    assert not world.storms
    write_truth(world, tmp_path, sim.format)
    faults = list(csv.DictReader(io.StringIO((tmp_path / "faults.csv").read_text())))
    injected = {(f["device"], f["fault"]) for f in faults if f["source"] == "scenario"}
    assert injected == {
        ("ST02", "spikes"),
        ("ST04", "spikes"),
        ("ST03", "frozen"),
        ("ST05", "dropout"),
        ("ST07", "poor_quality"),
        ("ST08", "battery_drain"),
    }
    snowfall = [
        float(r["snowfall_cm"])
        for r in csv.DictReader(io.StringIO((tmp_path / "snow_hourly.csv").read_text()))
    ]
    assert len(snowfall) == 240 and not any(snowfall)

    def window(sid: str, a: str, b: str) -> list[Point]:
        lo, hi = at(a).timestamp() * 1000, at(b).timestamp() * 1000
        return [p for p in decoded.series("snow_depth", sid) if lo <= p.time_ms < hi]

    frozen = window("ST03", "2026-02-18T03:00:00", "2026-02-18T12:00:00")
    assert len(frozen) == 54 and len({p.fields["distance_mm"] for p in frozen}) == 1
    assert (
        len(
            {
                p.fields["distance_mm"]
                for p in window("ST03", "2026-02-18T13:00:00", "2026-02-18T16:00:00")
            }
        )
        > 3
    )
    assert window("ST05", "2026-02-18T10:00:00", "2026-02-18T13:00:00") == []
    assert all(
        int(p.fields["quality"]) < 50
        for p in window("ST07", "2026-02-18T13:00:00", "2026-02-18T15:00:00")
    )
    spike_t = int(at("2026-02-18T09:20:00").timestamp())
    (spike,) = [p for p in decoded.series("snow_depth", "ST04") if p.time_ms // 1000 == spike_t]
    assert float(spike.fields["depth_cm"]) > world.stations["ST04"].sample(spike_t)[0] + 15
    st08 = decoded.series("snow_depth", "ST08")
    assert st08[0].fields["alarm_low_battery"] is False
    assert st08[-1].fields["alarm_low_battery"] is True


def test_a_burst_median_reading_scatters_less(registry: Registry) -> None:
    """``sensors.station_burst``: each reading the median of 5 measurements spread over
    its interval (docs/domain.md#report-interval) scatters around the true depth clearly
    less than one measurement, on the same clear day (median absolute error: the
    scenario's spikes stay whole)."""

    def scatter(burst: int) -> float:
        base = scenario("sensor-faults-clear-day")
        sc = base.model_copy(
            update={"sensors": base.sensors.model_copy(update={"station_burst": burst})}
        )
        sim = Simulation(sc, registry)
        decoded = ingest(sim, registry)
        truth = sim.world.stations["ST10"]  # ultrasonic, no injected fault
        errors = [
            float(p.fields["depth_cm"]) - truth.sample(p.time_ms // 1000)[0]
            for p in decoded.series("snow_depth", "ST10")
        ]
        assert len(errors) > 100
        return statistics.median(abs(e) for e in errors)  # a spike stays a spike

    one, five = scatter(1), scatter(5)
    assert one > 0.3 and five < 0.75 * one, (one, five)  # 0.71 → 0.43 cm


# --------------------------------------------------------------------------- running


def test_cli_writes_messages_and_truth(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="yukimizu")
    parser.add_argument("-c", "--config", type=Path)
    cli.add_parser(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "run.jsonl"
    argv = [
        "-c",
        str(SAMPLE_CONFIG),
        "simulate",
        str(SCENARIOS / "quiet-winter-day.toml"),
        "--out",
        str(out),
        "--truth",
        str(tmp_path / "truth"),
        "--format",
        "senml",
    ]
    args = parser.parse_args(argv)
    assert args.config == SAMPLE_CONFIG  # the subcommand does not clobber the main -c
    assert args.func(args) == 0
    captured = capsys.readouterr()
    lines = out.read_bytes().splitlines()
    assert f"{len(lines):,} messages" in captured.out
    first = json.loads(lines[0])
    assert first.keys() == {"time", "topic", "payload"}
    assert first["topic"].startswith("yukimizu/") and first["payload"].startswith("[")
    assert sorted(p.name for p in (tmp_path / "truth").iterdir()) == sorted(TRUTH_FILES)
    # Byte-identical on a second run.
    again = tmp_path / "again.jsonl"
    args = parser.parse_args([*argv[:4], "--out", str(again), "--format", "senml", "--quiet"])
    assert args.func(args) == 0
    assert again.read_bytes() == out.read_bytes()
    bad = parser.parse_args(["simulate", str(tmp_path / "missing.toml"), "--out", str(again)])
    assert bad.func(bad) == 2
    assert "scenario file not found" in capsys.readouterr().err


def test_pacing_and_progress(registry: Registry) -> None:
    sim = Simulation(scenario("burst-main"), registry)
    span = sim.end - sim.start
    sent: list[float] = []
    t0 = time.monotonic()
    summary = run(sim, lambda m: sent.append(time.monotonic()), speed=span / 0.4)
    assert summary.messages == len(sent)
    assert sent[-1] - t0 >= 0.3  # paced, not as fast as possible
    buf = io.StringIO()
    bar = Progress("x", sim.start, sim.end, stream=buf, interval_s=0.0)
    run(sim, lambda m: None, progress=bar)
    assert "messages" in buf.getvalue() and "%" in buf.getvalue()
    cfg = load_config(SAMPLE_CONFIG, environ={})
    future = scenario("quiet-winter-day").shifted_to(
        datetime.now().astimezone() + timedelta(days=1)
    )
    warning = warn_future(Simulation(future, registry), cfg, None)
    assert warning is not None and "--speed 1 --start now" in warning


def test_publish_over_mqtt_loses_nothing(
    registry: Registry, mosquitto: Mosquitto, tag: str
) -> None:
    cfg = load_config(
        SAMPLE_CONFIG,
        environ={
            "YUKIMIZU_MQTT__PORT": str(mosquitto.port),
            "YUKIMIZU_MQTT__TOPIC_PREFIX": f'"{tag}"',
        },
    )
    received: list[tuple[str, bytes]] = []
    lock = threading.Lock()
    subscribed = threading.Event()

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        with lock:
            received.append((msg.topic, bytes(msg.payload)))

    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"sub-{tag}")
    sub.on_message = on_message
    sub.on_subscribe = lambda *_a: subscribed.set()
    sub.on_connect = lambda c, *_a: c.subscribe(f"{tag}/#", qos=1)
    sub.connect(mosquitto.host, mosquitto.port)
    sub.loop_start()
    try:
        assert subscribed.wait(10)
        path = SCENARIOS / "burst-main.toml"
        summary = publish_scenario(cfg, path, Playback(progress=False), registry=registry)
        assert summary.published == summary.messages == 740
        wait_for(lambda: len(received) >= summary.messages, what="all messages")
        expected = [
            (m.topic, m.payload)
            for m in Simulation(
                load_scenario(path), registry, None, TopicPrefixes(native=tag)
            ).messages()
        ]
        assert sorted(received) == sorted(expected)
    finally:
        sub.loop_stop()
        sub.disconnect()


def test_warm_spell_melts_and_start_can_be_moved(registry: Registry) -> None:
    base: dict[str, Any] = {
        "name": "thaw",
        "seed": 3,
        "start": at("2026-03-10T00:00:00"),
        "end": at("2026-03-12T00:00:00"),
        "devices": {"meters": "none", "plows": "none"},
        "weather": {"mean_temp_c": -1.0, "initial_depth_cm": 80},
        "events": [
            {"type": "warm", "start": at("2026-03-10T06:00:00"), "duration_h": 30, "delta_c": 7},
            {"type": "storm", "start": at("2026-03-11T12:00:00"), "duration_h": 4,
             "total_cm": 5, "temp_c": 0.5},
        ],
    }  # fmt: skip
    sc = parse_scenario(base)
    world = Simulation(sc, registry).world
    st = world.stations["ST05"]
    hours = st.hours(world.start, world.end)
    assert max(h.air_temp_c for h in hours) > 7
    assert hours[35].depth_cm < st.depth_cm[0] - 5  # a thaw melts centimetres
    assert sum(h.snowfall_cm for h in hours) == pytest.approx(5.0, abs=0.01)
    # --start moves everything: the storm keeps its offset from the start.
    moved = sc.shifted_to(at("2026-01-05T00:00:00"))
    later = Simulation(moved, registry).world
    assert later.storms[0].start - later.start == world.storms[0].start - world.start
    with pytest.raises(ScenarioError, match="rate is only for fault = 'spikes'"):
        parse_scenario({**base, "events": [{"type": "fault", "device": "ST01",
                                            "fault": "frozen", "start": base["start"],
                                            "rate": 0.5}]})  # fmt: skip


def test_long_lpwa_backlog_is_split(registry: Registry) -> None:
    sc = parse_scenario(
        {
            "name": "outage",
            "seed": 4,
            "start": at("2026-01-01T00:00:00"),
            "end": at("2026-01-08T06:00:00"),
            "devices": {"stations": "none", "meters": ["M001"], "plows": "none"},
            "events": [
                {
                    "type": "fault",
                    "device": "M001",
                    "fault": "offline",
                    "start": at("2026-01-01T00:00:00"),
                    "duration_h": 140,
                },
            ],
        }
    )
    decoded = ingest(Simulation(sc, registry), registry, keep_messages=True)
    assert not decoded.reasons
    assert max(m.readings for m in decoded.messages) == 48  # two days per message
    assert max(len(m.payload) for m in decoded.messages) < 64 * 1024
    assert len(decoded.series("water_meter", "M001")) >= 6 * 24  # the backlog arrives late


def test_plows_work_their_zone_in_order(registry: Registry, tmp_path: Path) -> None:
    """The storm morning: each plow plows only its zone's segments, in the zone's
    order, the zone's vehicles each taking one contiguous run; truth.json says so."""
    sim = Simulation(scenario("storm-morning-fleet"), registry)
    world = sim.world
    write_truth(world, tmp_path, sim.format)
    doc = json.loads((tmp_path / "truth.json").read_text())
    assert sorted(doc["zones"]) == ["Z1", "Z2", "Z3"]
    first, second = world.dispatches
    for zid, zone in registry.zones.items():
        truth = doc["zones"][zid]
        assert truth["order"] == list(zone.segments)
        assert truth["plows"] == list(zone.plows)
        # the full dispatch: every segment of the zone, by the zone's own vehicles,
        # each vehicle's passes following the planned order
        night = next(p for p in truth["plowed"] if p["dispatched_at"] == iso(first.at))
        assert sorted(s["segment"] for s in night["segments"]) == sorted(zone.segments)
        runs: dict[str, list[str]] = defaultdict(list)
        for s in night["segments"]:
            assert s["plow"] in zone.plows, (zid, s)
            runs[s["plow"]].append(s["segment"])
        joined = [sid for plow in zone.plows for sid in runs[plow]]
        assert joined == list(zone.segments), zid
    # 08:00, P01 and P02 on the priority-1 streets: each only on its own zone's streets
    morning = [t for t in world.all_trips() if t.dispatched_at == second.at]
    assert {t.plow for t in morning} == {"P01", "P02"}
    for trip in morning:
        zone = next(z for z in registry.zones.values() if trip.plow in z.plows)
        assert set(trip.segments) <= set(zone.segments)
        positions = [zone.segments.index(s) for s in trip.segments]
        assert positions == sorted(positions)
    assert {s for t in morning for s in t.segments} == set(second.segments)
    rows = list(csv.DictReader(io.StringIO((tmp_path / "plow_segments.csv").read_text())))
    assert all(r["zone"] == registry.routes[r["segment_id"]].zone for r in rows)


def test_segments_of_a_zone_without_its_vehicle_go_to_the_least_loaded_plow(
    registry: Registry,
) -> None:
    """Only P01 (zone Z1) out for the whole town: Z1 in its order first, then the other
    zones' segments (応援) in their zones' order."""
    network = RoadNetwork(registry.routes, registry.depot)
    ((plow, segs),) = assign_segments(network, registry.zones, ["P01"], sorted(registry.routes))
    assert plow == "P01"
    z1, z2, z3 = (registry.zones[z].segments for z in ("Z1", "Z2", "Z3"))
    assert segs == z1 + z2 + z3
    two = dict(assign_segments(network, registry.zones, ["P01", "P04"], sorted(registry.routes)))
    assert two["P01"][: len(z1)] == z1 and two["P04"][: len(z3)] == z3
    assert sorted(two["P01"] + two["P04"]) == sorted(registry.routes)
