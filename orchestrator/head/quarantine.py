"""Quarantine: GPUs taken out of service held by Ray so that it never binds them to a job.

Ray knows nothing of GPU health. A GPU gpuq takes out of service is held by a detached
one-GPU placement group of its own (`gpuq-quarantine-<node>-<i>`). A part of
RayBackend (backend.py), which holds the slots and the lock these use.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import ray
from ray.util.placement_group import (
    PlacementGroup,
    placement_group,
    placement_group_table,
    remove_placement_group,
)

from orchestrator.head.nodes import NODE_SHARE

QUARANTINE_PREFIX = "gpuq-quarantine-"
FILLER_PREFIX = "gpuq-filler-"


class Quarantine:
    # What RayBackend holds and these use, declared for the type checker.
    held_out: dict[tuple[str, int], PlacementGroup]
    slots: dict[str, Any]
    placement_timeout_s: float
    _quarantine_lock: asyncio.Lock

    if TYPE_CHECKING:

        def discard(self, name: str) -> None: ...

    async def quarantine(self, wanted: dict[str, set[int]], only: str | None = None) -> None:
        async with self._quarantine_lock:  # the watch and a launch may both ask
            await self._quarantine(wanted, only)

    async def _quarantine(self, wanted: dict[str, set[int]], only: str | None) -> None:
        """Make Ray hold exactly the out-of-service GPUs that no job holds any more.

        Ray gives a new bundle the lowest free indices, so to hold GPU i it first takes
        every free index below i in a filler group, then places the one-GPU quarantine
        group (which gets i), then drops the filler. Parked slots on i are removed
        first; a GPU still in a running slot waits for the next round."""
        for (node, i), pg in list(self.held_out.items()):
            if only is None and i not in wanted.get(node, set()):
                remove_placement_group(pg)
                del self.held_out[(node, i)]
        for node, indices in wanted.items():
            for i in sorted(indices):
                if (node, i) in self.held_out:
                    continue
                for slot in [
                    s
                    for s in self.slots.values()
                    if s.node == node and i in s.gpus and s.parked_at is not None
                ]:
                    self.discard(slot)
                slots = [s for s in self.slots.values() if s.node == node]
                if any(not s.ready for s in slots):
                    return  # a slot is being placed: its indices are not known yet
                taken = {g for s in slots for g in s.gpus} | {g for n, g in self.held_out if n == node}
                if i in taken:
                    continue
                below = [g for g in range(i) if g not in taken]
                filler = None
                if below:
                    # Named, so that a restart removes it if we die before we do (forget_unknown_slots).
                    filler = placement_group(
                        [{"GPU": float(len(below)), node: NODE_SHARE}],
                        name=f"{FILLER_PREFIX}{node}",
                        lifetime="detached",
                    )
                    if not await _placed(filler, self.placement_timeout_s):
                        remove_placement_group(filler)
                        continue
                pg = placement_group(
                    [{"GPU": 1.0, node: NODE_SHARE}],
                    name=f"{QUARANTINE_PREFIX}{node}-{i}",
                    lifetime="detached",
                )
                placed = await _placed(pg, self.placement_timeout_s)
                if filler is not None:
                    remove_placement_group(filler)
                if placed:
                    self.held_out[(node, i)] = pg
                else:
                    remove_placement_group(pg)

    def adopt_quarantine(self) -> None:
        """After a restart: take back the quarantine groups by name."""
        for pg_id, info in placement_group_table().items():
            name = info.get("name", "")
            if name.startswith(QUARANTINE_PREFIX) and info.get("state") == "CREATED":
                node, _, index = name[len(QUARANTINE_PREFIX) :].rpartition("-")
                self.held_out[(node, int(index))] = PlacementGroup(ray.PlacementGroupID(bytes.fromhex(pg_id)))


async def _placed(pg: PlacementGroup, timeout: float) -> bool:
    """Wait until Ray has placed a group, without pg.ready() (which costs a worker)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if placement_group_table(pg).get("state") == "CREATED":
            return True
        await asyncio.sleep(0.05)
    return False
