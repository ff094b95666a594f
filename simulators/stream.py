"""The message stream of a scenario: every device's messages merged in time order.

Each device is a lazy generator (its observations of the world, encoded for the
wire); :func:`heapq.merge` interleaves them, so a whole season streams in constant
memory. Ties are broken by device order (stations, meters, plows, each by id), so
the same scenario, seed and format always give the same byte stream.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from sensors.registry import Kind, Meter, Plow, Registry, Station
from simulators.formats import DeviceWire, Wired, WireFormat, device_wire, fallback_notes
from simulators.plow_gps import plow_fixes
from simulators.scenario import Scenario, load_scenario
from simulators.snow_station import station_readings
from simulators.water_meter import meter_uploads
from simulators.world import World, build_world

__all__ = ["SimMessage", "Simulation", "TopicPrefixes"]


@dataclass(frozen=True, slots=True)
class SimMessage:
    """One MQTT message as a device (or its network server) would publish it."""

    time: int  # scenario time it is sent, Unix seconds UTC
    topic: str
    payload: bytes
    kind: Kind
    device: str
    readings: int  # distinct readings it carries (0: invalid GPS fix, LoRaWAN retransmission)


@dataclass(frozen=True, slots=True)
class TopicPrefixes:
    native: str = "yukimizu"  # {native}/{kind}/{device}
    chirpstack: str = ""  # prepended to application/...
    ttn: str = ""  # prepended to v3/...


_Item = tuple[int, int, int, SimMessage]


class Simulation:
    """A scenario resolved against the device registry, ready to stream or score."""

    def __init__(
        self,
        scenario: Scenario,
        registry: Registry,
        fmt: WireFormat | None = None,
        prefixes: TopicPrefixes | None = None,
    ) -> None:
        self.scenario = scenario
        self.world: World = build_world(scenario, registry)
        self.format: WireFormat = fmt or scenario.format
        self.prefixes = prefixes or TopicPrefixes()
        self.notes = fallback_notes(self.format, self._devices())

    @classmethod
    def load(
        cls,
        path: Path,
        registry: Registry,
        fmt: WireFormat | None = None,
        prefixes: TopicPrefixes | None = None,
    ) -> Simulation:
        return cls(load_scenario(path), registry, fmt, prefixes)

    @property
    def start(self) -> int:
        return self.world.start

    @property
    def end(self) -> int:
        return self.world.end

    def _devices(self) -> list[tuple[Kind, Station | Meter | Plow]]:
        reg = self.world.registry
        out: list[tuple[Kind, Station | Meter | Plow]] = []
        out += [("snow", reg.stations[s]) for s in sorted(self.world.stations)]
        out += [("water", reg.meters[m]) for m in sorted(self.world.meters)]
        out += [("plow", reg.plows[p]) for p in sorted(self.world.trips)]
        return out

    def _wire(self, kind: Kind, device: Station | Meter | Plow) -> DeviceWire:
        p = self.prefixes
        lora = p.chirpstack if self.format == "chirpstack" else p.ttn
        return device_wire(
            self.format,
            kind,
            device,
            seed=self.scenario.seed,
            topic_prefix=p.native,
            lorawan_prefix=lora,
            retransmit_rate=self.scenario.sensors.lorawan_retransmit_rate,
        )

    def messages(self) -> Iterator[SimMessage]:
        """A fresh, deterministic stream of every message in time order."""
        streams: list[Iterator[_Item]] = []
        for order, (kind, device) in enumerate(self._devices()):
            wire = self._wire(kind, device)
            dev_id = device.id
            if kind == "snow":
                gen = self._stations(dev_id, wire)
            elif kind == "water":
                gen = self._meters(dev_id, wire)
            else:
                gen = self._plows(dev_id, wire)
            streams.append(_tagged(order, kind, dev_id, gen))
        for item in heapq.merge(*streams):
            yield item[3]

    def _stations(self, sid: str, wire: DeviceWire) -> Iterator[list[Wired]]:
        for r in station_readings(self.world, sid):
            yield wire.encode(r["time"], [r])

    def _meters(self, mid: str, wire: DeviceWire) -> Iterator[list[Wired]]:
        swaps = sorted(self.world.meter_swaps.get(mid, ()))
        last = self.world.start
        for t, readings in meter_uploads(self.world, mid):
            if any(last < s <= t for s in swaps):
                wire.rejoin()  # a new meter: new LoRaWAN session, counters from 0
            last = t
            yield wire.encode(t, readings)

    def _plows(self, pid: str, wire: DeviceWire) -> Iterator[list[Wired]]:
        for t, r in plow_fixes(self.world, pid):
            yield wire.invalid_fix(t) if r is None else wire.encode(t, [r])


def _tagged(order: int, kind: Kind, device: str, gen: Iterable[list[Wired]]) -> Iterator[_Item]:
    n = 0
    for wired in gen:
        for t, topic, payload, readings in wired:
            yield (t, order, n, SimMessage(t, topic, payload, kind, device, readings))
            n += 1
