"""Snow family: cleaned depth, JMA hourly new snow, the plow dispatch call and station faults.

The family is wired from two halves (docs/rules-snow.md#code):

- :mod:`rules.snow_station`: per station, the reading cleaning chain (echo quality,
  frozen sensor, spike filter), the end-of-hour level and hourly new snow, and the
  station faults;
- :mod:`rules.snow_town`: on the stations' finalised hours, the town-wide decisions
  (``snow.dispatch``, the call-out stages, ``snow.town_alert``,
  ``snow.dispatch_uncertain``).

This module keeps :class:`SnowFamily` (what the engine runs and pickles): ``feed``
turns a frame into readings for the chain, ``tick`` runs the station half, then the
town half.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pandas as pd

from rules.model import Output
from rules.snow_station import _Hour, _Raw, _Station
from rules.snow_town import SnowTown
from sensors.schema import SNOW

__all__ = ["SnowFamily"]
# State pickled before the split names these classes as ``rules.snow._Station`` and
# ``rules.snow._Hour``: kept importable from here so that such state still loads.
_PICKLED_NAMES = (_Hour, _Station)


class SnowFamily(SnowTown):
    name: ClassVar[str] = "snow"
    category: ClassVar[Any] = "snow"
    inputs: ClassVar[dict[str, tuple[str, ...]]] = {
        SNOW: (
            "depth_cm",
            "distance_mm",
            "air_temp_c",
            "quality",
            "battery_v",
            "alarm_low_battery",
        )
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stations: dict[str, _Station] = {}
        # town rules → (active, event time) as last reported
        self.town_status: dict[str, tuple[bool, int]] = {}
        self.town_hours_until = -1  # newest hour end the town rules were evaluated at

    def feed(self, measurement: str, frame: pd.DataFrame, out: Output) -> None:
        if measurement != SNOW or frame.empty:
            return
        raws = _raws(frame)
        # Neighbours' jumps of the whole frame, before any station is judged: the spike
        # verdict must not depend on the order stations are fed in.
        self.frame_jumps = self._jumps_ahead(raws)
        try:
            sid = ""
            p = self._town()
            st = _Station()
            for device, raw in raws:
                if device != sid:
                    sid = device
                    p = self._p(sid)
                    st = self.stations.setdefault(sid, _Station())
                self._reading(sid, st, p, raw, out)
        finally:
            del self.frame_jumps

    def tick(self, now_ms: int, out: Output) -> None:
        self._tick_stations(now_ms, out)
        self._dispatch_hours(now_ms, out)


def _raws(frame: pd.DataFrame) -> list[tuple[str, _Raw]]:
    """The frame's readings in its order, as (station, reading)."""

    def num(col: str) -> Any:
        return pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=float)

    times = frame["time"].to_numpy().astype("int64")
    devices = frame["device"].to_numpy()
    depth, dist, temp = num("depth_cm"), num("distance_mm"), num("air_temp_c")
    qual, batt = num("quality"), num("battery_v")
    alarm = frame["alarm_low_battery"].to_numpy()
    arrival = frame["arrival"].to_numpy().astype("int64") if "arrival" in frame else times
    out = []
    for i in range(len(times)):
        a = alarm[i]
        raw = _Raw(
            t=int(times[i]),
            depth=float(depth[i]),
            dist=float(dist[i]),
            temp=float(temp[i]),
            quality=float(qual[i]),
            batt=float(batt[i]),
            alarm=None if a is None or pd.isna(a) else bool(a),
            arrival=int(arrival[i]),
        )
        out.append((str(devices[i]), raw))
    return out
