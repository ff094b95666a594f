"""What a smart water meter sends: hourly register readings, hourly or in a daily batch.

Meters with a DevEUI are LPWA meters: they log on the hour and upload once a day at a
fixed local time (default: a per-meter time between 00:30 and 05:30) with every
reading not yet sent, so readings arrive up to a day late. While ``offline`` they keep
logging and send the backlog with the next successful upload. Other meters send each
hourly reading a few seconds after the hour; while offline those readings are lost.
Readings after the last upload of the scenario are never sent, as in reality.

``register`` is in the meter's own unit: whole litres for L registers, m³ with three
decimals (litre resolution) for m³ registers; it wraps at the digit count.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from simulators.formats import Values
from simulators.households import FLAG_BITS
from simulators.seeding import rng_for
from simulators.timeutil import DAY, HOUR
from simulators.world import World

__all__ = ["Upload", "meter_uploads"]

Upload = tuple[int, list[Values]]  # (send time, readings)
BATTERY_DECLINE_V_PER_DAY: Final = 0.00005


def _offline(world: World, meter_id: str, t: int) -> bool:
    return any(a <= t < b for a, b in world.meter_offline[meter_id])


def meter_uploads(world: World, meter_id: str) -> Iterator[Upload]:
    truth = world.meters[meter_id]
    meter = truth.meter
    rng = rng_for(world.seed, "meter", meter_id, "device")
    battery0 = rng.uniform(3.55, 3.66)
    seq = rng.randrange(1000)
    delay_s = rng.randint(2, 40)
    settings = world.scenario.meter_settings.get(meter_id)
    upload_at = settings.upload_at if settings is not None else None
    if upload_at is not None:
        upload_s = upload_at.hour * HOUR + upload_at.minute * 60 + upload_at.second
    else:
        upload_s = rng.randint(30 * 60, 330 * 60)
    m3 = meter.register_unit == "m3"
    names = tuple(FLAG_BITS.items())

    def reading(k: int) -> Values:
        nonlocal seq
        t = truth.boundary(k)
        reg = truth.register_l[k]
        bits = truth.flags[k]
        r: Values = {
            "time": t,
            "seq": seq,
            "register": round(reg / 1000, 3) if m3 else int(reg),
            "battery_v": round(battery0 - BATTERY_DECLINE_V_PER_DAY * (t - world.start) / DAY, 2),
            "alarms": {name: bool(bits & bit) for name, bit in names},
        }
        seq = (seq + 1) % 65536
        return r

    first = -(-(world.start - truth.h0) // HOUR)
    ks = [k for k in range(first, len(truth.register_l)) if truth.boundary(k) < world.end]
    if meter.dev_eui is None:
        for k in ks:
            r = reading(k)
            if not _offline(world, meter_id, r["time"]):
                yield (r["time"] + delay_s, [r])
        return
    local_midnight = (world.start + world.utc_offset_s) // DAY * DAY - world.utc_offset_s
    next_upload = local_midnight + upload_s
    while next_upload < world.start:
        next_upload += DAY
    pending: list[Values] = []
    for k in ks:
        t = truth.boundary(k)
        while next_upload <= t:
            if pending and not _offline(world, meter_id, next_upload):
                yield (next_upload, pending)
                pending = []
            next_upload += DAY
        pending.append(reading(k))
    while next_upload < world.end:
        if pending and not _offline(world, meter_id, next_upload):
            yield (next_upload, pending)
            pending = []
        next_upload += DAY
