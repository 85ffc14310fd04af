"""The GPUs gpuq holds on Ray: slots, and quarantine groups.

A job runs in one *slot* per node it uses: a detached placement group with one GPU
bundle pinned to that node, and a runner actor inside it (orchestrator/node/runner.py).
Slots are parked when their job ends and reused by the next job of the same shape on
that node. Facts this relies on (measured on Ray 2.60):
- a placement group with the default lifetime is removed when its creator dies even
  if it restarts: so slots are `lifetime="detached"` placement groups and detached
  named runners, which survive an orchestrator restart and are adopted by name;
- a bundle is pinned to a node by a per-node custom resource ({"GPU": 4,
  "gmi-node-2": 0.001}); a pinned bundle that cannot fit stays PENDING without
  error, so placement has its own time-out;
- Ray binds the lowest free GPU indices of the node to a bundle when the placement
  group is created, and `ray.get_gpu_ids()` inside the runner gives them.
Ray knows nothing of GPU health, so a GPU gpuq takes out of service is *quarantined*:
held by a detached one-GPU placement group of its own (`gpuq-quarantine-<node>-<i>`)
so that Ray never binds it to a job (quarantine()). Slots and quarantine groups share
each node's GPUs, so one part keeps both.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

import ray
from ray.util.placement_group import (
    PlacementGroup,
    placement_group,
    placement_group_table,
    remove_placement_group,
)
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from orchestrator.head.names import NAMESPACE
from orchestrator.head.nodes import NODE_SHARE
from orchestrator.node.runner import Runner

SLOT_PREFIX = "gpuq-slot-"
QUARANTINE_PREFIX = "gpuq-quarantine-"
FILLER_PREFIX = "gpuq-filler-"


@dataclass
class PlacementSlot:
    """A placement group with one GPU bundle on one node, and the runner inside it."""

    name: str
    node: str
    size: int
    pg: PlacementGroup
    runner: ray.actor.ActorHandle
    gpus: list[int] = field(default_factory=list)  # the indices Ray bound
    parked_at: float | None = None  # idle since (None: running a job)
    ready: bool = True  # False while a warm-up slot is still being placed
    # Parked for the next job when its job ends. Not for a slot adopted after a restart:
    # its runner may run an older release's code, which a new launch must not rely on.
    reusable: bool = True


class Placements:
    def __init__(
        self,
        data_root: str,
        scratch: str | None,
        placement_timeout_s: float,
        slot_idle_s: float = 60.0,
        warm_slots_per_node: int = 0,
    ):
        self.data_root, self.scratch = data_root, scratch  # what a new slot's runner is given
        self.placement_timeout_s = placement_timeout_s
        self.slot_idle_s = slot_idle_s
        self.warm_slots_per_node = warm_slots_per_node
        self.slots: dict[str, PlacementSlot] = {}
        self.capacity: dict[str, int] = {}  # each node's GPUs, as Ray reports them
        self.held_out: dict[tuple[str, int], PlacementGroup] = {}  # quarantined GPUs
        self._quarantine_lock = asyncio.Lock()

    def node_lost(self, node: str) -> None:
        """Remove the node's slots and quarantine groups (a detached group would otherwise
        wait for the node forever, and a launch waiting on one of them fails now instead
        of at the placement time-out)."""
        self.capacity.pop(node, None)
        for slot in [s for s in self.slots.values() if s.node == node]:
            self.discard(slot)
        for (n, i), pg in list(self.held_out.items()):
            if n == node:
                remove_placement_group(pg)
                del self.held_out[(n, i)]

    # --- slots ----------------------------------------------------------------------

    async def acquire(
        self, node: str, size: int, prefer: list[int], avoid: AbstractSet[int] = frozenset()
    ) -> PlacementSlot | None:
        """A slot of `size` GPUs on `node`: a parked one if there is one (the planned GPUs
        first; none holding a GPU in `avoid`, those out of service), else a new one,
        after evicting parked slots that Ray would need the GPUs of. None (and nothing
        left behind) if Ray has not placed it within the time-out. Any job may use any
        slot: a runner holds nothing of a job's runtime env."""
        if avoid - {i for n, i in self.held_out if n == node}:
            await self.quarantine({node: set(avoid)}, only=node)  # else Ray may bind one of them
        parked = [
            s
            for s in self.slots.values()
            if s.parked_at is not None
            and s.ready
            and s.node == node
            and s.size == size
            and not set(s.gpus) & avoid
        ]
        if parked:
            slot = max(parked, key=lambda s: (len(set(s.gpus) & set(prefer)), s.parked_at))
            slot.parked_at = None
            return slot
        held = self._held(node)
        for old in sorted(
            (s for s in self.slots.values() if s.node == node and s.parked_at is not None),
            key=lambda s: s.parked_at or 0.0,
        ):
            if held + size <= self.capacity.get(node, size):
                break
            held -= old.size
            self.discard(old)
        return await self._create(node, size)

    async def _create(self, node: str, size: int, warm: bool = False) -> PlacementSlot | None:
        name = f"{SLOT_PREFIX}{uuid.uuid4().hex[:12]}"
        pg = placement_group([{"GPU": float(size), node: NODE_SHARE}], name=name, lifetime="detached")
        # No runtime_env: a user's package on a root worker's PYTHONPATH would run as root.
        runner = Runner.options(  # type: ignore[attr-defined]  # a ray.remote class
            name=name,
            namespace=NAMESPACE,
            lifetime="detached",
            num_gpus=size,
            num_cpus=0,
            scheduling_strategy=PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=0),
        ).remote(node, self.data_root, self.scratch)
        # Registered at once, so that a warm-up slot still being placed counts as holding its
        # GPUs and can be evicted by a job that needs them.
        slot = PlacementSlot(
            name, node, size, pg, runner, parked_at=time.monotonic() if warm else None, ready=False
        )
        self.slots[name] = slot
        try:
            # Not pg.ready(): it runs a dummy task in the bundle, which costs a Ray worker of
            # its own. The runner is scheduled when the group is placed; its answer says so.
            hello = await asyncio.wait_for(runner.hello.remote(), self.placement_timeout_s)
            slot.gpus = hello["gpus"]
        except (TimeoutError, ray.exceptions.RayError):
            self.discard(slot)
            return None
        slot.ready = True
        return slot

    async def warm_up(self, free: dict[str, int]) -> None:
        """While nothing waits, keep up to `warm_slots_per_node` one-GPU slots parked per
        node on GPUs no slot holds, so a burst of small jobs starts without waiting for
        Ray workers to boot. A job that needs those GPUs evicts them like any parked slot."""
        creating = []
        for node, n_free in free.items():
            ones = sum(
                1 for s in self.slots.values() if s.node == node and s.size == 1 and s.parked_at is not None
            )
            held = self._held(node)
            room = min(self.capacity.get(node, 0) - held, self.warm_slots_per_node - ones, n_free)
            creating += [self._create(node, 1, warm=True) for _ in range(max(0, room))]
        if creating:
            await asyncio.gather(*creating)

    def _held(self, node: str) -> int:
        """GPUs of `node` that Ray has given to gpuq placement groups (slots and quarantine)."""
        return sum(s.size for s in self.slots.values() if s.node == node) + sum(
            1 for n, _ in self.held_out if n == node
        )

    def park(self, name: str) -> None:
        """The slot's job is over: keep it warm for the next job of its shape."""
        slot = self.slots.get(name)
        if slot is not None and not slot.reusable:
            self.discard(slot)
        elif slot is not None:
            slot.parked_at = time.monotonic()

    def discard(self, name_or_slot) -> None:
        slot = (
            self.slots.pop(name_or_slot, None)
            if isinstance(name_or_slot, str)
            else self.slots.pop(name_or_slot.name, None)
        )
        if slot is not None:
            ray.kill(slot.runner, no_restart=True)
            remove_placement_group(slot.pg)

    def evict_idle(self) -> None:
        """Remove slots parked too long, but keep the warm one-GPU slots."""
        now = time.monotonic()
        warm_kept: dict[str, int] = {}
        for slot in sorted(
            (s for s in self.slots.values() if s.parked_at is not None), key=lambda s: -(s.parked_at or 0.0)
        ):
            if slot.size == 1 and warm_kept.get(slot.node, 0) < self.warm_slots_per_node:
                warm_kept[slot.node] = warm_kept.get(slot.node, 0) + 1
                continue
            if now - (slot.parked_at or now) > self.slot_idle_s:
                self.discard(slot)

    def runner(self, name: str):
        slot = self.slots.get(name)
        if slot is not None:
            return slot.runner
        try:
            return ray.get_actor(name, namespace=NAMESPACE)
        except ValueError:
            return None

    def forget_unknown_slots(self, keep: set[str]) -> None:
        """After a restart: remove every gpuq slot (runner and placement group) that no job
        still needs, and any quarantine filler left half-way. Parked slots are not
        remembered across restarts."""
        for info in ray.util.list_named_actors(all_namespaces=True):
            name = info["name"]
            if info["namespace"] == NAMESPACE and name.startswith(SLOT_PREFIX) and name not in keep:
                try:
                    ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)
                except ValueError:
                    pass
        for pg_id, info in placement_group_table().items():
            name = info.get("name", "")
            stale = name.startswith(SLOT_PREFIX) and name not in keep or name.startswith(FILLER_PREFIX)
            if stale and info.get("state") != "REMOVED":
                remove_placement_group(PlacementGroup(ray.PlacementGroupID(bytes.fromhex(pg_id))))

    def adopt_slot(self, name: str, node: str, size: int, gpus: list[int]) -> None:
        """Take back a slot a running job uses, found by name after a restart; it is not
        reused after that job (PlacementSlot.reusable)."""
        runner = self.runner(name)
        try:
            pg = ray.util.get_placement_group(name)
        except ValueError:
            pg = None
        if runner is not None and pg is not None:
            self.slots[name] = PlacementSlot(name, node, size, pg, runner, list(gpus), reusable=False)

    # --- quarantine -----------------------------------------------------------------

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
