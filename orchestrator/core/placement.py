"""Where a job's GPUs go. Pure functions on GPU counts per node.

Rules (gang placement: all of a job's GPUs or none):
1. A job that fits on one node goes on one node, best fit: the node with the fewest
   available GPUs that still holds it (ties: the first node in cluster order). This
   keeps whole nodes free for the jobs that need them.
2. A job larger than any node takes whole free nodes first, largest first, then its
   remainder best fit on one more node (12 GPUs on 8-GPU nodes = 8 + 4), one bundle
   per node.
3. A job that fits on one node spans nodes only if its spec allows it; then it uses
   as few nodes as it can (an 8-GPU job on node-1:[4-7] + node-2:[0-3]).

The same rules answer "where now?" (counts = free GPUs) and "where at time t?" for
reservations (counts = GPUs free throughout a window), so plans and starts agree.
"""

from __future__ import annotations

from collections.abc import Mapping

from orchestrator.core.inventory import Allocation

Counts = dict[str, int]


def choose_nodes(
    avail: Mapping[str, int],
    sizes: Mapping[str, int],
    gpus: int,
    allow_split: bool = False,
    largest: int | None = None,
) -> Counts | None:
    """GPUs to take per node, or None if `avail` cannot hold the job. `largest` (the
    biggest node size) may be passed by callers that ask many times."""
    if gpus <= 0:
        return None
    if gpus <= (largest if largest is not None else max(sizes.values())):
        best = _best_fit(avail, gpus)
        if best is not None:
            return {best: gpus}
        return _fewest_nodes(avail, gpus) if allow_split else None
    if sum(avail.values()) < gpus:
        return None
    taken: Counts = {}
    remaining = gpus
    for node in sorted((n for n in avail if avail[n] == sizes[n] > 0), key=lambda n: -sizes[n]):
        if remaining < sizes[node]:
            break
        taken[node] = sizes[node]
        remaining -= sizes[node]
    if remaining == 0:
        return taken
    rest = {n: a for n, a in avail.items() if n not in taken}
    best = _best_fit(rest, remaining)
    if best is not None:
        return {**taken, best: remaining}
    spread = _fewest_nodes(rest, remaining)
    return {**taken, **spread} if spread is not None else None


def pick_gpus(free: Mapping[str, list[int]], counts: Counts) -> Allocation:
    """Concrete GPU indices for `counts`: the lowest free ones, as Ray would bind them."""
    return {node: sorted(free[node])[:n] for node, n in counts.items()}


def can_ever_fit(sizes: Mapping[str, int], gpus: int, allow_split: bool = False) -> bool:
    """Whether the job fits the cluster at all when every usable GPU is free."""
    return choose_nodes(sizes, sizes, gpus, allow_split) is not None


def _best_fit(avail: Mapping[str, int], gpus: int) -> str | None:
    best = None
    for node, a in avail.items():
        if a >= gpus and (best is None or a < avail[best]):
            best = node
    return best


def _fewest_nodes(avail: Mapping[str, int], gpus: int) -> Counts | None:
    taken: Counts = {}
    for node in sorted(avail, key=lambda n: -avail[n]):  # stable: ties keep cluster order
        if gpus == 0:
            break
        take = min(avail[node], gpus)
        if take > 0:
            taken[node] = take
            gpus -= take
    return taken if gpus == 0 else None
