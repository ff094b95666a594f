"""The rule families the engine runs, in step order, and their truth scorers.

Order matters within a step: plows publish the last plowing and the active dispatch
(rules.model.Shared) that snow reads.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rules.model import Family, Point
from rules.plows import PlowFamily
from rules.scoring import Score
from rules.scoring import plow as plow_scoring
from rules.scoring import snow as snow_scoring
from rules.scoring import water as water_scoring
from rules.snow import SnowFamily
from rules.system import SystemFamily
from rules.transitions import Transition
from rules.water import WaterFamily

Scorer = Callable[[Path, list[tuple[int, Transition]], list[Point]], list[Score]]

# plows first: they publish the last plowing and the active dispatch for snow
FAMILIES: list[type[Family]] = [PlowFamily, SnowFamily, WaterFamily, SystemFamily]
SCORERS: dict[str, Scorer] = {
    "plow": plow_scoring.score,
    "snow": snow_scoring.score,
    "water": water_scoring.score,
}
BY_NAME: dict[str, type[Family]] = {f.name: f for f in FAMILIES}
