"""The GPU inventory: every GPU slot of every node, and who holds it.

A slot is named `node:index` (`gmi-node-1:0`); each node numbers its GPUs from 0.
Node names and sizes come from the cluster (Ray in production, the trace's shape in
the simulator), never from constants here.

Invariants, checked on every change: a GPU belongs to at most one job; a job's GPUs
are taken and given back all at once (allocation is transactional); unhealthy or
drained GPUs are never handed out. The inventory is pure bookkeeping: it does not
decide where jobs go (placement.py, policy.py) and does not touch Ray.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from orchestrator.core.errors import GpuqError

Allocation = dict[str, list[int]]


class SlotState(str, Enum):
    FREE = "free"
    ALLOCATED = "allocated"
    UNHEALTHY = "unhealthy"  # reported bad (XID, ECC, silent node); never handed out
    DRAINED = "drained"  # taken out of service by an admin; never handed out
    DOWN = "down"  # its node is gone (Ray declared it dead); back when the node registers again


class AllocationError(GpuqError):
    """An allocation or release that would break an inventory invariant. Nothing changed."""


@dataclass
class GpuSlot:
    node: str
    index: int
    state: SlotState = SlotState.FREE
    job_id: str | None = None
    # A GPU can be unhealthy or drained while a job still holds it (the job is being
    # stopped); it must not return to FREE when that job releases it.
    out_of_service: SlotState | None = None

    @property
    def name(self) -> str:
        return f"{self.node}:{self.index}"

    @property
    def shown(self) -> str:
        """What people see: free, allocated, draining (allocated; drained once its job
        ends), drained or unhealthy."""
        if SlotState.UNHEALTHY in (self.state, self.out_of_service):
            return "unhealthy"
        if SlotState.DOWN in (self.state, self.out_of_service):
            return "down"
        if self.out_of_service is SlotState.DRAINED:
            return "draining"
        return self.state.value


@dataclass
class Inventory:
    nodes: dict[str, list[GpuSlot]] = field(default_factory=dict)
    _by_job: dict[str, Allocation] = field(default_factory=dict)

    @classmethod
    def of(cls, sizes: dict[str, int]) -> Inventory:
        """An inventory of healthy, free GPUs: {"gmi-node-1": 8, "gmi-node-2": 8}."""
        inv = cls()
        for node, n in sizes.items():
            inv.add_node(node, n)
        return inv

    def add_node(self, node: str, gpus: int) -> None:
        if node in self.nodes:
            raise AllocationError(f"node {node} is already in the inventory")
        self.nodes[node] = [GpuSlot(node, i) for i in range(gpus)]

    # --- reading -------------------------------------------------------------------

    @property
    def sizes(self) -> dict[str, int]:
        return {node: len(slots) for node, slots in self.nodes.items()}

    @property
    def total(self) -> int:
        return sum(len(s) for s in self.nodes.values())

    def free(self) -> dict[str, list[int]]:
        """Free GPU indices per node, lowest first (the order Ray hands them out)."""
        return {
            node: [s.index for s in slots if s.state is SlotState.FREE] for node, slots in self.nodes.items()
        }

    def free_count(self) -> int:
        return sum(1 for slots in self.nodes.values() for s in slots if s.state is SlotState.FREE)

    def allocated_count(self) -> int:
        return sum(len(g) for alloc in self._by_job.values() for g in alloc.values())

    def unhealthy_count(self) -> int:
        return sum(
            1
            for slots in self.nodes.values()
            for s in slots
            if SlotState.UNHEALTHY in (s.state, s.out_of_service)
        )

    def usable(self) -> dict[str, int]:
        """GPUs per node that are in service (free or allocated): what a job could ever get."""
        return {
            node: sum(
                1
                for s in slots
                if s.state in (SlotState.FREE, SlotState.ALLOCATED) and s.out_of_service is None
            )
            for node, slots in self.nodes.items()
        }

    def holder(self, node: str, index: int) -> str | None:
        return self._slot(node, index).job_id

    def allocation_of(self, job_id: str) -> Allocation | None:
        alloc = self._by_job.get(job_id)
        return {n: list(g) for n, g in alloc.items()} if alloc is not None else None

    def jobs(self) -> list[str]:
        return list(self._by_job)

    # --- changing ------------------------------------------------------------------

    def allocate(self, job_id: str, allocation: Allocation) -> None:
        """Give `job_id` exactly these GPUs, or raise AllocationError and give none."""
        if job_id in self._by_job:
            raise AllocationError(f"job {job_id} already holds GPUs")
        if not any(allocation.values()):
            raise AllocationError(f"job {job_id}: an allocation needs at least one GPU")
        slots = []
        for node, indices in allocation.items():
            if len(set(indices)) != len(indices):
                raise AllocationError(f"job {job_id}: GPU listed twice on {node}")
            for i in indices:
                slot = self._slot(node, i)
                if slot.state is not SlotState.FREE:
                    who = f" (held by {slot.job_id})" if slot.job_id else ""
                    raise AllocationError(f"job {job_id}: {slot.name} is {slot.state.value}{who}")
                slots.append(slot)
        for slot in slots:  # all checks passed: now change everything
            slot.state, slot.job_id = SlotState.ALLOCATED, job_id
        self._by_job[job_id] = {n: sorted(g) for n, g in allocation.items() if g}

    def give_back(self, job_id: str) -> Allocation:
        """Give back every GPU `job_id` holds; returns what it held."""
        alloc = self._by_job.pop(job_id, None)
        if alloc is None:
            raise AllocationError(f"job {job_id} holds no GPUs")
        for node, indices in alloc.items():
            for i in indices:
                slot = self._slot(node, i)
                slot.job_id = None
                slot.state = slot.out_of_service or SlotState.FREE
                slot.out_of_service = None
        return alloc

    def rebind(self, job_id: str, actual: Allocation) -> dict[str, Allocation]:
        """Ray bound other GPU indices than planned (it picks them as placement groups
        commit, which need not follow plan order): make `job_id` hold `actual`. A job that
        was only planned onto one of those GPUs takes one the first job left, on the same
        node. Returns the jobs moved that way, with their new allocations."""
        old = self._by_job.get(job_id)
        if old is None:
            raise AllocationError(f"job {job_id} holds no GPUs")
        if {n: sorted(g) for n, g in old.items()} == {n: sorted(g) for n, g in actual.items() if g}:
            return {}
        if {n: len(g) for n, g in old.items()} != {n: len(g) for n, g in actual.items() if g}:
            raise AllocationError(f"job {job_id}: Ray bound {actual}, a different shape from the plan {old}")
        for node, indices in actual.items():  # check everything before changing anything
            for i in indices:
                slot = self._slot(node, i)
                if slot.state not in (SlotState.FREE, SlotState.ALLOCATED):
                    raise AllocationError(f"job {job_id}: Ray bound {slot.name}, which is {slot.state.value}")
        moved: dict[str, Allocation] = {}
        for node, indices in actual.items():
            given_up = sorted(set(old.get(node, [])) - set(indices))
            for i in sorted(set(indices) - set(old.get(node, []))):
                slot = self._slot(node, i)
                if slot.state is SlotState.ALLOCATED and slot.job_id is not None and slot.job_id != job_id:
                    other = slot.job_id
                    spare = self._slot(node, given_up.pop(0))
                    spare.job_id = other
                    alloc = self._by_job[other]
                    alloc[node] = sorted([spare.index if g == i else g for g in alloc[node]])
                    moved[other] = {n: list(g) for n, g in alloc.items()}
                else:
                    slot.state = SlotState.ALLOCATED
                    freed = self._slot(node, given_up.pop(0))
                    freed.state, freed.job_id = SlotState.FREE, None
                slot.job_id = job_id
        self._by_job[job_id] = {n: sorted(g) for n, g in actual.items() if g}
        return moved

    def set_out_of_service(self, node: str, index: int, state: SlotState) -> str | None:
        """Mark a GPU unhealthy, drained or down. Returns the job still holding it, if
        any: that job must be stopped; the GPU stays out of service when it is released."""
        if state not in (SlotState.UNHEALTHY, SlotState.DRAINED, SlotState.DOWN):
            raise ValueError("state must be UNHEALTHY, DRAINED or DOWN")
        slot = self._slot(node, index)
        if slot.state is SlotState.ALLOCATED:
            slot.out_of_service = state
            return slot.job_id
        slot.state = state
        return None

    def return_to_service(self, node: str, index: int) -> None:
        slot = self._slot(node, index)
        if slot.state is SlotState.ALLOCATED:
            slot.out_of_service = None
        else:
            slot.state = SlotState.FREE

    def _slot(self, node: str, index: int) -> GpuSlot:
        try:
            return self.nodes[node][index]
        except (KeyError, IndexError):
            raise AllocationError(f"no GPU {node}:{index} in the inventory") from None

    def check(self) -> None:
        """Assert the invariants (used by tests and after recovery)."""
        seen: dict[tuple[str, int], str] = {}
        for job_id, alloc in self._by_job.items():
            for node, indices in alloc.items():
                for i in indices:
                    assert (node, i) not in seen, f"{node}:{i} held by {seen[(node, i)]} and {job_id}"
                    seen[(node, i)] = job_id
                    assert self._slot(node, i).job_id == job_id
        for slots in self.nodes.values():
            for s in slots:
                assert (
                    (s.state is SlotState.ALLOCATED) == (s.job_id is not None) == ((s.node, s.index) in seen)
                )
