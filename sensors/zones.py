"""Work zones (除雪工区) and the road graph their plowing order is worked out on.

A work zone is a set of route segments one contractor plows with its vehicle(s). The
order in which they are plowed is the zone's planned order (``zone_order`` in the
routes file) or, without one, :func:`derive_order`: from the depot, the nearest
segment (by road distance) of the most urgent priority left, again and again. Main
roads first is the rule every snow plan states; nearest-first within a priority keeps
the dead running short.

A zone with several vehicles splits its order into contiguous runs of about equal
length, one per vehicle out, in the order the vehicles are listed (:func:`split_runs`);
the simulator drives them that way and the ETA expects them that way
(docs/rules-plow.md#work-zones, docs/rules-plow.md#eta).
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

__all__ = ["RoadGraph", "WorkZone", "derive_order", "split_runs"]

EARTH_RADIUS_M: Final = 6_371_008.8

Node = tuple[float, float]  # (lon, lat) rounded to 1e-6°


class _Segment(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def priority(self) -> int: ...
    @property
    def coords(self) -> tuple[tuple[float, float], ...]: ...


@dataclass(frozen=True, slots=True)
class WorkZone:
    """A 除雪工区: its segments in plowing order and the vehicles that plow it."""

    id: str
    name: str
    contractor: str
    plows: tuple[str, ...]  # in the order runs are handed out (split_runs)
    segments: tuple[str, ...]  # plowing order
    planned: bool  # True: the routes file's zone_order; False: derive_order


def _metres(a: tuple[float, float], b: tuple[float, float]) -> float:
    lon1, lat1, lon2, lat2 = map(math.radians, (*a, *b))
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(h))


def _node(p: tuple[float, float]) -> Node:
    return (round(p[0], 6), round(p[1], 6))


class RoadGraph:
    """Route segments as an undirected graph (ends that coincide to 1e-6° are one
    junction); shortest road distances by Dijkstra, cached per source junction."""

    def __init__(self, segments: Mapping[str, _Segment]) -> None:
        self.length_m: dict[str, float] = {}
        self.ends: dict[str, tuple[Node, Node]] = {}
        self._adj: dict[Node, list[tuple[float, Node]]] = {}
        for sid in sorted(segments):
            coords = segments[sid].coords
            length = sum(_metres(a, b) for a, b in itertools.pairwise(coords))
            a, b = _node(coords[0]), _node(coords[-1])
            self.length_m[sid] = length
            self.ends[sid] = (a, b)
            self._adj.setdefault(a, []).append((length, b))
            self._adj.setdefault(b, []).append((length, a))
        self._cache: dict[Node, dict[Node, float]] = {}

    @property
    def nodes(self) -> list[Node]:
        return list(self._adj)

    def nearest_node(self, lonlat: tuple[float, float]) -> Node:
        return min(self._adj, key=lambda n: (_metres(n, lonlat), n))

    def distances(self, src: Node) -> dict[Node, float]:
        """Road distance (m) from ``src`` to every junction it reaches."""
        cached = self._cache.get(src)
        if cached is not None:
            return cached
        dist: dict[Node, float] = {src: 0.0}
        heap: list[tuple[float, Node]] = [(0.0, src)]
        while heap:
            d, node = heapq.heappop(heap)
            if d > dist.get(node, math.inf):
                continue
            for length, other in self._adj.get(node, ()):
                nd = d + length
                if nd < dist.get(other, math.inf):
                    dist[other] = nd
                    heapq.heappush(heap, (nd, other))
        self._cache[src] = dist
        return dist

    def distance(self, src: Node, dst: Node) -> float:
        """Road distance, or the straight distance × 1.4 where no road joins them."""
        d = self.distances(src).get(dst)
        return d if d is not None else 1.4 * _metres(src, dst)

    def approach(self, src: Node, sid: str) -> tuple[float, Node]:
        """Distance from ``src`` to the nearer end of ``sid``, and the far end (where a
        plow that plows it from there comes out)."""
        a, b = self.ends[sid]
        da, db = self.distance(src, a), self.distance(src, b)
        return (da, b) if da <= db else (db, a)


def derive_order(
    segments: Sequence[_Segment], graph: RoadGraph, start: tuple[float, float] | None
) -> tuple[str, ...]:
    """A plowing order for segments without a planned one: from ``start`` (the depot;
    else the first segment's start), repeatedly the nearest segment by road distance
    among those of the most urgent priority left (ties: segment id)."""
    left = {s.id: s for s in segments}
    if not left:
        return ()
    first = min(left.values(), key=lambda s: s.id)
    here = graph.nearest_node(start if start is not None else first.coords[0])
    order: list[str] = []
    while left:
        top = min(s.priority for s in left.values())
        best: tuple[float, str, Node] | None = None
        for sid in sorted(s.id for s in left.values() if s.priority == top):
            d, out = graph.approach(here, sid)
            if best is None or d < best[0]:
                best = (d, sid, out)
        assert best is not None
        _, sid, here = best
        order.append(sid)
        del left[sid]
    return tuple(order)


def split_runs(
    order: Sequence[str], length_m: Mapping[str, float], n: int
) -> list[tuple[str, ...]]:
    """Cut an ordered segment list into ``n`` contiguous runs of about equal length
    (run k for the k-th vehicle out); a segment goes to the run its middle falls in."""
    if n <= 0:
        return []
    total = sum(length_m[s] for s in order)
    runs: list[list[str]] = [[] for _ in range(n)]
    acc = 0.0
    for sid in order:
        length = length_m[sid]
        k = min(n - 1, int((acc + length / 2) / total * n)) if total else 0
        runs[k].append(sid)
        acc += length
    return [tuple(r) for r in runs]
