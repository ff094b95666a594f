"""Scoring a backtest against a simulator's ground truth (``--truth DIR``).

The truth directory's files are documented in scenarios/README.md ("Ground truth");
this package reads them as files and imports nothing of ``simulators``. One module
per rule family; each returns :class:`Score` rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Score:
    """How one rule did against the truth."""

    rule: str
    true_positives: int = 0
    false_positives: int = 0
    missed: int = 0
    delays_h: list[float] = field(default_factory=list)  # detection − true start
    note: str = ""

    @property
    def recall(self) -> float | None:
        n = self.true_positives + self.missed
        return self.true_positives / n if n else None

    def row(self) -> str:
        rec = "–" if self.recall is None else f"{self.recall:.0%}"
        d = sorted(self.delays_h)
        delay = f"{d[len(d) // 2]:.1f} h / {d[-1]:.1f} h" if d else "–"
        return (
            f"{self.rule:<28} {self.true_positives:>4} {self.false_positives:>4} "
            f"{self.missed:>6}  {rec:>6}  {delay:<18} {self.note}"
        )


HEADER = (
    f"{'rule':<28} {'TP':>4} {'FP':>4} {'missed':>6}  {'recall':>6}  {'delay med / max':<18} note"
)
