"""What a plow's GPS logger sends during a trip: a fix every 1–5 s.

Positions follow the planned trip (:mod:`simulators.fleet`) with a correlated GPS
error (AR(1), σ ≈ 2 m, at most 8 m), the speed over ground with a little noise (and
a drifting few tenths of a km/h when standing), the heading of travel, and the
blade input. Invalid fixes (no satellite lock) and gaps (no mobile coverage: those
fixes are lost, not buffered) come from the trip plan and from injected faults.
The logger runs from ignition on at the depot to parking again.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from typing import Final

from simulators.fleet import Leg, Stop, Trip
from simulators.formats import Values
from simulators.roads import LocalProjection
from simulators.seeding import rng_for
from simulators.world import World

__all__ = ["GPS_ERROR_MAX_M", "Fix", "plow_fixes"]

GPS_SIGMA_M: Final = 2.0
GPS_RHO: Final = 0.9
GPS_ERROR_MAX_M: Final = 8.0

Fix = tuple[int, Values | None]  # (time, reading) — None: an invalid fix


class _Walker:
    """Where the plow is at time t along its trip (t only increases)."""

    def __init__(self, parts: Sequence[Leg | Stop]) -> None:
        self.parts = parts
        self.i = 0
        self.j = 0  # vertex index inside the current leg

    def at(self, t: float) -> tuple[float, float, float, float | None, bool]:
        """(x, y, speed m/s, heading ° or None when standing, blade down)."""
        parts = self.parts
        while self.i < len(parts) - 1 and t >= parts[self.i].end:
            self.i += 1
            self.j = 0
        part = parts[self.i]
        if isinstance(part, Stop):
            return part.x, part.y, 0.0, None, False
        line = part.line
        s = min(max(0.0, (t - part.start) * part.speed_mps), line.length)
        cum = line.cum
        while self.j < len(cum) - 2 and cum[self.j + 1] <= s:
            self.j += 1
        j = self.j
        x0, y0, x1, y1 = line.xs[j], line.ys[j], line.xs[j + 1], line.ys[j + 1]
        piece = cum[j + 1] - cum[j]
        f = (s - cum[j]) / piece if piece > 0 else 0.0
        heading = math.degrees(math.atan2(x1 - x0, y1 - y0)) % 360
        return x0 + (x1 - x0) * f, y0 + (y1 - y0) * f, part.speed_mps, heading, part.blade


class _Windows:
    def __init__(self, intervals: Sequence[tuple[int, int]]) -> None:
        self.iv = sorted(intervals)
        self.i = 0

    def hit(self, t: int) -> bool:
        iv = self.iv
        while self.i < len(iv) and iv[self.i][1] <= t:
            self.i += 1
        return self.i < len(iv) and iv[self.i][0] <= t


def plow_fixes(world: World, plow_id: str) -> Iterator[Fix]:
    trips = world.trips.get(plow_id, [])
    if not trips:
        return
    assert world.network is not None
    proj = world.network.projection
    rng = rng_for(world.seed, "plow", plow_id, "gps")
    gaps = _Windows(world.plow_gaps[plow_id] + [g for tr in trips for g in tr.gps_gaps])
    invalid = _Windows(world.plow_invalid[plow_id] + [g for tr in trips for g in tr.gps_invalid])
    for trip in trips:
        yield from _trip(trip, world=world, proj=proj, rng=rng, gaps=gaps, invalid=invalid)


def _trip(
    trip: Trip,
    *,
    world: World,
    proj: LocalProjection,
    rng: random.Random,
    gaps: _Windows,
    invalid: _Windows,
) -> Iterator[Fix]:
    gauss = rng.gauss
    walker = _Walker(trip.parts)
    moving_s = world.scenario.intervals.plow_fix_s
    idle_s = world.scenario.intervals.plow_idle_fix_s
    ex = ey = 0.0
    k = math.sqrt(1 - GPS_RHO**2) * GPS_SIGMA_M
    heading_last = 0.0
    t = trip.start
    end = min(trip.end, world.end)
    while t < end:
        x, y, v, heading, blade = walker.at(t)
        ex = GPS_RHO * ex + k * gauss(0.0, 1.0)
        ey = GPS_RHO * ey + k * gauss(0.0, 1.0)
        err = math.hypot(ex, ey)
        if err > GPS_ERROR_MAX_M:
            ex, ey = ex * GPS_ERROR_MAX_M / err, ey * GPS_ERROR_MAX_M / err
        g_speed = gauss(0.0, 1.0)
        g_head = gauss(0.0, 1.0)
        step = moving_s if v > 0 else idle_s
        if gaps.hit(t):
            t += step
            continue
        if invalid.hit(t):
            yield (t, None)
            t += step
            continue
        if heading is None:
            speed_kmh = abs(g_speed) * 0.3
            heading = heading_last
        else:
            speed_kmh = max(0.0, v * 3.6 * (1 + 0.03 * g_speed))
            heading = (heading + 2.0 * g_head) % 360
            heading_last = heading
        lon, lat = proj.to_lonlat(x + ex, y + ey)
        yield (
            t,
            {
                "time": t,
                "lat": round(lat, 6),
                "lon": round(lon, 6),
                "speed_kmh": round(speed_kmh, 1),
                "heading_deg": round(heading, 1) % 360,
                "blade_down": blade,
            },
        )
        t += step
