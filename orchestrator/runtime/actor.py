"""The orchestrator as a detached Ray actor, and how to reach it.

`gpuq-orchestrator` in namespace `gpuq`: detached (it outlives whoever started it),
restarted by Ray without limit (`max_restarts=-1`; state comes back from the store),
pinned to the head node (where the store lives), reserving no CPU or GPU.
"""

from __future__ import annotations

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from orchestrator.runtime.names import NAMESPACE, ORCHESTRATOR_NAME
from orchestrator.runtime.service import OrchestratorService


@ray.remote(num_cpus=0, max_restarts=-1)
class Orchestrator(OrchestratorService):
    pass


def head_node_id() -> str:
    for n in ray.nodes():
        if n.get("Alive") and n.get("Resources", {}).get("node:__internal_head__"):
            return n["NodeID"]
    return ray.get_runtime_context().get_node_id()


def start_orchestrator(config: dict | None = None):
    """Create the orchestrator if it does not exist yet; return its handle."""
    return Orchestrator.options(
        name=ORCHESTRATOR_NAME, namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
        scheduling_strategy=NodeAffinitySchedulingStrategy(head_node_id(), soft=False),
    ).remote(config or {})


def get_orchestrator():
    return ray.get_actor(ORCHESTRATOR_NAME, namespace=NAMESPACE)
