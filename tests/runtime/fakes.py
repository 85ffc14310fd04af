"""A backend with RayBackend's methods and no Ray, for driving the orchestrator service
in unit tests: slots are names, runs are futures the test ends, and every request the
service makes is recorded."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from orchestrator.head.nodes import NodeInfo
from orchestrator.node.launchspec import LaunchSpec
from orchestrator.node.packagestore import RuntimeEnvFailed

NODES = {"gmi-node-1": 8, "gmi-node-2": 8}


@dataclass
class FakeSlot:
    name: str
    node: str
    size: int
    gpus: list[int] = field(default_factory=list)
    parked_at: float | None = None
    ready: bool = True


class FakeBackend:
    def __init__(self, clock, nodes: dict[str, int] | None = None):
        self.clock = clock
        self.node_sizes = dict(nodes or NODES)
        self.slots: dict[str, FakeSlot] = {}
        self.agents = {n: object() for n in self.node_sizes}
        self.telemetry = "simulated"
        self.lease_s: float | None = None
        self.runs: dict[tuple[str, int, int], asyncio.Future] = {}  # (job, attempt, rank) -> exit record
        self.started: list[tuple[str, int]] = []  # (job, attempt), in order
        self.stopped: list[tuple[str, int]] = []
        self.placeable = True  # False: acquire() waits, then times out, as a placement Ray cannot make
        self.placement_wait_s = 0.3
        self.lost_nodes: list[str] = []
        self.env_failure: str | None = None  # set: a runtime env's setup fails with these words
        self.envs: list[dict | None] = []  # what each start asked the node to make (runtime_env.plan)
        self.limits: list[dict | None] = []  # the CPU and memory limits each start asked for
        self.specs: list[LaunchSpec] = []  # every attempt started, as the service described it
        self.kept: list[set[str]] = []  # packages kept, each round
        self.packages: dict[str, bytes] = {}  # Ray's store: stored name -> bytes
        self.node_ids = {n: f"id-{n}" for n in self.node_sizes}  # a new id: the node's raylet was replaced
        self._n = 0
        self._renewals = 0
        self.silent: set[str] = set()  # nodes whose lease is not renewed (cut off)
        self.on_disk: dict[tuple, dict] = {}  # (job, attempt, rank) -> the exit record on its node

    # --- what the service calls --------------------------------------------------------

    def discover(self) -> dict[str, NodeInfo]:
        return {
            n: NodeInfo(n, self.node_ids.get(n, f"id-{n}"), g, "127.0.0.1")
            for n, g in self.node_sizes.items()
        }

    def ensure_agents(self, nodes) -> None:
        pass

    def leases(self, nodes) -> dict[str, bytes | None]:
        """Every node renews, each look, unless a test silenced it (`silent`)."""
        self._renewals += 1
        return {n: None if n in self.silent else str(self._renewals).encode() for n in nodes}

    def node_lost(self, node) -> None:
        self.lost_nodes.append(node)
        for name in [n for n, s in self.slots.items() if s.node == node]:
            del self.slots[name]

    def connected(self) -> bool:
        return True

    async def acquire(self, node, size, prefer, avoid=frozenset()):
        deadline = asyncio.get_running_loop().time() + self.placement_wait_s
        while not self.placeable:  # as Ray does: wait for the placement, give up at the time-out
            if asyncio.get_running_loop().time() > deadline or node in self.lost_nodes:
                return None
            await asyncio.sleep(0.01)
        self._n += 1
        slot = FakeSlot(f"gpuq-slot-{self._n}", node, size, list(prefer))
        self.slots[slot.name] = slot
        return slot

    async def start(self, slots, spec: LaunchSpec, ray_job=None) -> list[dict]:
        job_id, attempt, renv = spec.job_id, spec.attempt, spec.renv
        self.specs.append(spec)
        self.limits.append(spec.limits)
        self.envs.append(renv)
        if renv and self.env_failure:
            raise RuntimeEnvFailed(self.env_failure)
        self.started.append((job_id, attempt))
        infos = []
        for rank, name in enumerate(slots):
            slot = self.slots[name]
            self.runs[(job_id, attempt, rank)] = asyncio.get_running_loop().create_future()
            infos.append(
                {
                    "node": slot.node,
                    "gpus": slot.gpus,
                    "pid": 1000 + rank,
                    "started_at": self.clock(),
                    **({"setup_s": 2.5} if renv else {}),
                }
            )
        return infos

    async def wait(self, name, job_id, attempt, rank):
        run = self.runs.get((job_id, attempt, rank))
        return None if run is None else await asyncio.shield(run)

    def stop(self, slots, job_id, attempt) -> None:
        self.stopped.append((job_id, attempt))
        for rank in range(len(slots)):
            self.end(job_id, attempt, rank, exit_code=-15, reason="stopped")

    async def call_agent(self, node, method, *args, timeout=10.0):
        if method == "read_exit":  # what a supervisor wrote on its node's disk, if anything
            return self.on_disk.get(tuple(args))
        return None  # no telemetry report

    def park(self, name) -> None:
        if name in self.slots:
            self.slots[name].parked_at = self.clock()

    def discard(self, name: str) -> None:
        self.slots.pop(name, None)

    def evict_idle(self) -> None:
        pass

    async def warm_up(self, free) -> None:
        pass

    async def quarantine(self, wanted, only=None) -> None:
        pass

    def reap(self, live) -> None:
        pass

    def has_runner(self, name) -> bool:
        return name in self.slots

    def keep_packages(self, uris, keep_s) -> None:
        self.kept.append(set(uris))

    def package_exists(self, stored, keep_s) -> bool:
        return stored in self.packages

    def package_get(self, stored) -> bytes | None:
        return self.packages.get(stored)

    def package_put(self, stored, data, keep_s) -> None:
        self.packages[stored] = data

    def adopt_slot(self, name, node, size, gpus) -> None:
        self.slots[name] = FakeSlot(name, node, size, list(gpus))

    def forget_unknown_slots(self, keep) -> None:
        for name in [n for n in self.slots if n not in keep]:
            del self.slots[name]

    def adopt_quarantine(self) -> None:
        pass

    # --- what the test does -------------------------------------------------------------

    def end(
        self, job_id: str, attempt: int, rank: int | None = None, exit_code: int = 0, reason: str = "exited"
    ) -> None:
        """The attempt's processes exit (every rank, unless one is named)."""
        for (j, a, r), run in self.runs.items():
            if j == job_id and a == attempt and rank in (None, r) and not run.done():
                run.set_result({"exit_code": exit_code, "reason": reason})

    def lose(self, job_id: str, attempt: int, rank: int = 0) -> None:
        """The runner dies without an exit record (its node went away)."""
        run = self.runs.get((job_id, attempt, rank))
        if run is not None and not run.done():
            run.set_result(None)
