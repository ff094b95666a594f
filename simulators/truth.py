"""Ground truth beside a run, for scoring detection (written from the world, not the stream).

Files in the truth directory (times ISO 8601 UTC; intervals are [start, end)):

``truth.json``
    The scenario, storms (with each station's true total), dispatches and plow trips
    (zone, segments in driving order, plowed/transit km, idle stops), the work zones
    (vehicles, plowing order, and per dispatch the order and times their segments
    were really plowed in), leaks, every fault (injected by the
    scenario or drawn at random: spikes, dropouts, GPS gaps and invalid fixes),
    meters (profile, register unit, digits, rollover) and conventions.
``snow_hourly.csv``
    ``station,hour_start,snowfall_cm,new_snow_cm,depth_cm,air_temp_c``: ``snowfall_cm``
    is the fresh snow that fell in the hour (a storm's hours add up to its total);
    ``new_snow_cm`` is the JMA hourly new snow a perfect sensor would give (positive
    change of the true depth, smaller because fresh snow settles); ``depth_cm`` the true
    depth at the end of the hour.
``water_hourly.csv``
    ``meter,hour_start,use_l,leak_l,reverse_l,register_l``: household use, leak/burst
    volume and backflow in the hour; the register the meter shows at the hour's end
    (litres, after stuck/swap/rollover).
``leaks.csv``
    ``meter,kind,start,end,rate_lph``: true leak and burst intervals.
``plow_segments.csv``
    ``plow,segment_id,start,end,direction,length_m,zone``: blade-down passes (``zone``:
    the segment's work zone, empty without zones).
``faults.csv``
    ``device,kind,fault,start,end,source,detail``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson

from sensors.models import QUALITY_POOR_BELOW
from simulators.fleet import Trip
from simulators.households import MeterTruth
from simulators.snow_station import LOW_BATTERY_V
from simulators.timeutil import iso
from simulators.weather import StationTruth, Storm
from simulators.world import FaultRecord, World

__all__ = ["TRUTH_FILES", "truth_document", "write_truth"]

TRUTH_FILES = (
    "truth.json",
    "snow_hourly.csv",
    "water_hourly.csv",
    "leaks.csv",
    "plow_segments.csv",
    "faults.csv",
)


def _csv(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def _trip_doc(world: World, trip: Trip) -> dict[str, Any]:
    proj = world.network.projection if world.network else None
    idles = []
    for stop in trip.idles:
        lon, lat = proj.to_lonlat(stop.x, stop.y) if proj else (0.0, 0.0)
        idles.append(
            {
                "start": iso(int(stop.start)),
                "end": iso(int(stop.end)),
                "lat": round(lat, 6),
                "lon": round(lon, 6),
            }
        )
    zone = next((z.id for z in world.registry.zones.values() if trip.plow in z.plows), None)
    return {
        "plow": trip.plow,
        "zone": zone,
        "dispatched_at": iso(trip.dispatched_at),
        "leave_depot": iso(trip.start),
        "back_at_depot": iso(trip.end),
        "segments": list(trip.segments),
        "plowed_km": round(trip.distance_m(True) / 1000, 3),
        "transit_km": round(trip.distance_m(False) / 1000, 3),
        "idle": idles,
    }


def truth_document(world: World, fmt: str) -> dict[str, Any]:
    """Everything ``truth.json`` says (see the module docstring)."""
    reg = world.registry
    return {
        "scenario": _scenario_doc(world, fmt),
        "conventions": {
            "times": "ISO 8601 UTC; intervals are [start, end)",
            "quality_poor_below": QUALITY_POOR_BELOW,
            "low_battery_v": LOW_BATTERY_V,
            "new_snow": "JMA: hourly positive difference of depth (no deadband on the truth)",
        },
        "storms": [_storm_doc(s) for s in world.storms],
        "stations": {sid: _station_doc(world, st) for sid, st in sorted(world.stations.items())},
        "dispatches": [
            {
                "at": iso(d.at),
                "plows": list(d.plows),
                "segments": len(d.segments),
                "source": d.source,
                "new_snow_cm": d.new_snow_cm,
            }
            for d in world.dispatches
        ],
        "trips": [_trip_doc(world, t) for p in sorted(world.trips) for t in world.trips[p]],
        "meters": {mid: _meter_doc(world, mid, mt) for mid, mt in sorted(world.meters.items())},
        "leaks": [
            {
                "meter": x.meter,
                "kind": x.kind,
                "start": iso(x.start),
                "end": iso(x.end),
                "rate_lph": x.rate_lph,
            }
            for x in world.leaks
        ],
        "faults": [_fault_doc(f) for f in world.faults],
        "zones": _zones_doc(world),
        "registry": {
            "stations": len(reg.stations),
            "meters": len(reg.meters),
            "plows": len(reg.plows),
            "segments": len(reg.routes),
        },
        "files": list(TRUTH_FILES),
    }


def _zones_doc(world: World) -> dict[str, Any]:
    """Each work zone: its vehicles and plowing order, and per dispatch the real order
    of its segments' first blade-down passes with their times."""
    out: dict[str, Any] = {}
    trips = world.all_trips()
    for zid, zone in sorted(world.registry.zones.items()):
        members = set(zone.segments)
        plowed = []
        for d in world.dispatches:
            first: dict[str, tuple[int, int, str]] = {}
            for trip in trips:
                if trip.dispatched_at != d.at:
                    continue
                for p in trip.passes:
                    if p.segment in members and p.segment not in first:
                        first[p.segment] = (p.start, p.end, p.plow)
            if first:
                plowed.append(
                    {
                        "dispatched_at": iso(d.at),
                        "segments": [
                            {"segment": sid, "start": iso(a), "end": iso(b), "plow": plow}
                            for sid, (a, b, plow) in sorted(first.items(), key=lambda kv: kv[1])
                        ],
                    }
                )
        out[zid] = {
            "name": zone.name,
            "contractor": zone.contractor,
            "plows": list(zone.plows),
            "order": list(zone.segments),
            "planned_order": zone.planned,
            "plowed": plowed,
        }
    return out


def _scenario_doc(world: World, fmt: str) -> dict[str, Any]:
    sc = world.scenario
    return {
        "name": sc.name,
        "description": sc.description,
        "seed": sc.seed,
        "start": iso(world.start),
        "end": iso(world.end),
        "timezone": sc.timezone,
        "format": fmt,
    }


def _storm_doc(s: Storm) -> dict[str, Any]:
    return {
        "index": s.index,
        "start": iso(s.start),
        "end": iso(s.end),
        "total_cm": s.total_cm,
        "profile": s.profile,
        "temp_c": s.temp_c,
        "stations": sorted(s.stations) if s.stations is not None else "all",
        "spread": s.spread,
        "source": s.source,
    }


def _station_doc(world: World, st: StationTruth) -> dict[str, Any]:
    """A station's snow totals over the run, from its true hours."""
    hours = st.hours(world.start, world.end)
    return {
        "sensor_type": st.station.sensor_type,
        "mount_height_cm": st.station.mount_height_cm,
        "initial_depth_cm": round(st.depth_cm[0], 2),
        "max_depth_cm": round(max(h.depth_cm for h in hours), 2) if hours else None,
        "final_depth_cm": round(hours[-1].depth_cm, 2) if hours else None,
        "snowfall_cm": round(sum(h.snowfall_cm for h in hours), 2),
        "new_snow_cm": round(sum(h.new_snow_cm for h in hours), 2),
        "storm_totals_cm": {str(k): v for k, v in sorted(st.storm_totals.items())},
    }


def _meter_doc(world: World, mid: str, mt: MeterTruth) -> dict[str, Any]:
    return {
        "profile": mt.profile,
        "residents": mt.residents,
        "watched": mt.meter.watched,
        "lpwa": mt.meter.dev_eui is not None,
        "register_unit": mt.meter.register_unit,
        "register_digits": mt.meter.register_digits,
        "rollover_l": mt.meter.rollover_l,
        "swaps": [iso(t) for t in world.meter_swaps.get(mid, [])],
        "offline": [[iso(a), iso(b)] for a, b in world.meter_offline.get(mid, [])],
    }


def _fault_doc(f: FaultRecord) -> dict[str, Any]:
    return {
        "device": f.device,
        "kind": f.kind,
        "fault": f.fault,
        "start": iso(f.start),
        "end": iso(f.end),
        "source": f.source,
        "detail": f.detail,
    }


def write_truth(world: World, directory: Path, fmt: str) -> list[Path]:
    """Write the ground-truth files; returns their paths. Deterministic bytes."""
    directory.mkdir(parents=True, exist_ok=True)
    files: dict[str, str | bytes] = {}
    files["truth.json"] = (
        orjson.dumps(truth_document(world, fmt), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
        + b"\n"
    )
    files["snow_hourly.csv"] = _csv(
        ("station", "hour_start", "snowfall_cm", "new_snow_cm", "depth_cm", "air_temp_c"),
        (
            (sid, iso(h.start), h.snowfall_cm, h.new_snow_cm, h.depth_cm, h.air_temp_c)
            for sid, st in sorted(world.stations.items())
            for h in st.hours(world.start, world.end)
        ),
    )
    water_rows = []
    for mid, mt in sorted(world.meters.items()):
        for k in range(len(mt.use_l)):
            a = mt.boundary(k)
            if a < world.start or a + 3600 > world.end:
                continue
            water_rows.append(
                (mid, iso(a), mt.use_l[k], mt.leak_l[k], mt.reverse_l[k], mt.register_l[k + 1])
            )
    files["water_hourly.csv"] = _csv(
        ("meter", "hour_start", "use_l", "leak_l", "reverse_l", "register_l"), water_rows
    )
    files["leaks.csv"] = _csv(
        ("meter", "kind", "start", "end", "rate_lph"),
        ((x.meter, x.kind, iso(x.start), iso(x.end), x.rate_lph) for x in world.leaks),
    )
    passes = sorted(
        (p for trips in world.trips.values() for t in trips for p in t.passes),
        key=lambda p: (p.start, p.plow),
    )
    reg = world.registry
    files["plow_segments.csv"] = _csv(
        ("plow", "segment_id", "start", "end", "direction", "length_m", "zone"),
        (
            (
                p.plow,
                p.segment,
                iso(p.start),
                iso(p.end),
                "forward" if p.forward else "reverse",
                p.length_m,
                reg.routes[p.segment].zone or "",
            )
            for p in passes
        ),
    )
    files["faults.csv"] = _csv(
        ("device", "kind", "fault", "start", "end", "source", "detail"),
        (
            (f.device, f.kind, f.fault, iso(f.start), iso(f.end), f.source, f.detail)
            for f in world.faults
        ),
    )
    out = []
    for name in TRUTH_FILES:
        path = directory / name
        data = files[name]
        path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
        out.append(path)
    return out
