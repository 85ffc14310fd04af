"""Where gpuq touches Ray: nodes, placement groups, runners and node agents.

Everything here is an effect; the decisions come from policy.plan(). A job runs in
one *slot* per node it uses: a detached placement group with one GPU bundle pinned to
that node, and a runner actor inside it (orchestrator/node/runner.py). Slots are parked
when their job ends and reused by the next job of the same shape on that node.
Facts this relies on (measured on Ray 2.60):
- tasks and non-detached actors fate-share with their owner, and a placement group
  with the default lifetime is removed when its creator dies even if it restarts:
  so slots are `lifetime="detached"` placement groups and detached named runners,
  which survive an orchestrator restart and are adopted by name;
- a bundle is pinned to a node by a per-node custom resource ({"GPU": 4,
  "gmi-node-2": 0.001}); a pinned bundle that cannot fit stays PENDING without
  error, so placement has its own time-out;
- Ray binds the lowest free GPU indices of the node to a bundle when the placement
  group is created, and `ray.get_gpu_ids()` inside the runner gives them.
Ray knows nothing of GPU health, so a GPU gpuq takes out of service is *quarantined*:
held by a detached one-GPU placement group of its own (`gpuq-quarantine-<node>-<i>`)
so that Ray never binds it to a job (see quarantine()).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import uuid
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, replace

import ray
from ray.util.placement_group import (
    PlacementGroup,
    placement_group,
    placement_group_table,
    remove_placement_group,
)
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from orchestrator.core import rayjob
from orchestrator.head.names import NAMESPACE
from orchestrator.head.nodes import NODE_SHARE, NodeInfo, discover_nodes
from orchestrator.head.quarantine import FILLER_PREFIX, Quarantine
from orchestrator.node import packagestore
from orchestrator.node.agent import NodeAgent, agent_name
from orchestrator.node.launchspec import LaunchSpec
from orchestrator.node.runner import Runner, rendezvous_env

log = logging.getLogger("gpuq.backend")


class AgentRefused(Exception):
    """A node agent raised (a fault it will not inject, a file it will not read)."""


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


class RayBackend(Quarantine):
    def __init__(
        self,
        data_root: str,
        cluster_id: str,
        placement_timeout_s: float,
        slot_idle_s: float = 60.0,
        warm_slots_per_node: int = 0,
        scratch: str | None = None,
    ):
        self.data_root = data_root
        self.scratch = scratch
        self.cluster_id = cluster_id
        self.placement_timeout_s = placement_timeout_s
        self.slot_idle_s = slot_idle_s
        self.warm_slots_per_node = warm_slots_per_node
        self.agents: dict[str, ray.actor.ActorHandle] = {}
        self.slots: dict[str, PlacementSlot] = {}
        self.capacity: dict[str, int] = {}
        self.node_ips: dict[str, str] = {}  # where Ray jobs' port ranges must not collide (core/rayjob.py)
        self.held_out: dict[tuple[str, int], PlacementGroup] = {}  # quarantined GPUs
        self.telemetry = "auto"
        self._quarantine_lock = asyncio.Lock()

    # --- nodes and agents -----------------------------------------------------------

    def ensure_agents(self, nodes: dict[str, NodeInfo]) -> None:
        for name, info in nodes.items():
            self.capacity[name] = info.gpus
            self.node_ips[name] = info.ip
            if name not in self.agents:
                self.agents[name] = NodeAgent.options(  # type: ignore[attr-defined]  # a ray.remote class
                    name=agent_name(name),
                    namespace=NAMESPACE,
                    lifetime="detached",
                    get_if_exists=True,
                    resources={name: NODE_SHARE},
                ).remote(name, self.data_root, self.cluster_id, info.gpus, self.telemetry)
                # An agent left by an earlier orchestrator keeps running: bring it up to date.
                self.agents[name].configure.remote(self.data_root, self.cluster_id, info.gpus, self.telemetry)

    def node_lost(self, node: str) -> None:
        """Ray declared the node dead: forget its agent and remove its slots and quarantine
        groups (a detached group would otherwise wait for the node forever, and a launch
        waiting on one of them fails now instead of at the placement time-out)."""
        self.agents.pop(node, None)
        self.capacity.pop(node, None)
        for slot in [s for s in self.slots.values() if s.node == node]:
            self.discard(slot)
        for (n, i), pg in list(self.held_out.items()):
            if n == node:
                remove_placement_group(pg)
                del self.held_out[(n, i)]

    async def call_agent(self, node: str, method: str, *args, timeout: float = 10.0):
        agent = self.agents.get(node)
        if agent is None:
            raise LookupError(f"no agent on node {node}")
        try:
            return await asyncio.wait_for(getattr(agent, method).remote(*args), timeout)
        except ray.exceptions.RayTaskError as e:  # the agent raised: its message, not Ray's traceback
            raise AgentRefused(str(e.cause if e.cause is not None else e)) from None
        except ray.exceptions.RayActorError:
            # Killed for good (or its node died): forget the handle so that ensure_agents
            # starts a new one instead of calling a dead actor forever.
            if self.agents.get(node) is agent:
                del self.agents[node]
            raise

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
        name = f"gpuq-slot-{uuid.uuid4().hex[:12]}"
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

    # Runtime-env packages in Ray's store (node/packagestore.py), by their stored names.
    def keep_packages(self, uris: set[str], keep_s: int) -> None:
        packagestore.keep_packages(uris, keep_s)

    def package_exists(self, stored: str, keep_s: int) -> bool:
        return packagestore.package_exists(stored, keep_s)

    def package_get(self, stored: str) -> bytes | None:
        return packagestore.package_get(stored)

    def package_put(self, stored: str, data: bytes, keep_s: int) -> None:
        packagestore.package_put(stored, data, keep_s)

    def runner(self, name: str):
        slot = self.slots.get(name)
        if slot is not None:
            return slot.runner
        try:
            return ray.get_actor(name, namespace=NAMESPACE)
        except ValueError:
            return None

    async def start(self, slots: list[str], spec: LaunchSpec, ray_job: dict | None = None) -> list[dict]:
        """Run the job's attempt (`spec`) on its slots, rank 0 first (its address is the
        others' rendezvous). Returns what each runner reports: node, the GPU ids Ray
        bound, pid, and with a runtime env (`spec.renv`) how long it took to make; raises
        RuntimeEnvFailed if a rank's could not be made. A Ray job (`ray_job`: the job's
        Python and the site's port settings) gets a private Ray cluster: each rank a node
        of it, rank 0 its head (node/raycluster.py)."""
        runners = [self.runner(n) for n in slots]
        if any(r is None for r in runners):
            raise RuntimeError("a slot of the job has no runner")
        # A one-slot job (most jobs) asks nothing before its launch: its slot's node and
        # GPUs are known here and its runner finds its own rendezvous port (Runner.run),
        # two round trips fewer per job. Several slots ask rank 0 for the address first.
        known = [self.slots.get(n) for n in slots]
        if len(runners) == 1 and known[0] is not None and known[0].ready and known[0].gpus and not ray_job:
            master, hellos = None, [{"node": known[0].node, "gpus": known[0].gpus}]
        else:
            master = await runners[0].rendezvous.remote()
            hellos = await asyncio.gather(*(r.hello.remote() for r in runners))
        nnodes, world = len(runners), sum(len(h["gpus"]) for h in hellos)
        # One token per attempt, made here and never stored: the cluster's alone.
        nodes = (
            rayjob.nodes(ray_job, hellos, self.node_ips, self.capacity, secrets.token_hex(32))
            if ray_job
            else [None] * nnodes
        )
        calls = []
        for rank, (runner, hello) in enumerate(zip(runners, hellos, strict=True)):
            env: dict[str, str] = {
                **spec.env,
                "GPUQ_CLUSTER": self.cluster_id,
                "GPUQ_NODE": str(hello["node"]),
                "GPUQ_NODE_RANK": str(rank),
                "GPUQ_NNODES": str(nnodes),
                "GPUQ_NUM_GPUS": str(len(hello["gpus"])),
                "GPUQ_WORLD_SIZE": str(world),
                # GPU indices mean the same to CUDA as to NVML (and so to gpuq's health checks).
                "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
                # torchrun reads these (and its PET_* equivalents) across the bundles.
                "NODE_RANK": str(rank),
                "PET_NNODES": str(nnodes),
                "PET_NODE_RANK": str(rank),
                "PET_NPROC_PER_NODE": str(len(hello["gpus"])),
                **(rendezvous_env(master) if master else {}),
            }
            calls.append(runner.run.remote(replace(spec, env=env), rank, nodes[rank]))
        infos = list(await asyncio.gather(*calls))
        failed = [i["setup_failed"] for i in infos if "setup_failed" in i]
        if failed:
            raise packagestore.RuntimeEnvFailed(failed[0])
        return infos

    async def wait(self, name: str, job_id: str, attempt: int, rank: int) -> dict | None:
        """The rank's exit record when its process ends; None when its runner (or the
        runner's node) is gone."""
        runner = self.runner(name)
        if runner is None:
            return None
        try:
            return await runner.wait.remote(job_id, attempt, rank)
        except ray.exceptions.RayError:
            return None

    def connected(self) -> bool:
        return ray.is_initialized()

    def has_runner(self, name: str) -> bool:
        return self.runner(name) is not None

    def discover(self) -> dict[str, NodeInfo]:
        return discover_nodes()

    def reap(self, live: list[str]) -> None:
        """Have each node kill processes of jobs not in `live` (a backstop)."""
        for agent in self.agents.values():
            agent.reap.remote(live)

    def stop(self, slots: list[str], job_id: str, attempt: int) -> None:
        for rank, name in enumerate(slots):
            r = self.runner(name)
            if r is not None:
                r.stop.remote(job_id, attempt, rank)

    def forget_unknown_slots(self, keep: set[str]) -> None:
        """After a restart: remove every gpuq slot (runner and placement group) that no job
        still needs, and any quarantine filler left half-way. Parked slots are not
        remembered across restarts."""
        for info in ray.util.list_named_actors(all_namespaces=True):
            name = info["name"]
            if info["namespace"] == NAMESPACE and name.startswith("gpuq-slot-") and name not in keep:
                try:
                    ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)
                except ValueError:
                    pass
        for pg_id, info in placement_group_table().items():
            name = info.get("name", "")
            stale = name.startswith("gpuq-slot-") and name not in keep or name.startswith(FILLER_PREFIX)
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
