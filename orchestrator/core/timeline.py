"""GPU availability over time, per node: the reservation plan behind backfill.

Each node's availability is a step function from `now` on: GPUs free now, plus those
that running jobs give back at their expected ends (start + time limit, never the
true runtime), minus what reservations and backfilled starts take over their windows.

A job may start now without delaying any reservation exactly when, on the nodes it
would use, the availability over [now, now + its time limit) never drops below what
it takes. The same query, moved to a later time, gives a reservation its start.
Counting per node (not per GPU index) is enough: GPUs within a node are alike.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Mapping

from orchestrator.core.placement import Counts, choose_nodes

INF = float("inf")


class NodeTimeline:
    __slots__ = ("times", "avail")

    def __init__(self, now: float, free_now: int, releases: Iterable[tuple[float, int]]):
        points: dict[float, int] = {}
        for t, n in releases:
            t = max(t, now)
            points[t] = points.get(t, 0) + n
        free_now += points.pop(now, 0)
        self.times = [now]
        self.avail = [free_now]
        for t in sorted(points):
            self.times.append(t)
            self.avail.append(self.avail[-1] + points[t])

    def copy(self) -> NodeTimeline:
        c = NodeTimeline.__new__(NodeTimeline)
        c.times, c.avail = list(self.times), list(self.avail)
        return c

    def at(self, t: float) -> int:
        return self.avail[max(0, bisect_right(self.times, t) - 1)]

    def min_avail(self, t0: float, t1: float) -> int:
        """Fewest GPUs available at any moment of [t0, t1)."""
        i = max(0, bisect_right(self.times, t0) - 1)
        low = self.avail[i]
        i += 1
        while i < len(self.times) and self.times[i] < t1:
            if self.avail[i] < low:
                low = self.avail[i]
            i += 1
        return low

    def earliest(self, gpus: int, duration: float, t_from: float, before: float = INF) -> float:
        """Earliest t >= t_from with `gpus` available throughout [t, t + duration); INF if
        never, or if not before `before` (lets a caller stop looking once it has a better node)."""
        start = max(0, bisect_right(self.times, t_from) - 1)
        for i in range(start, len(self.times)):
            t = max(self.times[i], t_from)
            if t > before:
                return INF
            if self.avail[i] >= gpus and self.min_avail(t, t + duration) >= gpus:
                return t
        return INF

    def take(self, t0: float, t1: float, gpus: int) -> None:
        """Hold `gpus` over [t0, t1) for a reservation or a start."""
        self._split(t0)
        if t1 != INF:
            self._split(t1)
        for i in range(bisect_right(self.times, t0) - 1, len(self.times)):
            if self.times[i] >= t1:
                break
            self.avail[i] -= gpus

    def _split(self, t: float) -> None:
        """Make t a breakpoint, carrying the availability that held just before it."""
        i = bisect_right(self.times, t)
        if self.times[i - 1] != t:
            self.times.insert(i, t)
            self.avail.insert(i, self.avail[i - 1])


class Timeline:
    """Availability of every node; answers "can it start now?" and "when could it start?"."""

    def __init__(self, nodes: Mapping[str, NodeTimeline], sizes: Mapping[str, int]):
        self.nodes = dict(nodes)
        self.sizes = sizes

    @classmethod
    def build(
        cls,
        now: float,
        sizes: Mapping[str, int],
        free: Mapping[str, int],
        releases: Iterable[tuple[str, float, int]],
    ) -> Timeline:
        per_node: dict[str, list[tuple[float, int]]] = {n: [] for n in sizes}
        for node, t, n in releases:
            if node in per_node:
                per_node[node].append((t, n))
        return cls({n: NodeTimeline(now, free.get(n, 0), per_node[n]) for n in sizes}, sizes)

    def copy(self) -> Timeline:
        return Timeline({n: tl.copy() for n, tl in self.nodes.items()}, self.sizes)

    def fit_at(self, t: float, gpus: int, duration: float, multi_node: bool = False) -> Counts | None:
        """Where the job would go if it started at t, holding its GPUs for `duration`."""
        window = {n: tl.min_avail(t, t + duration) for n, tl in self.nodes.items()}
        return choose_nodes(window, self.sizes, gpus, multi_node)

    def earliest(
        self, t_from: float, gpus: int, duration: float, multi_node: bool = False
    ) -> tuple[float, Counts] | None:
        """The earliest start and its placement, or None if the job can never fit."""
        if gpus <= max(self.sizes.values()) and not multi_node:
            # One node: each node's own earliest time; the soonest wins, best fit on ties.
            best_t, fits = INF, []
            for n, tl in self.nodes.items():
                t = tl.earliest(gpus, duration, t_from, before=best_t)
                if t < best_t:
                    best_t, fits = t, [n]
                elif t == best_t and t != INF:
                    fits.append(n)
            if best_t == INF:
                return None
            window = {n: self.nodes[n].min_avail(best_t, best_t + duration) for n in fits}
            return best_t, choose_nodes(window, self.sizes, gpus)  # type: ignore[return-value]
        candidates = sorted({t for tl in self.nodes.values() for t in tl.times if t >= t_from} | {t_from})
        for t in candidates:
            counts = self.fit_at(t, gpus, duration, multi_node)
            if counts is not None:
                return t, counts
        return None

    def take(self, t0: float, duration: float, counts: Counts) -> None:
        for node, n in counts.items():
            self.nodes[node].take(t0, t0 + duration, n)
