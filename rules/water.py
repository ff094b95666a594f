"""Water rules: leaks, night flow, bursts, reverse flow, device flags, stale and stuck
meters, and watch-over (見守り) for flagged households (docs/rules-water.md).

Meters report a cumulative register on the hour (docs/domain.md#cumulative-registers).
Every feed turns the new readings of all meters into meter-hours at once with numpy
(register differences; rollover, swap and reverse flow told apart), then evaluates
each rule's condition per row with vectorised run-length and latch helpers that carry
each meter's state from the previous feed. Python loops run only over the rows where a
condition *changes* and over the meters in the feed, never over all points: 10,000
meters × 24 values must stay well under a few seconds.

State lives in plain numpy arrays indexed by a meter's slot (``self.slot``), so the
pickled family stays compact (a few dozen floats per meter plus 30 nights of night
flow).

The family is put together from modules along its concerns (docs/rules-water.md#code):
``rules.water_base`` (state, parameters, one feed's rows), ``rules.water_meter`` (the
rules on every meter), ``rules.water_watch`` (見守り), ``rules.water_night`` (night
flow) and ``rules.runs`` (the vectorised run and latch helpers).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import pandas as pd

from rules import water_meter, water_night, water_watch
from rules.model import Output
from rules.schema import WATER_STATE
from rules.water_base import FLAGS, Rows, WaterBase

# rule → (state name, code) for water_state (rules/schema.py): the worst wins.
STATE_OF: dict[str, tuple[str, int]] = {
    "water.stale": ("stale", 1),
    "water.stuck": ("stuck", 1),
    "water.flag_low_battery": ("low_battery", 1),
    "water.swap": ("swap", 1),
    "water.leak_continuous": ("leak", 2),
    "water.night_flow": ("leak", 2),
    "water.flag_leak": ("leak", 2),
    "water.reverse": ("reverse", 2),
    "water.flag_reverse": ("reverse", 2),
    "water.flag_tamper": ("tamper", 2),
    "water.flag_dry": ("dry", 2),
    "water.watch_no_use": ("watch", 2),
    "water.watch_continuous": ("watch", 2),
    "water.burst": ("burst", 3),
    "water.flag_burst": ("burst", 3),
}


class WaterFamily(WaterBase):
    name: ClassVar[str] = "water"
    inputs: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "water_meter": ("register_l", "flow_lph", *(f"alarm_{f}" for f in FLAGS)),
    }

    def _flush_state(self, out: Output) -> None:
        """water_state points: the meter's worst active finding after each change."""
        for at, dev, rule, active in sorted(self._events):
            rules = self.active.setdefault(dev, {})
            if active:
                rules[rule] = at
            else:
                rules.pop(rule, None)
            worst = max(
                (STATE_OF.get(r, ("other", 1)) for r in rules),
                key=lambda x: x[1],
                default=("ok", 0),
            )
            if self.state_code.get(dev) != worst:
                self.state_code[dev] = worst
                out.point(
                    WATER_STATE,
                    {"device": dev, "district": self.district(dev) or ""},
                    {"state": worst[0], "code": worst[1]},
                    at,
                )
        self._events = []

    # ------------------------------------------------------------------ feed
    def feed(self, measurement: str, frame: pd.DataFrame, out: Output) -> None:
        meters = self.registry.meters
        known = frame["device"].isin(list(meters)) & frame["register_l"].notna()
        df = frame[known]
        if df.empty:
            return
        self._feed(df, out)
        self._flush_state(out)

    def _feed(self, df: pd.DataFrame, out: Output) -> None:
        r = Rows(df, self)
        water_meter.hourly_points(self, r, out)
        water_meter.leak(self, r, out)
        water_meter.burst(self, r, out)
        water_meter.reverse(self, r, out)
        water_meter.swap(self, r, out)
        water_meter.stuck(self, r, out)
        water_watch.watch_over(self, r, out)
        water_meter.flags(self, r, out)
        water_meter.uploads(self, r, out)
        water_night.collect(self, r)
        # the carried state: each rule put its per-meter values in r.new
        for col, v in r.new.items():
            self.s[col][r.ix] = v
        water_meter.update_next_stale(self)

    # ------------------------------------------------------------------ tick
    def tick(self, now_ms: int, out: Output) -> None:
        water_meter.stale_check(self, now_ms, out)
        water_night.evaluate(self, now_ms, out)
        self._flush_state(out)


__all__ = ["FLAGS", "STATE_OF", "WaterFamily"]
