"""Where gpuq touches Ray: nodes, placement groups, runners and node agents.

Everything here is an effect; the decisions come from policy.plan(). Facts this
relies on (measured on Ray 2.60):
- tasks and non-detached actors fate-share with their owner, and a placement group
  with the default lifetime is removed when its creator dies even if it restarts:
  so placement groups are `lifetime="detached"` and runners are detached named
  actors, which survive an orchestrator restart and are adopted by name;
- a bundle is pinned to a node by a per-node custom resource ({"GPU": 4,
  "gmi-node-2": 0.001}); a pinned bundle that cannot fit stays PENDING without
  error, so placement has its own time-out;
- Ray binds the lowest free GPU indices of the node to a bundle when the placement
  group is created, and `ray.get_gpu_ids()` inside the runner gives them.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import ray
from ray.util.placement_group import PlacementGroup, placement_group, placement_group_table, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from orchestrator.agent import NodeAgent, agent_name
from orchestrator.placement import Counts
from orchestrator.runner import Runner, runner_name

log = logging.getLogger("gpuq.backend")

NAMESPACE = "gpuq"
ORCHESTRATOR_NAME = "gpuq-orchestrator"
NODE_LABEL = "gmi/node"  # nodes are started with --labels gmi/node=<name> and --resources '{"<name>": 1}'
NODE_SHARE = 0.001  # of the per-node resource: pins a bundle without limiting how many fit


def pg_name(job_id: str, attempt: int) -> str:
    return f"gpuq-pg-{job_id}-{attempt}"


@dataclass(frozen=True)
class NodeInfo:
    name: str
    node_id: str
    gpus: int
    ip: str


def discover_nodes() -> dict[str, NodeInfo]:
    """GPU nodes that gpuq schedules on: alive, labelled with a node name that is also a
    custom resource of the node (so bundles can be pinned to it)."""
    found: dict[str, NodeInfo] = {}
    for n in ray.nodes():
        if not n.get("Alive"):
            continue
        name = (n.get("Labels") or {}).get(NODE_LABEL)
        resources = n.get("Resources") or {}
        gpus = int(resources.get("GPU", 0))
        if name and gpus > 0 and name in resources:
            found[name] = NodeInfo(name, n["NodeID"], gpus, n.get("NodeManagerAddress", ""))
    return dict(sorted(found.items()))


class RayBackend:
    def __init__(self, data_root: str, cluster_id: str, placement_timeout_s: float):
        self.data_root = data_root
        self.cluster_id = cluster_id
        self.placement_timeout_s = placement_timeout_s
        self.agents: dict[str, ray.actor.ActorHandle] = {}

    # --- nodes and agents -----------------------------------------------------------

    def ensure_agents(self, nodes: dict[str, NodeInfo]) -> None:
        for name in nodes:
            if name not in self.agents:
                self.agents[name] = NodeAgent.options(
                    name=agent_name(name), namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
                    resources={name: NODE_SHARE},
                ).remote(name, self.data_root, self.cluster_id)
            # An agent left by an earlier orchestrator keeps running: bring it up to date.
            self.agents[name].configure.remote(self.data_root, self.cluster_id)

    async def call_agent(self, node: str, method: str, *args, timeout: float = 10.0):
        agent = self.agents.get(node)
        if agent is None:
            raise LookupError(f"no agent on node {node}")
        return await asyncio.wait_for(getattr(agent, method).remote(*args), timeout)

    # --- placement ------------------------------------------------------------------

    async def place(self, job_id: str, attempt: int, counts: Counts) -> PlacementGroup | None:
        """A detached placement group with one GPU bundle per node; None (and nothing left
        behind) if Ray has not placed it within the time-out."""
        bundles = [{"GPU": float(n), node: NODE_SHARE} for node, n in counts.items()]
        pg = placement_group(bundles, strategy="PACK", name=pg_name(job_id, attempt), lifetime="detached")
        try:
            await asyncio.wait_for(pg.ready(), self.placement_timeout_s)
        except (asyncio.TimeoutError, ray.exceptions.RayError):
            remove_placement_group(pg)
            return None
        return pg

    async def launch(self, job_id: str, attempt: int, pg: PlacementGroup, counts: Counts, base_env: dict[str, str],
                     command: str, working_dir: str | None, time_limit: float, grace: float) -> list[dict]:
        """One runner per bundle, rank 0 first (its address is the rendezvous of the others).
        Returns what each runner reports: node, real GPU ids, pid."""
        runners = []
        for rank, (node, n) in enumerate(counts.items()):
            runners.append(Runner.options(
                name=runner_name(job_id, attempt, rank), namespace=NAMESPACE, lifetime="detached",
                get_if_exists=True, num_gpus=n, num_cpus=0,
                scheduling_strategy=PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=rank),
            ).remote(job_id, attempt, rank, node, self.data_root))
        master = await runners[0].rendezvous.remote()
        nnodes, world = len(counts), sum(counts.values())
        infos = []
        for rank, ((node, n), runner) in enumerate(zip(counts.items(), runners)):
            env = {
                **base_env,
                "GPUQ_CLUSTER": self.cluster_id, "GPUQ_NODE": node, "GPUQ_NODE_RANK": str(rank),
                "GPUQ_NNODES": str(nnodes), "GPUQ_NUM_GPUS": str(n), "GPUQ_WORLD_SIZE": str(world),
                # torchrun reads these (and its PET_* equivalents) across the bundles.
                "MASTER_ADDR": master["ip"], "MASTER_PORT": str(master["port"]), "NODE_RANK": str(rank),
                "PET_NNODES": str(nnodes), "PET_NODE_RANK": str(rank), "PET_NPROC_PER_NODE": str(n),
                "PET_MASTER_ADDR": master["ip"], "PET_MASTER_PORT": str(master["port"]),
            }
            infos.append(runner.start.remote(command, env, working_dir, time_limit, grace))
        return list(await asyncio.gather(*infos))

    # --- running jobs ---------------------------------------------------------------

    def runner(self, job_id: str, attempt: int, rank: int):
        try:
            return ray.get_actor(runner_name(job_id, attempt, rank), namespace=NAMESPACE)
        except ValueError:
            return None

    def stop(self, job_id: str, attempt: int, ranks: int) -> None:
        for rank in range(ranks):
            r = self.runner(job_id, attempt, rank)
            if r is not None:
                r.stop.remote()

    def cleanup(self, job_id: str, attempt: int, ranks: int) -> None:
        """Kill the job's runners and remove its placement group (idempotent)."""
        for rank in range(ranks):
            r = self.runner(job_id, attempt, rank)
            if r is not None:
                ray.kill(r, no_restart=True)
        self.remove_pg(pg_name(job_id, attempt))

    def remove_pg(self, name: str) -> None:
        for pg_id, info in placement_group_table().items():
            if info.get("name") == name and info.get("state") != "REMOVED":
                remove_placement_group(PlacementGroup(ray.PlacementGroupID(bytes.fromhex(pg_id))))

    def gpuq_pgs(self) -> list[str]:
        """Names of gpuq's placement groups that Ray still holds."""
        return [
            info["name"] for info in placement_group_table().values()
            if info.get("name", "").startswith("gpuq-pg-") and info.get("state") != "REMOVED"
        ]
