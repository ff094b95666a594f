"""The road network from the registry's GeoJSON, in local metres, with shortest paths.

Segment end points that coincide (to 1e-6°, about 0.1 m) are the same junction.
Plows drive along segment polylines; where two segments do not meet, or the depot
is off the network, they drive straight (the depot yard's access road).
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from sensors.registry import EARTH_RADIUS_M, RouteSegment

__all__ = ["LocalProjection", "Polyline", "RoadNetwork"]

Node = tuple[float, float]  # (lon, lat) rounded to 1e-6


@dataclass(frozen=True, slots=True)
class LocalProjection:
    """Equirectangular metres around a reference point (error < 0.1 % over a town)."""

    lon0: float
    lat0: float

    @property
    def _kx(self) -> float:
        return EARTH_RADIUS_M * math.cos(math.radians(self.lat0)) * math.pi / 180

    def to_xy(self, lon: float, lat: float) -> tuple[float, float]:
        return (lon - self.lon0) * self._kx, (lat - self.lat0) * _KY

    def to_lonlat(self, x: float, y: float) -> tuple[float, float]:
        return self.lon0 + x / self._kx, self.lat0 + y / _KY


_KY: Final = EARTH_RADIUS_M * math.pi / 180


@dataclass(frozen=True, slots=True)
class Polyline:
    """Points in metres with cumulative distances; ``length`` is the last one."""

    xs: tuple[float, ...]
    ys: tuple[float, ...]
    cum: tuple[float, ...]

    @classmethod
    def of(cls, points: Sequence[tuple[float, float]]) -> Polyline:
        cum = [0.0]
        for (x0, y0), (x1, y1) in itertools.pairwise(points):
            cum.append(cum[-1] + math.hypot(x1 - x0, y1 - y0))
        return cls(tuple(p[0] for p in points), tuple(p[1] for p in points), tuple(cum))

    @property
    def length(self) -> float:
        return self.cum[-1]

    def reversed(self) -> Polyline:
        pts = list(zip(self.xs, self.ys, strict=True))
        pts.reverse()
        return Polyline.of(pts)

    def distance_to(self, x: float, y: float) -> float:
        """Shortest distance from (x, y) to the polyline, metres."""
        best = math.inf
        xs, ys = self.xs, self.ys
        for i in range(len(xs) - 1):
            ax, ay, bx, by = xs[i], ys[i], xs[i + 1], ys[i + 1]
            dx, dy = bx - ax, by - ay
            seg2 = dx * dx + dy * dy
            u = 0.0 if seg2 == 0 else max(0.0, min(1.0, ((x - ax) * dx + (y - ay) * dy) / seg2))
            best = min(best, math.hypot(ax + u * dx - x, ay + u * dy - y))
        return best


def _node(p: tuple[float, float]) -> Node:
    return (round(p[0], 6), round(p[1], 6))


class RoadNetwork:
    """Route segments as an undirected graph; shortest paths by length (Dijkstra)."""

    def __init__(
        self,
        segments: Mapping[str, RouteSegment],
        depot: tuple[float, float] | None,
        projection: LocalProjection | None = None,
    ) -> None:
        if not segments:
            raise ValueError("the registry has no route segments to plow")
        if projection is None:
            pts = [p for s in segments.values() for p in s.coords]
            projection = LocalProjection(
                sum(p[0] for p in pts) / len(pts), sum(p[1] for p in pts) / len(pts)
            )
        self.projection = projection
        self.segments = dict(segments)
        self.lines: dict[str, Polyline] = {}
        self.ends: dict[str, tuple[Node, Node]] = {}
        self._adj: dict[Node, list[tuple[float, str, bool, Node]]] = {}
        for sid in sorted(segments):
            seg = segments[sid]
            line = Polyline.of([projection.to_xy(*p) for p in seg.coords])
            a, b = _node(seg.coords[0]), _node(seg.coords[-1])
            self.lines[sid] = line
            self.ends[sid] = (a, b)
            self._adj.setdefault(a, []).append((line.length, sid, True, b))
            self._adj.setdefault(b, []).append((line.length, sid, False, a))
        first = segments[min(segments)].coords[0]
        self.depot: tuple[float, float] = depot if depot is not None else first
        self.depot_xy = projection.to_xy(*self.depot)
        self.depot_node = self.nearest_node(*self.depot_xy)

    def node_xy(self, node: Node) -> tuple[float, float]:
        return self.projection.to_xy(*node)

    def nearest_node(self, x: float, y: float) -> Node:
        return min(self._adj, key=lambda n: (math.dist(self.node_xy(n), (x, y)), n))

    def path(self, src: Node, dst: Node) -> list[tuple[str, bool]] | None:
        """Segments (id, forward?) of a shortest path, or None if unreachable."""
        if src == dst:
            return []
        dist: dict[Node, float] = {src: 0.0}
        prev: dict[Node, tuple[Node, str, bool]] = {}
        heap: list[tuple[float, Node]] = [(0.0, src)]
        while heap:
            d, node = heapq.heappop(heap)
            if node == dst:
                break
            if d > dist.get(node, math.inf):
                continue
            for length, sid, fwd, other in self._adj.get(node, ()):
                nd = d + length
                if nd < dist.get(other, math.inf):
                    dist[other] = nd
                    prev[other] = (node, sid, fwd)
                    heapq.heappush(heap, (nd, other))
        if dst not in prev:
            return None
        out: list[tuple[str, bool]] = []
        node = dst
        while node != src:
            p, sid, fwd = prev[node]
            out.append((sid, fwd))
            node = p
        out.reverse()
        return out

    def path_length(self, path: Sequence[tuple[str, bool]]) -> float:
        return sum(self.lines[sid].length for sid, _ in path)

    def distance_to_road(self, x: float, y: float) -> float:
        """Distance to the nearest segment or to the depot's straight access road."""
        best = min(line.distance_to(x, y) for line in self.lines.values())
        access = Polyline.of([self.depot_xy, self.node_xy(self.depot_node)])
        return min(best, access.distance_to(x, y))
