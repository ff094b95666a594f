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
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from sensors.registry import Meter
from simulators.seeding import poisson, rng_for
from simulators.timeutil import DAY, HOUR

__all__ = [
    "FLAG_BITS",
    "FlowChange",
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


def simulate_meter(
    meter: Meter,
    *,
    start: int,
    end: int,
    utc_offset_s: int,
    seed: int,
    changes: Sequence[FlowChange],
    profile: Profile | None = None,
    residents: int | None = None,
    register_start_l: float | None = None,
) -> MeterTruth:
    rng = rng_for(seed, "meter", meter.id, "household")
    prof: Profile = profile or default_profile(meter)
    if residents is None:
        if prof == "elderly":
            residents = 1
        elif prof == "facility":
            residents = max(1, round(meter.q3_m3h / 2))
        else:
            residents = rng.choice((1, 2, 2, 3, 3, 4, 5))
    if register_start_l is None:
        register_start_l = rng.uniform(0.02, 0.4) * min(meter.rollover_l, 4_000_000)
    h0 = start - start % HOUR
    n = -(-(end - h0) // HOUR)
    use = [0.0] * n
    # Draw whole local days so that a day's events do not depend on the scenario start.
    first_day = (h0 + utc_offset_s) // DAY
    last_day = (h0 + n * HOUR + utc_offset_s) // DAY
    uses = _PROFILES[prof]
    hours = range(24)
    for day in range(first_day, last_day + 1):
        drng = rng_for(seed, "meter", meter.id, "day", str(day))
        weekend = (day + 4) % 7 in (5, 6)  # 1970-01-01 was a Thursday
        scale = 0.3 if prof == "facility" and weekend else 1.0
        day_start = day * DAY - utc_offset_s
        for u in uses:
            lam = u.per_day * (residents if u.per_person else 1) * scale
            count = poisson(drng, lam)
            if not count:
                continue
            for hour in drng.choices(hours, cum_weights=u.cum_weights, k=count):
                k = (day_start + hour * HOUR - h0) // HOUR
                volume = drng.uniform(*u.litres)
                if 0 <= k < n:
                    use[k] += volume
    leak = [0.0] * n
    reverse = [0.0] * n
    registering = [1.0] * n  # fraction of the hour the register turns (stuck: 0)
    flags = [0] * (n + 1)
    swaps: list[FlowChange] = []
    for ch in changes:
        k_lo = max(0, (ch.start - h0) // HOUR)
        k_hi = min(n, -(-(ch.end - h0) // HOUR))
        for k in range(k_lo, k_hi):
            a = h0 + k * HOUR
            f = _overlap(a, a + HOUR, ch.start, ch.end)
            if ch.kind in ("leak", "burst"):
                leak[k] += ch.rate_lph * f
            elif ch.kind == "reverse":
                reverse[k] += ch.rate_lph * f
            elif ch.kind in ("silent", "supply_cut"):
                use[k] *= 1 - f
            elif ch.kind == "stuck":
                registering[k] -= f
        if ch.kind == "swap":
            swaps.append(ch)
        bit = {"reverse": FLAG_BITS["reverse"], "supply_cut": FLAG_BITS["dry"]}.get(ch.kind, 0)
        if ch.kind == "flag" and ch.flag is not None:
            bit = FLAG_BITS[ch.flag]
        if bit:
            for k in range(max(0, (ch.start - h0 + HOUR - 1) // HOUR), n + 1):
                if h0 + k * HOUR >= ch.end:
                    break
                flags[k] |= bit
    for ch in changes:
        if ch.kind == "supply_cut":  # nothing flows, leaks included
            for k in range(max(0, (ch.start - h0) // HOUR), min(n, -(-(ch.end - h0) // HOUR))):
                a = h0 + k * HOUR
                leak[k] *= 1 - _overlap(a, a + HOUR, ch.start, ch.end)
    register = [0.0] * (n + 1)
    cum = register_start_l
    rollover = meter.rollover_l
    register[0] = float(math.floor(cum) % rollover)
    swaps.sort(key=lambda c: c.start)
    si = 0
    for k in range(n):
        net = (use[k] + leak[k] - reverse[k]) * max(0.0, registering[k])
        a = h0 + k * HOUR
        if si < len(swaps) and swaps[si].start < a + HOUR:
            after = (a + HOUR - max(swaps[si].start, a)) / HOUR
            cum = swaps[si].register_after_l + net * after
            si += 1
        else:
            cum += net
        register[k + 1] = float(math.floor(cum) % rollover)
    return MeterTruth(
        meter=meter,
        profile=prof,
        residents=residents,
        h0=h0,
        use_l=[round(x, 3) for x in use],
        leak_l=[round(x, 3) for x in leak],
        reverse_l=[round(x, 3) for x in reverse],
        register_l=register,
        flags=flags,
    )
