"""Several ``rules run`` processes splitting a town's devices (``--shard i/n``).

Devices go to shards by a stable hash of their id (CRC-32, the same in every process
and on every machine), so a meter stays on its shard across restarts. Only per-device
families split: their rules look at one device at a time (water: every rule is about
one meter). The families that decide for the whole town — snow (the dispatch call
weighs every station; spikes are judged against neighbours), plows (a dispatch is the
fleet's; a segment is plowed by whichever plow passes) and system (a whole kind
silent) — run on shard 0 only, with every device of theirs. Snow reads the last
plowing from plows in the same process, so they must live together anyway; and they
are the small part of a town (hundreds of stations and plows against 100,000s of
meters). See docs/scale.md#rules-in-shards.

A transition's key is ``rule:subject``: per-device subjects belong to one shard and
town-wide rules run on one, so no transition is produced twice; the shards share one
outbox (``rules.sqlite``), whose unique key would drop a double anyway, and keep the
rest of their state apart.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rules.model import Family

# Families that need the whole town: on shard 0 only (docs/scale.md#rules-in-shards).
TOWN_WIDE: frozenset[str] = frozenset({"plow", "snow", "system"})


class ShardError(ValueError):
    pass


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"i/n"`` with 0 ≤ i < n."""
        try:
            i, n = (int(x) for x in text.split("/"))
        except ValueError:
            raise ShardError(f"shard {text!r}: expected i/n, e.g. 0/2") from None
        if n < 1 or not 0 <= i < n:
            raise ShardError(f"shard {text!r}: need 0 <= i < n")
        return cls(i, n)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def town(self) -> bool:
        """This shard runs the town-wide families."""
        return self.index == 0

    def owns(self, device: str) -> bool:
        return zlib.crc32(device.encode("utf-8")) % self.count == self.index

    def own(self, devices: Iterable[str]) -> list[str]:
        return sorted(d for d in devices if self.owns(d))

    def families(self, families: Sequence[type[Family]]) -> list[type[Family]]:
        return [f for f in families if self.town or f.name not in TOWN_WIDE]

    @property
    def suffix(self) -> str:
        """For names kept apart per shard (state tables, the stats instance)."""
        return "" if self.count == 1 else f"_shard{self.index}of{self.count}"
