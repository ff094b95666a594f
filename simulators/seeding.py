"""Stable per-device random streams.

Every device gets its own :class:`random.Random`, seeded from the scenario seed and
names (device id, purpose) through BLAKE2b. Python's ``hash()`` is salted per process
and would break reproducibility; a shared generator would make one device's numbers
depend on how its messages interleave with others'.
"""

from __future__ import annotations

import hashlib
import math
import random

__all__ = ["derive_seed", "geometric_gap", "poisson", "rng_for"]


def derive_seed(seed: int, *names: str) -> int:
    """A 64-bit seed from the scenario seed and a path of names."""
    h = hashlib.blake2b(digest_size=8, person=b"yukimizu-sim")
    h.update(str(seed).encode())
    for name in names:
        h.update(b"\x00" + name.encode())
    return int.from_bytes(h.digest(), "big")


def rng_for(seed: int, *names: str) -> random.Random:
    """A private random stream for (seed, names...)."""
    return random.Random(derive_seed(seed, *names))


def poisson(rng: random.Random, lam: float) -> int:
    """A Poisson draw (Knuth's method for small means, normal approximation above 60)."""
    if lam <= 0:
        return 0
    if lam > 60:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit = math.exp(-lam)
    k = 0
    p = rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def geometric_gap(rng: random.Random, p: float) -> int:
    """Trials until the next success of a per-trial probability p (>= 1); huge if p == 0."""
    if p <= 0:
        return 1 << 62
    if p >= 1:
        return 1
    u = 1.0 - rng.random()  # (0, 1]
    return 1 + int(math.log(u) / math.log1p(-p))
