"""The orchestrator as a detached Ray actor, and how to reach it.

`gpuq-orchestrator` in namespace `gpuq`: detached (it outlives whoever started it),
restarted by Ray without limit (`max_restarts=-1`; state comes back from the store),
pinned to the head node (where the store lives), reserving no CPU or GPU.
"""

from __future__ import annotations

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from orchestrator.head.names import NAMESPACE, ORCHESTRATOR_NAME
from orchestrator.head.requests import Requests
from orchestrator.head.service import OrchestratorService

# What callers may ask of the actor (the API, `gpuq up`, the tests); every one is a
# method of the service's requests part (head/requests.py). Its other parts (launches,
# the loop, the journal...) are not reachable through Ray.
PUBLIC = (
    "submit",
    "cancel",
    "hold",
    "release",
    "set_priority",
    "get_job",
    "list_jobs",
    "queue_view",
    "logs",
    "status",
    "resources",
    "history",
    "metrics_text",
    "usage_report",
    "fleet_events",
    "audit_trail",
    "drain",
    "undrain",
    "inject",
    "set_starts",
    "record",
    "ping",
    "pid",
    "package_exists",
    "package_put",
    "bulk",
    "webhook_deliveries",
)


class _Orchestrator:
    def __init__(self, config: dict | None = None):
        self._requests = OrchestratorService.open(config).requests


def _forward(name: str):
    async def method(self, *args, **kwargs):
        return await getattr(self._requests, name)(*args, **kwargs)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = getattr(Requests, name).__doc__
    return method


for _name in PUBLIC:
    setattr(_Orchestrator, _name, _forward(_name))

Orchestrator = ray.remote(num_cpus=0, max_restarts=-1)(_Orchestrator)


def head_node_id() -> str:
    for n in ray.nodes():
        if n.get("Alive") and n.get("Resources", {}).get("node:__internal_head__"):
            return n["NodeID"]
    return ray.get_runtime_context().get_node_id()


def start_orchestrator(config: dict | None = None, code: str | None = None):
    """Create the orchestrator if it does not exist yet; return its handle. `code`
    (rollout.code_version) puts it in a fresh worker process of its own."""
    return Orchestrator.options(
        name=ORCHESTRATOR_NAME,
        namespace=NAMESPACE,
        lifetime="detached",
        get_if_exists=True,
        scheduling_strategy=NodeAffinitySchedulingStrategy(head_node_id(), soft=False),
        **({"runtime_env": {"env_vars": {"GPUQ_CODE_VERSION": code}}} if code else {}),
    ).remote(config or {})


def get_orchestrator():
    return ray.get_actor(ORCHESTRATOR_NAME, namespace=NAMESPACE)
