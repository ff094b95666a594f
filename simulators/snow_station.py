"""What a snow-depth station reports, given the true snowpack and its faults.

Ultrasonic stations send the **raw** distance, which assumes the speed of sound at
0 °C: raw = true distance / √((T + 273.15) / 273.15), so ingest's temperature
correction is exercised. Laser stations are not affected by air temperature and
report depth directly, as laser snow sensors do (ingest would wrongly apply the
ultrasonic correction to a laser distance).

Quality code (``quality``, 0–100): echo/signal quality in percent; below
``sensors.models.QUALITY_POOR_BELOW`` (50) is **poor** (weak or scattered echo, e.g. in
heavy snowfall) and such readings should be dropped (docs/domain.md#echo-quality);
0 means no echo at all. Noise is ±3 cm for ultrasonic sensors in wind
(scaled by wind strength) and ±1 cm for lasers (docs/domain.md#sensor-noise). With
``sensors.station_burst`` = k a reading is the median of k measurements spread over
the interval before it (docs/domain.md#report-interval).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Final

from sensors.models import QUALITY_POOR_BELOW
from simulators.formats import Values
from simulators.seeding import rng_for
from simulators.timeutil import DAY
from simulators.world import World

__all__ = ["LOW_BATTERY_V", "station_readings"]

LOW_BATTERY_V: Final = 3.3
BATTERY_DECLINE_V_PER_DAY: Final = 0.0006
BATTERY_DRAIN_V_PER_DAY: Final = 0.5
SPIKE_CM: Final = (20.0, 90.0)
# The transducer needs clearance: nothing closer than this to the sensor is measured.
MIN_CLEARANCE_CM: Final = 10.0


class _Window:
    """Is t inside one of these sorted intervals? (t only increases.)"""

    def __init__(self, intervals: Sequence[tuple[int, int]]) -> None:
        self.intervals = sorted(intervals)
        self.i = 0

    def hit(self, t: int) -> tuple[int, int] | None:
        iv = self.intervals
        while self.i < len(iv) and iv[self.i][1] <= t:
            self.i += 1
        for a, b in iv[self.i :]:
            if a > t:
                return None
            if t < b:
                return (a, b)
        return None


@dataclass(frozen=True, slots=True)
class _Draws:
    """The random numbers of one sample."""

    noise: float  # uniform in [-1, 1]: measurement noise, in units of the sensor's noise
    quality: float  # uniform in [0, 1): echo quality
    spike: float  # uniform in [0, 1): how far a spike's echo is from the true surface
    temp: float  # gauss, °C: air temperature sensor error


def station_readings(world: World, station_id: str) -> Iterator[Values]:
    """The station's readings in time order (dropped ones are not yielded)."""
    truth = world.stations[station_id]
    faults = world.station_faults[station_id]
    station = truth.station
    laser = station.sensor_type == "laser"
    mount = station.mount_height_cm
    rng = rng_for(world.seed, "station", station_id, "sensor")
    # the burst's further measurements draw apart: a burst of 1 reads as it always did
    burst_rng = rng_for(world.seed, "station", station_id, "burst")
    burst = world.scenario.sensors.station_burst
    interval = world.scenario.intervals.station_s
    battery0 = rng.uniform(3.58, 3.67)
    seq = rng.randrange(65536)
    dropouts = _Window(faults.dropouts)
    frozen = _Window(faults.frozen)
    poor = _Window(faults.poor_quality)
    drains = _Window(faults.battery_drain)
    frozen_value: float | None = None
    last_value: float | None = None
    for t in world.sample_times(interval):
        depth, air, wind, snow_rate = truth.sample(t)
        # Draw the same numbers for every reading, whatever happens to it, so one
        # fault does not shift the noise of every later reading.
        draws = _Draws(
            noise=rng.uniform(-1.0, 1.0),
            quality=rng.random(),
            spike=rng.random(),
            temp=rng.gauss(0.0, 0.15),
        )
        this_seq = seq
        seq = (seq + 1) % 65536
        if dropouts.hit(t):
            continue
        is_poor = poor.hit(t) is not None
        measured, quality = _measure(
            depth, wind, snow_rate, draws, laser=laser, poor=is_poor, spike=t in faults.spikes
        )
        if burst > 1 and t not in faults.spikes:
            # The median of measurements spread over the interval (a spike stays one).
            more = [measured]
            for j in range(1, burst):
                d_j, _air, wind_j, rate_j = truth.sample(t - j * interval // burst)
                noise = replace(draws, noise=burst_rng.uniform(-1.0, 1.0))
                more.append(
                    _measure(d_j, wind_j, rate_j, noise, laser=laser, poor=is_poor, spike=False)[0]
                )
            measured = statistics.median(more)
        measured = min(max(measured, 0.0), mount - MIN_CLEARANCE_CM)
        value = _sensor_value(measured, air, laser=laser, mount=mount)
        if frozen.hit(t):
            # An iced transducer repeats its last figure exactly.
            if frozen_value is None:
                frozen_value = last_value if last_value is not None else value
            value = frozen_value
        else:
            frozen_value = None
        last_value = value
        battery = _battery_v(battery0, t, world.start, air, drains.hit(t))
        reading: Values = {"time": t, "seq": this_seq}
        reading["depth_cm" if laser else "distance_mm"] = value
        reading["air_temp_c"] = round(air + draws.temp, 1)
        reading["quality"] = max(0, min(100, quality))
        reading["battery_v"] = battery
        reading["alarms"] = {"low_battery": battery < LOW_BATTERY_V}
        yield reading


def _measure(
    depth: float,
    wind: float,
    snow_rate: float,
    draws: _Draws,
    *,
    laser: bool,
    poor: bool,
    spike: bool,
) -> tuple[float, int]:
    """(depth the sensor measures in cm, before clamping; its quality code)."""
    noise_cm = 1.0 if laser else 3.0
    scale = 1.0 if laser else 0.35 + 0.65 * wind
    measured = depth + draws.noise * noise_cm * scale
    quality = round(95 - 25 * wind - 10 * draws.quality)
    if not laser and snow_rate > 1.5:
        # Falling snow scatters the beam: weaker echo, more noise.
        quality -= round(min(40.0, 10 * snow_rate) * (0.5 + draws.quality))
        measured += draws.noise * min(5.0, snow_rate)
    if poor:
        # A poor-echo fault: quality 5 .. threshold - 5, always below the threshold.
        quality = 5 + round((QUALITY_POOR_BELOW - 10) * draws.quality)
        measured = depth + draws.noise * 15
    if spike:
        # A flake or a bird in the beam: an echo far too close to the sensor.
        measured = depth + SPIKE_CM[0] + (SPIKE_CM[1] - SPIKE_CM[0]) * draws.spike
        quality = 20 + round(60 * draws.quality)
    return measured, quality


def _sensor_value(measured: float, air: float, *, laser: bool, mount: float) -> float:
    """What the sensor sends: a laser the depth in cm; an ultrasonic sensor the raw
    distance in mm, computed with the speed of sound at 0 °C (module docstring)."""
    if laser:
        return round(measured, 1)
    true_mm = (mount - measured) * 10
    return float(round(true_mm / math.sqrt((air + 273.15) / 273.15)))


def _battery_v(
    battery0: float, t: int, start: int, air: float, drain: tuple[int, int] | None
) -> float:
    """Battery voltage at t: a slow decline, a cold penalty and an injected drain."""
    days = (t - start) / DAY
    battery = battery0 - BATTERY_DECLINE_V_PER_DAY * days - 0.004 * max(0.0, -air)
    if drain is not None:
        battery -= BATTERY_DRAIN_V_PER_DAY * (t - drain[0]) / DAY
    return round(max(2.5, battery), 2)
