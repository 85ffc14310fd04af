"""Which running jobs to stop so that a more important waiting job can start.

Only pairs the site allows (default: CRITICAL may preempt LOW and NORMAL), never a job
marked non-preemptible. Among candidates, prefer the lowest priority, then the most
recently started (the least work lost). The set chosen is the smallest found: per node
for jobs that fit on one node (the node needing the fewest victims wins), and for
larger jobs a greedy pick pruned until no victim can be spared. Victims go back in
line (PREEMPTED -> QUEUED) keeping their place; it does not count as a failure.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from orchestrator.core.placement import Counts, choose_nodes


@dataclass(frozen=True)
class Running:
    """What the policy needs to know about a running job."""

    id: str
    label: str
    user: str
    priority: int
    counts: Counts  # GPUs per node
    started_at: float
    time_limit: float
    preemptible: bool = True
    stopping: bool = False  # being stopped (preempted, cancelled): its GPUs come back soon

    @property
    def expected_end(self) -> float:
        return self.started_at + self.time_limit

    @property
    def gpus(self) -> int:
        return sum(self.counts.values())


def victims_for(
    gpus: int,
    multi_node: bool,
    priority: int,
    avail: Mapping[str, int],
    sizes: Mapping[str, int],
    running: Sequence[Running],
    may_preempt: Mapping[int, frozenset[int]],
) -> tuple[list[Running], Counts] | None:
    """Victims to stop and where the job then goes, or None if no allowed set suffices.

    `avail` counts free GPUs plus those of jobs already stopping. An empty victim list
    means the job only has to wait for those stopping jobs.
    """
    allowed = may_preempt.get(priority, frozenset())
    candidates = sorted(
        (
            r
            for r in running
            if r.preemptible and not r.stopping and r.priority in allowed and r.priority < priority
        ),
        key=lambda r: (r.priority, -r.started_at, r.id),
    )
    here = choose_nodes(avail, sizes, gpus, multi_node)
    if here is not None:
        return [], here
    if not candidates:
        return None
    if gpus <= max(sizes.values()) and not multi_node:
        return _one_node(gpus, avail, sizes, candidates)
    return _greedy_then_prune(gpus, multi_node, avail, sizes, candidates)


def _one_node(
    gpus: int, avail: Mapping[str, int], sizes: Mapping[str, int], candidates: list[Running]
) -> tuple[list[Running], Counts] | None:
    best: tuple[tuple[int, int, list[tuple[int, float]]], str, list[Running]] | None = None
    for node in sizes:
        have = avail.get(node, 0)
        picked: list[Running] = []
        for r in candidates:
            if have >= gpus:
                break
            if r.counts.get(node, 0):
                picked.append(r)
                have += r.counts[node]
        if have < gpus:
            continue

        def frees_enough(vs: list[Running], node: str = node) -> bool:
            return avail.get(node, 0) + sum(v.counts.get(node, 0) for v in vs) >= gpus

        picked = _prune(picked, frees_enough)
        # Fewest victims, then fewest GPUs stopped, then the victims the order prefers
        # (lowest priority, most recently started).
        cost = (len(picked), sum(v.gpus for v in picked), sorted((v.priority, -v.started_at) for v in picked))
        if best is None or cost < best[0]:
            best = (cost, node, picked)
    if best is None:
        return None
    return best[2], {best[1]: gpus}


def _greedy_then_prune(
    gpus: int, multi_node: bool, avail: Mapping[str, int], sizes: Mapping[str, int], candidates: list[Running]
) -> tuple[list[Running], Counts] | None:
    def fits(vs: list[Running]) -> Counts | None:
        freed = dict(avail)
        for v in vs:
            for node, n in v.counts.items():
                freed[node] = freed.get(node, 0) + n
        return choose_nodes(freed, sizes, gpus, multi_node)

    picked: list[Running] = []
    for r in candidates:
        picked.append(r)
        if fits(picked) is not None:
            picked = _prune(picked, lambda vs: fits(vs) is not None)
            where = fits(picked)  # never None: pruning keeps a set that fits
            return (picked, where) if where is not None else None
    return None


def _prune(picked: list[Running], enough: Callable[[list[Running]], bool]) -> list[Running]:
    """Drop victims, most valuable first, while the rest still free enough."""
    kept = list(picked)
    for v in reversed(picked):
        trial = [k for k in kept if k is not v]
        if enough(trial):
            kept = trial
    return kept
