"""Build the simulated world of a scenario: everything that is *true*.

The world is computed up front and is small (arrays per station and meter, a plan
per plow trip); devices then observe it lazily (:mod:`simulators.stream`). Because
the truth does not depend on how the message stream is consumed, the ground truth
can be written before, during or after a run and always describes all of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sensors.registry import Kind, Registry, Station
from simulators.fleet import Driving, Trip, plan_dispatch
from simulators.households import FlowChange, Household, MeterTruth, simulate_meter
from simulators.roads import RoadNetwork
from simulators.scenario import (
    METER_FAULTS,
    PLOW_FAULTS,
    STATION_FAULTS,
    BurstEvent,
    DeviceSelection,
    DispatchEvent,
    FaultEvent,
    LeakEvent,
    Scenario,
    ScenarioError,
    StormEvent,
    WarmEvent,
)
from simulators.seeding import geometric_gap, rng_for
from simulators.timeutil import DAY, HOUR
from simulators.weather import (
    STEP_S,
    StationTruth,
    Storm,
    TownWeather,
    climate_storms,
    resolve_storms,
    simulate_station,
)

__all__ = [
    "DispatchRecord",
    "FaultRecord",
    "LeakRecord",
    "StationFaults",
    "World",
    "build_world",
]

Interval = tuple[int, int]


@dataclass(frozen=True, slots=True)
class FaultRecord:
    device: str
    kind: Kind
    fault: str
    start: int
    end: int
    source: Literal["scenario", "random"]
    detail: str = ""


@dataclass(frozen=True, slots=True)
class LeakRecord:
    meter: str
    kind: Literal["leak", "burst"]
    start: int
    end: int
    rate_lph: float


@dataclass(frozen=True, slots=True)
class DispatchRecord:
    at: int
    plows: tuple[str, ...]
    segments: tuple[str, ...]
    source: Literal["scenario", "auto"]
    new_snow_cm: float | None = None  # what triggered an automatic dispatch


@dataclass
class StationFaults:
    """What goes wrong with one station's sensor, by sample time."""

    spikes: set[int] = field(default_factory=set)
    dropouts: list[Interval] = field(default_factory=list)
    frozen: list[Interval] = field(default_factory=list)
    poor_quality: list[Interval] = field(default_factory=list)
    battery_drain: list[Interval] = field(default_factory=list)


@dataclass
class World:
    scenario: Scenario
    registry: Registry
    start: int
    end: int
    utc_offset_s: int
    stations: dict[str, StationTruth]
    station_faults: dict[str, StationFaults]
    meters: dict[str, MeterTruth]
    meter_offline: dict[str, list[Interval]]
    meter_swaps: dict[str, list[int]]
    network: RoadNetwork | None
    trips: dict[str, list[Trip]]
    plow_gaps: dict[str, list[Interval]]
    plow_invalid: dict[str, list[Interval]]
    storms: list[Storm]
    dispatches: list[DispatchRecord]
    leaks: list[LeakRecord]
    faults: list[FaultRecord]

    @property
    def seed(self) -> int:
        return self.scenario.seed

    def all_trips(self) -> list[Trip]:
        """Every plow trip, in start order."""
        return sorted((t for trips in self.trips.values() for t in trips), key=lambda t: t.start)

    def sample_times(self, interval_s: int) -> range:
        """Sample times in [start, end) on a grid anchored at the start."""
        return range(self.start, self.end, interval_s)


def _select(
    what: str, selection: DeviceSelection, known: Sequence[str], source: str
) -> tuple[str, ...]:
    if selection == "all":
        return tuple(sorted(known))
    if selection == "none":
        return ()
    missing = [d for d in selection if d not in known]
    if missing:
        raise ScenarioError(f"{source}: unknown {what} {missing} (not in the device registry)")
    return tuple(selection)


def _utc_offset(scenario: Scenario) -> int:
    try:
        zone = ZoneInfo(scenario.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScenarioError(f"unknown timezone {scenario.timezone!r}") from None
    offset = scenario.start.astimezone(zone).utcoffset()
    return int((offset or timedelta()).total_seconds())


def _end(ev_start: int, duration_h: float | None, scenario_end: int) -> int:
    return scenario_end if duration_h is None else ev_start + round(duration_h * HOUR)


@dataclass(frozen=True, slots=True)
class _Devices:
    """The registry's devices a scenario selects, by kind."""

    stations: tuple[str, ...]
    meters: tuple[str, ...]
    plows: tuple[str, ...]

    def of_kind(self, kind: Kind) -> tuple[str, ...]:
        return {"snow": self.stations, "water": self.meters, "plow": self.plows}[kind]


@dataclass
class _EventEffects:
    """What a scenario's leak, burst and fault events do to its meters and plows."""

    changes: dict[str, list[FlowChange]]
    offline: dict[str, list[Interval]]
    swaps: dict[str, list[int]]
    leaks: list[LeakRecord]
    plow_gaps: dict[str, list[Interval]]
    plow_invalid: dict[str, list[Interval]]

    @classmethod
    def none(cls, devices: _Devices) -> _EventEffects:
        return cls(
            changes={m: [] for m in devices.meters},
            offline={m: [] for m in devices.meters},
            swaps={m: [] for m in devices.meters},
            leaks=[],
            plow_gaps={p: [] for p in devices.plows},
            plow_invalid={p: [] for p in devices.plows},
        )


def build_world(scenario: Scenario, registry: Registry) -> World:
    """Resolve a scenario against the registry and simulate the truth."""
    start = int(scenario.start.timestamp())
    end = int(scenario.end.timestamp())
    utc_offset = _utc_offset(scenario)
    devices = _selected_devices(scenario, registry)
    # Every fault, random or injected, in the order it is found; sorted at the end.
    faults: list[FaultRecord] = []
    storms = _storms(scenario, registry, start=start, end=end, utc_offset=utc_offset)
    station_truth, station_faults = _simulate_stations(
        scenario,
        registry,
        devices.stations,
        storms,
        start=start,
        end=end,
        utc_offset=utc_offset,
        faults=faults,
    )
    effects = _apply_events(
        scenario, registry, devices, station_faults, start=start, end=end, faults=faults
    )
    meter_truth = {
        mid: _simulate_meter(
            scenario,
            registry,
            mid,
            effects.changes[mid],
            start=start,
            end=end,
            utc_offset=utc_offset,
        )
        for mid in devices.meters
    }
    dispatches = _dispatches(
        scenario,
        registry,
        plows=devices.plows,
        storms=storms,
        start=start,
        end=end,
        utc_offset=utc_offset,
    )
    network, trips = _plan_trips(
        scenario, registry, devices.plows, dispatches, end=end, faults=faults
    )
    faults.sort(key=lambda f: (f.start, f.device, f.fault, f.end))
    effects.leaks.sort(key=lambda x: (x.start, x.meter))
    return World(
        scenario=scenario,
        registry=registry,
        start=start,
        end=end,
        utc_offset_s=utc_offset,
        stations=station_truth,
        station_faults=station_faults,
        meters=meter_truth,
        meter_offline=effects.offline,
        meter_swaps=effects.swaps,
        network=network,
        trips=trips,
        plow_gaps=effects.plow_gaps,
        plow_invalid=effects.plow_invalid,
        storms=storms,
        dispatches=dispatches,
        leaks=effects.leaks,
        faults=faults,
    )


def _selected_devices(scenario: Scenario, registry: Registry) -> _Devices:
    sel = scenario.devices
    devices = _Devices(
        stations=_select("stations", sel.stations, list(registry.stations), "devices.stations"),
        meters=_select("meters", sel.meters, list(registry.meters), "devices.meters"),
        plows=_select("plows", sel.plows, list(registry.plows), "devices.plows"),
    )
    for mid in scenario.meter_settings:
        if mid not in registry.meters:
            raise ScenarioError(f"meter_settings.{mid}: unknown meter")
    return devices


# ---------------------------------------------------------------- weather and snow


def _storms(
    scenario: Scenario, registry: Registry, *, start: int, end: int, utc_offset: int
) -> list[Storm]:
    """The scenario's storm events, then the climate's random storms."""
    storm_events = [e for e in scenario.events if isinstance(e, StormEvent)]
    for n, storm_ev in enumerate(storm_events):
        if storm_ev.stations not in ("all", "none"):
            _select("stations", storm_ev.stations, list(registry.stations), f"storm {n + 1}")
    storms = resolve_storms(storm_events)
    if scenario.climate is not None:
        storms += climate_storms(
            scenario.climate,
            scenario.weather,
            start=start,
            end=end,
            seed=scenario.seed,
            utc_offset_s=utc_offset,
            first_index=len(storms),
        )
    return storms


def _simulate_stations(
    scenario: Scenario,
    registry: Registry,
    stations: tuple[str, ...],
    storms: list[Storm],
    *,
    start: int,
    end: int,
    utc_offset: int,
    faults: list[FaultRecord],
) -> tuple[dict[str, StationTruth], dict[str, StationFaults]]:
    """Each station's true snowpack and its random faults (appended to ``faults``)."""
    station_truth: dict[str, StationTruth] = {}
    station_faults: dict[str, StationFaults] = {}
    if not stations:
        return station_truth, station_faults
    seed = scenario.seed
    warms = [e for e in scenario.events if isinstance(e, WarmEvent)]
    t0 = start - start % HOUR
    steps = -(-(end - t0) // STEP_S) + HOUR // STEP_S
    town = TownWeather.build(
        scenario.weather,
        storms,
        warms,
        t0=t0,
        steps=steps,
        seed=seed,
        utc_offset_s=utc_offset,
    )
    for sid in stations:
        station_truth[sid] = simulate_station(
            registry.stations[sid], town, storms, scenario.weather.initial_depth_cm, seed
        )
        station_faults[sid] = _random_station_faults(
            scenario, registry.stations[sid], start, end, faults
        )
    return station_truth, station_faults


# ---------------------------------------------------------------- events per device


def _apply_events(
    scenario: Scenario,
    registry: Registry,
    devices: _Devices,
    station_faults: dict[str, StationFaults],
    *,
    start: int,
    end: int,
    faults: list[FaultRecord],
) -> _EventEffects:
    """Check every leak, burst and fault event and record what it does (dispatches and
    weather events are handled elsewhere); injected faults are appended to ``faults``."""
    effects = _EventEffects.none(devices)
    for n, ev in enumerate(scenario.events, start=1):
        where = f"events[{n}] ({ev.type})"
        if isinstance(ev, LeakEvent | BurstEvent):
            _leak_event(ev, where, effects, start=start, end=end)
        elif isinstance(ev, FaultEvent):
            kind = _fault_kind(ev, where, registry, devices)
            s = int(ev.start.timestamp())
            e = s if ev.fault == "swap" else _end(s, ev.duration_h, end)
            if s >= end or e < start or (ev.fault == "swap" and s < start):
                continue  # outside the scenario's time range (e.g. a week cut from a season)
            detail = _fault_detail(ev)
            if kind == "snow":
                _station_fault(ev, station_faults[ev.device], n=n, s=s, e=e, scenario=scenario)
            elif kind == "water":
                detail = _meter_fault(ev, s, e, effects, seed=scenario.seed, detail=detail)
            else:
                gaps = effects.plow_gaps if ev.fault == "gps_gap" else effects.plow_invalid
                gaps[ev.device].append((s, e))
            faults.append(FaultRecord(ev.device, kind, ev.fault, s, e, "scenario", detail))
    return effects


def _leak_event(
    ev: LeakEvent | BurstEvent, where: str, effects: _EventEffects, *, start: int, end: int
) -> None:
    if ev.meter not in effects.changes:
        raise ScenarioError(f"{where}: meter {ev.meter!r} is not in this scenario")
    s = int(ev.start.timestamp())
    e = _end(s, ev.duration_h, end)
    if s >= end or e <= start:
        return
    effects.changes[ev.meter].append(FlowChange(ev.type, s, e, rate_lph=ev.rate_lph))
    effects.leaks.append(LeakRecord(ev.meter, ev.type, s, e, ev.rate_lph))


def _fault_kind(ev: FaultEvent, where: str, registry: Registry, devices: _Devices) -> Kind:
    """The faulty device's kind, once the device and the fault are known to fit."""
    found = registry.lookup(ev.device)
    if found is None:
        raise ScenarioError(f"{where}: unknown device {ev.device!r}")
    kind, _ = found
    allowed = {"snow": STATION_FAULTS, "water": METER_FAULTS, "plow": PLOW_FAULTS}[kind]
    if ev.fault not in allowed:
        raise ScenarioError(
            f"{where}: {ev.device} is a {kind} device; its faults are {sorted(allowed)}"
        )
    if ev.device not in devices.of_kind(kind):
        raise ScenarioError(f"{where}: device {ev.device!r} is not in this scenario")
    return kind


def _meter_fault(
    ev: FaultEvent, s: int, e: int, effects: _EventEffects, *, seed: int, detail: str
) -> str:
    """Record a meter fault over [s, e); returns the fault's detail for the truth (a swap
    without a register value draws one, and the truth says which)."""
    if ev.fault == "offline":
        effects.offline[ev.device].append((s, e))
        return detail
    if ev.fault == "swap":
        effects.swaps[ev.device].append(s)
    after = ev.register_after_l
    if ev.fault == "swap" and after is None:
        after = round(rng_for(seed, "swap", ev.device, str(s)).uniform(0, 30), 1)
        detail = f"register_after_l={after}"
    effects.changes[ev.device].append(
        FlowChange(
            ev.fault,  # type: ignore[arg-type]  # a meter fault: checked by _fault_kind
            s,
            e,
            rate_lph=ev.rate_lph or 0.0,
            flag=ev.flag,
            register_after_l=after or 0.0,
        )
    )
    return detail


# ---------------------------------------------------------------- meters


def _simulate_meter(
    scenario: Scenario,
    registry: Registry,
    mid: str,
    changes: list[FlowChange],
    *,
    start: int,
    end: int,
    utc_offset: int,
) -> MeterTruth:
    ms = scenario.meter_settings.get(mid)
    return simulate_meter(
        registry.meters[mid],
        start=start,
        end=end,
        utc_offset_s=utc_offset,
        seed=scenario.seed,
        changes=changes,
        household=Household(ms.profile, ms.residents, ms.register_start_l) if ms else Household(),
    )


# ---------------------------------------------------------------- plows


def _plan_trips(
    scenario: Scenario,
    registry: Registry,
    plows: tuple[str, ...],
    dispatches: list[DispatchRecord],
    *,
    end: int,
    faults: list[FaultRecord],
) -> tuple[RoadNetwork | None, dict[str, list[Trip]]]:
    """The road network (None without dispatches) and each plow's trips; the trips'
    random GPS gaps and invalid fixes are appended to ``faults``."""
    trips: dict[str, list[Trip]] = {p: [] for p in plows}
    if not dispatches:
        return None, trips
    network = RoadNetwork(registry.routes, registry.depot)
    busy: dict[str, int] = {}
    sensors = scenario.sensors
    driving = Driving(
        scenario.seed,
        sensors.idle_probability,
        sensors.gps_gap_rate,
        sensors.gps_invalid_rate,
        scenario.intervals.plow_fix_s,
    )
    for d in dispatches:
        for trip in plan_dispatch(
            network,
            at=d.at,
            plows=d.plows,
            segment_ids=d.segments,
            busy_until=busy,
            zones=registry.zones,
            driving=driving,
        ):
            if trip.start >= end:
                continue
            trips[trip.plow].append(trip)
            busy[trip.plow] = trip.end
            for a, b in trip.gps_gaps:
                faults.append(FaultRecord(trip.plow, "plow", "gps_gap", a, b, "random"))
            for a, b in trip.gps_invalid:
                faults.append(FaultRecord(trip.plow, "plow", "invalid_fix", a, b, "random"))
    return network, trips


def _fault_detail(ev: FaultEvent) -> str:
    parts = []
    for key in ("rate", "rate_lph", "flag", "register_after_l"):
        value = getattr(ev, key)
        if value is not None:
            parts.append(f"{key}={value}")
    return " ".join(parts)


def _random_station_faults(
    scenario: Scenario, station: Station, start: int, end: int, faults: list[FaultRecord]
) -> StationFaults:
    """Background spikes and short dropouts, drawn up front so the truth lists them."""
    sf = StationFaults()
    rng = rng_for(scenario.seed, "station", station.id, "random-faults")
    interval = scenario.intervals.station_s
    n = len(range(start, end, interval))
    sensors = scenario.sensors
    k = -1
    while True:
        k += geometric_gap(rng, sensors.spike_rate)
        if k >= n:
            break
        t = start + k * interval
        sf.spikes.add(t)
        faults.append(FaultRecord(station.id, "snow", "spike", t, t, "random"))
    k = -1
    while True:
        k += geometric_gap(rng, sensors.dropout_rate)
        if k >= n:
            break
        length = rng.randint(1, sensors.dropout_max_readings)
        a = start + k * interval
        b = min(end, a + length * interval)
        sf.dropouts.append((a, b))
        faults.append(FaultRecord(station.id, "snow", "dropout", a, b, "random"))
        k += length
    return sf


def _station_fault(
    ev: FaultEvent, sf: StationFaults, *, n: int, s: int, e: int, scenario: Scenario
) -> None:
    seed = scenario.seed
    if ev.fault == "spikes":
        interval = scenario.intervals.station_s
        first = int(scenario.start.timestamp())
        t = first + -(-(s - first) // interval) * interval
        if ev.duration_h is None:
            sf.spikes.add(t)
            return
        rng = rng_for(seed, "fault", str(n), ev.device)
        rate = ev.rate if ev.rate is not None else 0.2
        while t < e:
            if rng.random() < rate:
                sf.spikes.add(t)
            t += interval
        return
    target = {
        "dropout": sf.dropouts,
        "frozen": sf.frozen,
        "poor_quality": sf.poor_quality,
        "battery_drain": sf.battery_drain,
    }[ev.fault]
    target.append((s, e))
    target.sort()


def _dispatches(
    scenario: Scenario,
    registry: Registry,
    *,
    plows: tuple[str, ...],
    storms: Sequence[Storm],
    start: int,
    end: int,
    utc_offset: int,
) -> list[DispatchRecord]:
    out: list[DispatchRecord] = []
    all_segments = tuple(sorted(registry.routes))
    for n, ev in enumerate(scenario.events, start=1):
        if not isinstance(ev, DispatchEvent):
            continue
        where = f"events[{n}] (dispatch)"
        chosen = _select("plows", ev.plows, plows, where)
        if not chosen:
            raise ScenarioError(f"{where}: no plows")
        segs = all_segments if ev.segments == "all" else tuple(ev.segments)
        unknown = [s for s in segs if s not in registry.routes]
        if unknown:
            raise ScenarioError(f"{where}: unknown route segments {unknown}")
        at = int(ev.at.timestamp())
        if start <= at < end:
            out.append(DispatchRecord(at, chosen, segs, "scenario"))
    auto = scenario.auto_dispatch
    if auto is not None:
        chosen = _select("plows", auto.plows, plows, "auto_dispatch.plows")
        segs = all_segments if auto.segments == "all" else tuple(auto.segments)
        unknown = [s for s in segs if s not in registry.routes]
        if unknown:
            raise ScenarioError(f"auto_dispatch.segments: unknown route segments {unknown}")
        at_s = auto.at.hour * HOUR + auto.at.minute * 60 + auto.at.second
        day = (start + utc_offset) // DAY
        while True:
            t = day * DAY - utc_offset + at_s
            day += 1
            if t >= end:
                break
            if t < start:
                continue
            fallen = sum(s.share(t - DAY, t) * s.total_cm for s in storms)
            if fallen >= auto.threshold_cm and chosen:
                out.append(DispatchRecord(t, chosen, segs, "auto", round(fallen, 1)))
    out.sort(key=lambda d: d.at)
    return out
