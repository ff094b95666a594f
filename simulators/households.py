"""True water flow behind each meter, hour by hour, and the register it drives.

Household use is built from discrete water-use events (toilet flushes, taps,
showers, laundry, the evening bath that fills a Japanese ofuro) whose start times
follow a daily shape with morning and evening peaks and almost nothing at night, so
a healthy household has whole hours with zero flow (the Kamstrup leak rule needs
them). Leaks, bursts, reverse flow and supply cuts add to or replace that use; a
stuck register, a meter swap and the register's digit count decide what the meter
*shows*. Figures: about 220 L per person per day (Japanese average), a bath 160–220 L.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from sensors.registry import Meter
from simulators.seeding import poisson, rng_for
from simulators.timeutil import DAY, HOUR

__all__ = [
    "FLAG_BITS",
    "FlowChange",
    "Household",
    "MeterTruth",
    "Profile",
    "simulate_meter",
]

Profile = Literal["household", "elderly", "facility"]

FLAG_BITS: Final = {
    "leak": 1,
    "burst": 2,
    "reverse": 4,
    "tamper": 8,
    "dry": 16,
    "low_battery": 32,
}

# Relative weight of each local hour 0..23.
_HOUSEHOLD: Final = (
    0.3, 0.15, 0.1, 0.1, 0.15, 0.6, 2.0, 3.0, 2.2, 1.3, 1.0, 1.1,
    1.4, 1.0, 0.8, 0.8, 1.0, 1.4, 2.2, 2.6, 2.3, 1.7, 1.0, 0.5,
)  # fmt: skip
_ELDERLY: Final = (
    0.1, 0.2, 0.05, 0.05, 0.3, 1.5, 2.8, 2.4, 1.6, 1.2, 1.0, 1.2,
    1.4, 0.9, 0.8, 0.9, 1.4, 2.0, 2.0, 1.2, 0.6, 0.3, 0.1, 0.05,
)  # fmt: skip
_FACILITY: Final = (
    0.02, 0.02, 0.02, 0.02, 0.02, 0.1, 0.4, 1.5, 3.0, 2.6, 2.2, 2.4,
    3.0, 2.6, 2.2, 2.0, 1.6, 1.0, 0.5, 0.3, 0.2, 0.1, 0.02, 0.02,
)  # fmt: skip
_BATH: Final = (0,) * 17 + (0.3, 1.5, 2.5, 2.0, 1.0, 0.3) + (0,)
_EARLY_BATH: Final = (0,) * 15 + (0.5, 1.5, 2.0, 1.0, 0.3) + (0,) * 4
_SHOWER: Final = (0,) * 5 + (0.3, 1.5, 1.5, 0.3) + (0,) * 11 + (0.5, 1.0, 1.0, 0.5)
_LAUNDRY: Final = (0,) * 6 + (0.5, 1.5, 1.5, 1.0) + (0.3,) * 9 + (0.8, 1.0, 0.5, 0.0, 0.0)


@dataclass(frozen=True, slots=True)
class _Use:
    per_day: float
    per_person: bool
    litres: tuple[float, float]
    cum_weights: tuple[float, ...]


def _cum(weights: Sequence[float]) -> tuple[float, ...]:
    return tuple(itertools.accumulate(weights))


_PROFILES: Final[dict[str, tuple[_Use, ...]]] = {
    "household": (
        _Use(5.0, True, (4.8, 6.5), _cum(_HOUSEHOLD)),  # toilet
        _Use(12.0, True, (1.0, 8.0), _cum(_HOUSEHOLD)),  # taps, kitchen
        _Use(0.5, True, (40.0, 80.0), _cum(_SHOWER)),
        _Use(0.7, False, (50.0, 100.0), _cum(_LAUNDRY)),
        _Use(0.85, False, (160.0, 220.0), _cum(_BATH)),
    ),
    "elderly": (
        _Use(6.0, True, (4.8, 6.5), _cum(_ELDERLY)),
        _Use(10.0, True, (1.0, 6.0), _cum(_ELDERLY)),
        _Use(0.4, False, (40.0, 70.0), _cum(_LAUNDRY)),
        _Use(0.6, False, (150.0, 190.0), _cum(_EARLY_BATH)),
    ),
    "facility": (  # per "resident" = ten occupants' worth of toilets and taps
        _Use(40.0, True, (4.8, 8.0), _cum(_FACILITY)),
        _Use(60.0, True, (1.0, 10.0), _cum(_FACILITY)),
        _Use(1.0, True, (60.0, 120.0), _cum(_FACILITY)),
    ),
}


@dataclass(frozen=True, slots=True)
class FlowChange:
    """Something that changes flow or the register over [start, end)."""

    kind: Literal["leak", "burst", "reverse", "silent", "supply_cut", "stuck", "swap", "flag"]
    start: int
    end: int
    rate_lph: float = 0.0
    flag: str | None = None
    register_after_l: float = 0.0


@dataclass
class MeterTruth:
    """Hourly true flows and the register the meter shows at every hour boundary."""

    meter: Meter
    profile: Profile
    residents: int
    h0: int  # first hour boundary
    use_l: list[float] = field(repr=False)  # household use in hour k: [h0+k h, h0+(k+1) h)
    leak_l: list[float] = field(repr=False)  # leak and burst volume in hour k
    reverse_l: list[float] = field(repr=False)  # volume that ran backwards in hour k
    register_l: list[float] = field(repr=False)  # shown at boundary k (floor, wrapped)
    flags: list[int] = field(repr=False)  # FLAG_BITS active at boundary k

    def boundary(self, k: int) -> int:
        return self.h0 + k * HOUR


def _overlap(a: int, b: int, c: int, d: int) -> float:
    return max(0, min(b, d) - max(a, c)) / HOUR


def default_profile(meter: Meter) -> Profile:
    if meter.watched:
        return "elderly"
    return "facility" if meter.diameter_mm >= 20 else "household"


@dataclass(slots=True)
class _Hours:
    """Hour k is [h0 + k h, h0 + (k+1) h): its flows before the register sees them."""

    h0: int
    use: list[float]  # household use
    leak: list[float]  # leak and burst volume
    reverse: list[float]  # volume that ran backwards
    registering: list[float]  # fraction of the hour the register turns (stuck: 0)
    flags: list[int]  # FLAG_BITS active at boundary k (n + 1 boundaries)

    @classmethod
    def from_use(cls, h0: int, use: list[float]) -> _Hours:
        n = len(use)
        return cls(h0, use, [0.0] * n, [0.0] * n, [1.0] * n, [0] * (n + 1))

    def covered(self, ch: FlowChange) -> range:
        """The hours [start, end) of the change touches."""
        return range(
            max(0, (ch.start - self.h0) // HOUR), min(len(self.use), -(-(ch.end - self.h0) // HOUR))
        )


@dataclass(frozen=True, slots=True)
class Household:
    """What a scenario says about the household behind a meter; None: drawn (residents,
    register) or from the registry (profile: watched, diameter)."""

    profile: Profile | None = None
    residents: int | None = None
    register_start_l: float | None = None


def simulate_meter(
    meter: Meter,
    *,
    start: int,
    end: int,
    utc_offset_s: int,
    seed: int,
    changes: Sequence[FlowChange],
    household: Household = Household(),
) -> MeterTruth:
    rng = rng_for(seed, "meter", meter.id, "household")
    profile, residents = household.profile, household.residents
    register_start_l = household.register_start_l
    prof: Profile = profile or default_profile(meter)
    if residents is None:
        residents = _default_residents(meter, prof, rng)
    if register_start_l is None:
        register_start_l = rng.uniform(0.02, 0.4) * min(meter.rollover_l, 4_000_000)
    h0 = start - start % HOUR
    n = -(-(end - h0) // HOUR)
    hours = _Hours.from_use(
        h0,
        _household_use(meter.id, prof, residents, h0=h0, n=n, utc_offset_s=utc_offset_s, seed=seed),
    )
    for ch in changes:
        _change_flow(hours, ch)
        _change_flags(hours, ch)
    for ch in changes:
        if ch.kind == "supply_cut":  # nothing flows, leaks included
            for k in hours.covered(ch):
                a = h0 + k * HOUR
                hours.leak[k] *= 1 - _overlap(a, a + HOUR, ch.start, ch.end)
    swaps = sorted((ch for ch in changes if ch.kind == "swap"), key=lambda c: c.start)
    return MeterTruth(
        meter=meter,
        profile=prof,
        residents=residents,
        h0=h0,
        use_l=[round(x, 3) for x in hours.use],
        leak_l=[round(x, 3) for x in hours.leak],
        reverse_l=[round(x, 3) for x in hours.reverse],
        register_l=_register(hours, swaps, register_start_l, meter.rollover_l),
        flags=hours.flags,
    )


def _default_residents(meter: Meter, prof: Profile, rng: random.Random) -> int:
    if prof == "elderly":
        return 1
    if prof == "facility":
        return max(1, round(meter.q3_m3h / 2))
    return rng.choice((1, 2, 2, 3, 3, 4, 5))


def _household_use(
    meter_id: str,
    prof: Profile,
    residents: int,
    *,
    h0: int,
    n: int,
    utc_offset_s: int,
    seed: int,
) -> list[float]:
    """Litres used in each of the n hours from h0, from the profile's water-use events."""
    use = [0.0] * n
    # Draw whole local days so that a day's events do not depend on the scenario start.
    first_day = (h0 + utc_offset_s) // DAY
    last_day = (h0 + n * HOUR + utc_offset_s) // DAY
    uses = _PROFILES[prof]
    day_hours = range(24)
    for day in range(first_day, last_day + 1):
        drng = rng_for(seed, "meter", meter_id, "day", str(day))
        weekend = (day + 4) % 7 in (5, 6)  # 1970-01-01 was a Thursday
        scale = 0.3 if prof == "facility" and weekend else 1.0
        day_start = day * DAY - utc_offset_s
        for u in uses:
            lam = u.per_day * (residents if u.per_person else 1) * scale
            count = poisson(drng, lam)
            if not count:
                continue
            for hour in drng.choices(day_hours, cum_weights=u.cum_weights, k=count):
                k = (day_start + hour * HOUR - h0) // HOUR
                volume = drng.uniform(*u.litres)
                if 0 <= k < n:
                    use[k] += volume
    return use


def _change_flow(hours: _Hours, ch: FlowChange) -> None:
    """Add a leak, burst or backflow, or take away use or registering, pro rata per hour."""
    for k in hours.covered(ch):
        a = hours.h0 + k * HOUR
        f = _overlap(a, a + HOUR, ch.start, ch.end)
        if ch.kind in ("leak", "burst"):
            hours.leak[k] += ch.rate_lph * f
        elif ch.kind == "reverse":
            hours.reverse[k] += ch.rate_lph * f
        elif ch.kind in ("silent", "supply_cut"):
            hours.use[k] *= 1 - f
        elif ch.kind == "stuck":
            hours.registering[k] -= f


def _change_flags(hours: _Hours, ch: FlowChange) -> None:
    """Raise the change's alarm bit at every hour boundary inside [start, end)."""
    bit = {"reverse": FLAG_BITS["reverse"], "supply_cut": FLAG_BITS["dry"]}.get(ch.kind, 0)
    if ch.kind == "flag" and ch.flag is not None:
        bit = FLAG_BITS[ch.flag]
    if not bit:
        return
    h0 = hours.h0
    for k in range(max(0, (ch.start - h0 + HOUR - 1) // HOUR), len(hours.flags)):
        if h0 + k * HOUR >= ch.end:
            break
        hours.flags[k] |= bit


def _register(
    hours: _Hours, swaps: Sequence[FlowChange], register_start_l: float, rollover: int
) -> list[float]:
    """The register shown at each hour boundary: floor of the running total, wrapped at
    rollover; a swap (sorted by start) restarts it at the new meter's figure."""
    n = len(hours.use)
    register = [0.0] * (n + 1)
    cum = register_start_l
    register[0] = float(math.floor(cum) % rollover)
    si = 0
    for k in range(n):
        net = (hours.use[k] + hours.leak[k] - hours.reverse[k]) * max(0.0, hours.registering[k])
        a = hours.h0 + k * HOUR
        if si < len(swaps) and swaps[si].start < a + HOUR:
            after = (a + HOUR - max(swaps[si].start, a)) / HOUR
            cum = swaps[si].register_after_l + net * after
            si += 1
        else:
            cum += net
        register[k + 1] = float(math.floor(cum) % rollover)
    return register
