"""The rule families the engine runs, in step order, and their truth scorers.

Order matters within a step: plows publish the last plowing and the active dispatch
(rules.model.Shared) that snow reads.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rules.model import Family, Point
from rules.scoring import Score
from rules.system import SystemFamily
from rules.transitions import Transition

Scorer = Callable[[Path, list[tuple[int, Transition]], list[Point]], list[Score]]

FAMILIES: list[type[Family]] = [SystemFamily]
SCORERS: dict[str, Scorer] = {}
BY_NAME: dict[str, type[Family]] = {f.name: f for f in FAMILIES}
