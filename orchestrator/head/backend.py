"""Where gpuq touches Ray: node agents, runners, packages, and the GPUs it holds.

Everything here is an effect; the decisions come from policy.plan(). What holds GPUs
on Ray (slots, quarantine groups) is the placements part (placements.py); this adds
each node's agent, starting a job's attempt on its slots' runners, waiting for its
ranks, and Ray's package store. Facts this relies on (measured on Ray 2.60): tasks and
non-detached actors fate-share with their owner, so agents and runners are detached
named actors, which survive an orchestrator restart and are adopted by name.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Set as AbstractSet
from dataclasses import replace

import ray

from orchestrator.core import lease, rayjob
from orchestrator.head.names import NAMESPACE
from orchestrator.head.nodes import NODE_SHARE, NodeInfo, discover_nodes
from orchestrator.head.placements import Placements, PlacementSlot
from orchestrator.node import packagestore
from orchestrator.node.agent import NodeAgent, agent_name
from orchestrator.node.launchspec import LaunchSpec
from orchestrator.node.runner import rendezvous_env

log = logging.getLogger("gpuq.backend")


class AgentRefused(Exception):
    """A node agent raised (a fault it will not inject, a file it will not read)."""


class RayBackend:
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
        self.cluster_id = cluster_id
        self.placements = Placements(
            data_root, scratch, placement_timeout_s, slot_idle_s, warm_slots_per_node
        )
        self.agents: dict[str, ray.actor.ActorHandle] = {}
        self.node_ips: dict[str, str] = {}  # where Ray jobs' port ranges must not collide (core/rayjob.py)
        self.telemetry = "auto"
        self.lease_s: float | None = None  # the site's node_lease_s, told to every agent

    # --- nodes and agents -----------------------------------------------------------

    def ensure_agents(self, nodes: dict[str, NodeInfo]) -> None:
        for name, info in nodes.items():
            self.placements.capacity[name] = info.gpus
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
                self.agents[name].configure.remote(
                    self.data_root, self.cluster_id, info.gpus, self.telemetry, self.lease_s
                )

    def leases(self, nodes: list[str]) -> dict[str, bytes | None]:
        """Each node's lease as its agent last wrote it in the GCS (core/lease.py)."""
        from ray._private import worker

        keys = [lease.key(n).encode() for n in nodes]
        gcs = worker.global_worker.gcs_client  # type: ignore[attr-defined]  # set once connected
        got = gcs.internal_kv_multi_get(keys, namespace=lease.NAMESPACE, timeout=lease.RENEW_TIMEOUT_S)
        return {n: got.get(k) for n, k in zip(nodes, keys, strict=True)}

    def node_lost(self, node: str) -> None:
        """Ray declared the node dead: forget its agent, and what gpuq held there."""
        self.agents.pop(node, None)
        self.placements.node_lost(node)

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

    # --- GPUs held on Ray: placements.py ------------------------------------------

    async def acquire(
        self, node: str, size: int, prefer: list[int], avoid: AbstractSet[int] = frozenset()
    ) -> PlacementSlot | None:
        return await self.placements.acquire(node, size, prefer, avoid)

    async def warm_up(self, free: dict[str, int]) -> None:
        await self.placements.warm_up(free)

    def park(self, name: str) -> None:
        self.placements.park(name)

    def discard(self, name: str) -> None:
        self.placements.discard(name)

    def evict_idle(self) -> None:
        self.placements.evict_idle()

    async def quarantine(self, wanted: dict[str, set[int]], only: str | None = None) -> None:
        await self.placements.quarantine(wanted, only)

    def adopt_quarantine(self) -> None:
        self.placements.adopt_quarantine()

    def forget_unknown_slots(self, keep: set[str]) -> None:
        self.placements.forget_unknown_slots(keep)

    def adopt_slot(self, name: str, node: str, size: int, gpus: list[int]) -> None:
        self.placements.adopt_slot(name, node, size, gpus)

    @property
    def slots(self) -> dict[str, PlacementSlot]:
        return self.placements.slots

    # Runtime-env packages in Ray's store (node/packagestore.py), by their stored names.
    def keep_packages(self, uris: set[str], keep_s: int) -> None:
        packagestore.keep_packages(uris, keep_s)

    def package_exists(self, stored: str, keep_s: int) -> bool:
        return packagestore.package_exists(stored, keep_s)

    def package_get(self, stored: str) -> bytes | None:
        return packagestore.package_get(stored)

    def package_put(self, stored: str, data: bytes, keep_s: int) -> None:
        packagestore.package_put(stored, data, keep_s)

    async def start(self, slots: list[str], spec: LaunchSpec, ray_job: dict | None = None) -> list[dict]:
        """Run the job's attempt (`spec`) on its slots, rank 0 first (its address is the
        others' rendezvous). Returns what each runner reports: node, the GPU ids Ray
        bound, pid, and with a runtime env (`spec.renv`) how long it took to make; raises
        RuntimeEnvFailed if a rank's could not be made. A Ray job (`ray_job`: the job's
        Python and the site's port settings) gets a private Ray cluster: each rank a node
        of it, rank 0 its head (node/raycluster.py)."""
        runners = [self.placements.runner(n) for n in slots]
        if any(r is None for r in runners):
            raise RuntimeError("a slot of the job has no runner")
        # A one-slot job (most jobs) asks nothing before its launch: its slot's node and
        # GPUs are known here and its runner finds its own rendezvous port (Runner.run),
        # two round trips fewer per job. Several slots ask rank 0 for the address first.
        known = [self.placements.slots.get(n) for n in slots]
        if len(runners) == 1 and known[0] is not None and known[0].ready and known[0].gpus and not ray_job:
            master, hellos = None, [{"node": known[0].node, "gpus": known[0].gpus}]
        else:
            master = await runners[0].rendezvous.remote()
            hellos = await asyncio.gather(*(r.hello.remote() for r in runners))
        nnodes, world = len(runners), sum(len(h["gpus"]) for h in hellos)
        # One token per attempt, made here and never stored: the cluster's alone.
        nodes = (
            rayjob.nodes(ray_job, hellos, self.node_ips, self.placements.capacity, secrets.token_hex(32))
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
        runner = self.placements.runner(name)
        if runner is None:
            return None
        try:
            return await runner.wait.remote(job_id, attempt, rank)
        except ray.exceptions.RayError:
            return None

    def connected(self) -> bool:
        return ray.is_initialized()

    def has_runner(self, name: str) -> bool:
        return self.placements.runner(name) is not None

    def discover(self) -> dict[str, NodeInfo]:
        return discover_nodes()

    def reap(self, live: list[str]) -> None:
        """Have each node kill processes of jobs not in `live` (a backstop)."""
        for agent in self.agents.values():
            agent.reap.remote(live)

    def stop(self, slots: list[str], job_id: str, attempt: int) -> None:
        for rank, name in enumerate(slots):
            r = self.placements.runner(name)
            if r is not None:
                r.stop.remote(job_id, attempt, rank)
