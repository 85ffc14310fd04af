"""The orchestrator as a detached Ray actor, and how to reach it.

`gpuq-orchestrator` in namespace `gpuq`: detached (it outlives whoever started it),
restarted by Ray without limit (`max_restarts=-1`; state comes back from the store),
pinned to the head node (where the store lives), reserving no CPU or GPU.
"""

from __future__ import annotations

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from orchestrator.head.cluster import ClusterRequests
from orchestrator.head.names import NAMESPACE, ORCHESTRATOR_NAME
from orchestrator.head.requests import Requests
from orchestrator.head.service import OrchestratorService

# What callers may ask of the actor (the API, `gpuq up`, the tests): the methods of the
# service's two request parts. Its other parts (launches, the loop, the journal...) are
# not reachable through Ray.
JOB_REQUESTS = (  # requests.Requests
    "submit",
    "cancel",
    "hold",
    "release",
    "set_priority",
    "bulk",
    "get_job",
    "list_jobs",
    "queue_view",
    "logs",
    "package_exists",
    "package_put",
)
CLUSTER_REQUESTS = (  # cluster.ClusterRequests
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
    "webhook_deliveries",
    "ping",
    "pid",
)
PUBLIC = JOB_REQUESTS + CLUSTER_REQUESTS


class _Orchestrator:
    def __init__(self, config: dict | None = None):
        service = OrchestratorService.open(config)
        self._parts = {name: service.requests for name in JOB_REQUESTS} | {
            name: service.cluster for name in CLUSTER_REQUESTS
        }


def _forward(name: str, part: type):
    async def method(self, *args, **kwargs):
        return await getattr(self._parts[name], name)(*args, **kwargs)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = getattr(part, name).__doc__
    return method


for _name in JOB_REQUESTS:
    setattr(_Orchestrator, _name, _forward(_name, Requests))
for _name in CLUSTER_REQUESTS:
    setattr(_Orchestrator, _name, _forward(_name, ClusterRequests))

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
