"""What is asked of the cluster as a whole: its status and resources, drains and faults,
starts stopped or resumed, usage and utilization history, the audit trail, fleet
events, metrics and webhook deliveries.

The actor's public methods about one job, or many, forward to requests.Requests; these
forward here (actor.PUBLIC). Changes are audited in the same commit as the change,
with who asked (`by`); drains and undrains come from admin routes only.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from orchestrator.core.accounting import Accounting
from orchestrator.core.errors import InvalidSpec
from orchestrator.core.fleet import Fleet
from orchestrator.core.inventory import Inventory
from orchestrator.core.queue import JobQueue
from orchestrator.core.rights import Caller
from orchestrator.core.states import JobState
from orchestrator.head import views
from orchestrator.head.audit import audit
from orchestrator.head.backend import AgentRefused
from orchestrator.head.backends import Backend
from orchestrator.head.journal import Journal
from orchestrator.head.launches import Launches
from orchestrator.head.loop import SchedulingLoop
from orchestrator.head.metrics import Metrics
from orchestrator.head.notify import Notifier
from orchestrator.head.store import Store
from orchestrator.head.tasks import Tasks
from orchestrator.head.watch import GpuWatch


class ClusterRequests:
    def __init__(
        self,
        *,
        clock: Callable[[], float],
        queue: JobQueue,
        inventory: Inventory,
        fleet: Fleet,
        accounting: Accounting,
        journal: Journal,
        tasks: Tasks,
        launches: Launches,
        loop: SchedulingLoop,
        watch: GpuWatch,
        backend: Backend,
        store: Store,
        metrics: Metrics,
        notifier: Notifier,
        about: views.About,
    ):
        self.clock, self.queue, self.inventory, self.fleet = clock, queue, inventory, fleet
        self.accounting, self.journal, self.tasks, self.launches = accounting, journal, tasks, launches
        self.loop, self.watch, self.backend, self.store = loop, watch, backend, store
        self.metrics, self.notifier, self.about = metrics, notifier, about

    async def status(self) -> dict:
        return views.status(
            queue=self.queue,
            inventory=self.inventory,
            fleet=self.fleet,
            backend=self.backend,
            about=self.about,
            loop_running=self.backend.connected() and self.loop.running,
            starting_jobs=self.loop.starting_jobs,
            store_error=self.journal.failing,
            now=self.clock(),
            busy_while_waiting=self.loop.idle.summary(self.clock()),
        )

    async def resources(self) -> dict:
        return views.resources(self.inventory, self.queue, self.fleet, self.watch.nodes, self.clock())

    async def drain(
        self, node: str, gpus: list[int] | None, reason: str, by: str, requeue: bool = False
    ) -> dict:
        """Take GPUs (a whole node by default) out of service, like `scontrol update
        state=drain`: running jobs finish unless `requeue`, nothing new is placed there."""
        self.journal.writable()
        if not isinstance(reason, str) or not reason.strip():
            raise InvalidSpec(
                [("reason", "is required: say why the GPUs are drained (it is kept in the audit trail)")]
            )
        out = self.watch.take_out(node, gpus, "drained", reason.strip(), by, requeue=requeue)
        targets = self.fleet.targets(node, gpus)
        await self.journal.save(
            [],
            audit=[
                audit(
                    self.clock(),
                    Caller(by, "admin"),
                    "drain",
                    node,
                    gpus=targets,
                    reason=reason.strip(),
                    requeue=requeue,
                )
            ],
        )
        return {**out, "gpus": targets}

    async def undrain(self, node: str, gpus: list[int] | None, by: str, reason: str = "") -> dict:
        """Put drained or unhealthy GPUs back in service (an admin's call)."""
        self.journal.writable()
        returned = self.watch.put_back(node, gpus, by, reason)
        await self.journal.save(
            [],
            audit=[audit(self.clock(), Caller(by, "admin"), "undrain", node, gpus=returned, reason=reason)],
        )
        return {"node": node, "returned": returned}

    async def inject(self, node: str, fault: str, gpu: int | None = None, value: float | None = None) -> str:
        """Inject a fault into a simulated node's telemetry (refused on real NVML)."""
        self.fleet.targets(node, None)  # an unknown node is an InvalidSpec naming the field
        try:
            answer = await self.backend.call_agent(node, "inject", fault, gpu, value)
        except AgentRefused as e:  # the agent refused: say why
            raise InvalidSpec([("fault", str(e))]) from None
        self.tasks.spawn(self.watch.poll())  # judge it now, not at the next poll
        return answer

    async def set_starts(self, enabled: bool, by: Caller | None = None) -> dict:
        """Stop or resume starting jobs, cluster-wide (`gpuq down --drain`, a maintenance
        window): submissions are still accepted and queued; running jobs go on. Kept in
        memory only: a restarted orchestrator starts jobs again unless the site config
        says `start_jobs = false`, which this cannot override."""
        if not isinstance(enabled, bool):
            raise InvalidSpec([("enabled", "must be true or false")])
        self.loop.starts_stopped = not enabled
        await self.journal.save([], audit=[audit(self.clock(), by, "starts", "cluster", enabled=enabled)])
        self.tasks.wake()
        return {"starting_jobs": self.loop.starting_jobs, "running": self.queue.count(JobState.RUNNING)}

    async def record(self, by: Caller, action: str, target: str, detail: dict) -> None:
        """Audit a change made elsewhere (the API's token changes); durable when it returns."""
        await self.journal.save([], audit=[audit(self.clock(), by, action, target, **detail)])

    async def audit_trail(
        self, limit: int = 100, who: str | None = None, action: str | None = None, since: float = 0.0
    ) -> list[dict]:
        return self.store.audit(limit, who, action, since)

    async def fleet_events(self, limit: int = 100) -> list[dict]:
        return list(self.fleet.events)[-limit:][::-1]

    async def usage_report(self, since: float, until: float | None = None, user: str | None = None) -> dict:
        now = self.clock()
        until = min(until or now, now)
        return self.accounting.report(since, until, self.launches.running_runs(now), user)

    async def history(self, window_s: float = 3600.0) -> dict:
        """Allocation and measured utilization over the last `window_s` (one point per 10 s)."""
        since = self.clock() - window_s
        return {
            "points": [list(p) for p in self.watch.history if p[0] >= since],
            "telemetry": sorted({r.source for r in self.fleet.reports.values()}),
        }

    async def metrics_text(self) -> bytes:
        return self.metrics.text()

    async def webhook_deliveries(self, limit: int = 100) -> dict:
        """Recent notification deliveries, newest first, and what each webhook has waiting."""
        return {
            "deliveries": list(self.notifier.recent)[-limit:][::-1],
            "waiting": {name: len(q) for name, q in self.notifier.queues.items()},
        }

    async def ping(self) -> str:
        return "ok"

    async def pid(self) -> int:
        return os.getpid()
