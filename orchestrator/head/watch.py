"""The orchestrator's watch over its GPUs: telemetry in, health and drains applied.

Every `telemetry_interval_s` it asks each node agent for a report, lets the fleet
judge them (orchestrator/core/fleet.py, health.py), and applies what follows:
1. GPUs found unhealthy go out of service; the jobs on them are stopped and
   requeued as infrastructure failures (their retries are not used up);
2. allocated GPUs idle for the whole window are flagged on their job, once;
3. Ray is kept in step: out-of-service GPUs no job holds are quarantined
   (backend.quarantine), and returned ones are given back to Ray.
Admin drains and un-drains come through here too, so that every way a GPU leaves
or re-enters service is in one place and in the audit trail.

Nodes are looked at every NODE_LOOK_S (and at once when a runner dies: NodeLooks): a node Ray
declares dead is *down* and its jobs are requeued; a node that registers again (a new
raylet under the same name) returns to service; a new node joins. Ray's own health
check decides death (`gpuq up` sets it to about 3 s, localcluster.RAY_HEALTH_CHECK):
its verdict fences the node — a raylet marked dead exits with its workers even if it
was only slow — so requeueing never runs a job twice. gpuq adds no guess of its own
that Ray would not enforce.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Protocol

from orchestrator.core.config import Config
from orchestrator.core.fleet import Fleet
from orchestrator.core.inventory import Inventory, SlotState
from orchestrator.core.job import Job
from orchestrator.core.queue import JobQueue
from orchestrator.head.backends import Backend
from orchestrator.head.journal import Journal
from orchestrator.head.metrics import Metrics
from orchestrator.head.nodes import NodeInfo
from orchestrator.head.notify import Notifier
from orchestrator.head.tasks import Tasks, Wakeup
from orchestrator.node.telemetry import NodeReport

log = logging.getLogger("gpuq.watch")
HISTORY_STEP_S = 10.0
NODE_LOOK_S = 1.0  # one GCS call a second: cheap next to Ray's own 1 s health checks
HISTORY_POINTS = 360  # one hour at one point per HISTORY_STEP_S


class JobEvictions(Protocol):
    """What the watch asks when GPUs leave service under a job (launches.Launches does it)."""

    def evict(self, job: Job, reason: str) -> None: ...


class NodeLooks:
    """Looks at Ray's nodes asked for between the watch's own: a runner died, and its job's
    end must not be judged before its node, if it died too, is marked down (and the job
    evicted). Launches ask and wait; the watch's node loop looks and answers. Neither
    calls the other."""

    def __init__(self) -> None:
        self._asked = Wakeup()
        self._waiting: list[asyncio.Future] = []

    async def look_now(self) -> None:
        done = asyncio.get_event_loop().create_future()
        self._waiting.append(done)
        self._asked.set()
        await done

    async def until_asked(self, timeout: float) -> None:
        await self._asked.wait(timeout)

    def looked(self) -> None:
        waiting, self._waiting = self._waiting, []
        for done in waiting:
            if not done.done():
                done.set_result(None)


class GpuWatch:
    def __init__(
        self,
        *,
        site: Config,
        clock: Callable[[], float],
        queue: JobQueue,
        inventory: Inventory,
        fleet: Fleet,
        backend: Backend,
        journal: Journal,
        tasks: Tasks,
        metrics: Metrics,
        notifier: Notifier,
        jobs: JobEvictions,
        nodes: dict[str, NodeInfo],
        looks: NodeLooks,
    ):
        self.site, self.clock, self.queue, self.inventory, self.fleet = site, clock, queue, inventory, fleet
        self.backend, self.journal, self.tasks, self.metrics, self.notifier = (
            backend,
            journal,
            tasks,
            metrics,
            notifier,
        )
        self.jobs = jobs
        self.nodes = nodes  # Ray's live GPU nodes as last seen
        self.flagged: set[tuple[str, str, int]] = set()  # (job, node, gpu) idle flags already noted
        # The last hour of (time, allocated share, mean measured utilization), for the web
        # page's chart: researchers get it without running Prometheus.
        self.history: deque[tuple[float, float, float | None]] = deque(maxlen=HISTORY_POINTS)
        self._quarantining: asyncio.Task | None = None
        self.looks = looks

    async def run_nodes(self) -> None:
        while True:
            try:
                self.look_at_nodes()
            except Exception:  # the loop must go on, and a launch waiting on a look must hear
                log.exception("looking at the nodes failed")
            finally:
                self.looks.looked()
            await self.looks.until_asked(NODE_LOOK_S)

    def look_at_nodes(self) -> None:
        """Compare Ray's live GPU nodes with the inventory: joined, lost, back."""
        try:
            found = self.backend.discover()
        except Exception:  # the GCS did not answer: look again next time, change nothing
            log.exception("could not list Ray's nodes")
            return
        for name, info in found.items():
            if name not in self.inventory.nodes:
                self.inventory.add_node(name, info.gpus)
                self.fleet.node_added(name)
                log.info("node %s joined with %d GPUs", name, info.gpus)
                self.journal.save([], kv={"fleet": self.fleet.saved()})
            elif name in self.fleet.down:
                self.node_back(name)
            elif name in self.nodes and self.nodes[name].node_id != info.node_id:
                # A new raylet under the old name between two looks: the old one's jobs are gone.
                self.node_lost(name, "its raylet was replaced")
                self.node_back(name)
        for name in list(self.inventory.nodes):
            if name not in found and name not in self.fleet.down:
                self.node_lost(name, "Ray reports its raylet dead")
        if found != self.nodes:
            self.nodes = found
            self.backend.ensure_agents(found)
            self.tasks.wake()

    def node_lost(self, node: str, reason: str) -> None:
        now = self.clock()
        holders = self.fleet.node_lost(node, reason, now)
        log.warning("node %s is down: %s; requeueing %d job(s)", node, reason, len(holders))
        self.metrics.health_events.labels("node_down").inc()
        self.notifier.node_down(node, reason, now)
        self.backend.node_lost(node)  # its slots, agent and quarantine groups are gone with it
        changed = [self._evict(job_id, now, f"node {node} down: {reason}") for job_id in holders]
        self.journal.save(changed, kv={"fleet": self.fleet.saved()})
        self.tasks.wake()

    def node_back(self, node: str) -> None:
        back = self.fleet.node_back(node, self.clock(), self.site.node_return_to_service)
        log.info("node %s registered again; %d GPU(s) back in service", node, len(back))
        self.journal.save([], kv={"fleet": self.fleet.saved()})
        self.sync_ray()
        self.tasks.wake()

    async def run(self) -> None:
        while True:
            try:
                await self.poll()
            except Exception:  # telemetry must never stop; the next poll retries
                log.exception("telemetry poll failed")
            await asyncio.sleep(self.site.telemetry_interval_s)

    async def poll(self) -> None:
        self.backend.ensure_agents(self.nodes)  # replaces agents that died
        nodes = list(self.backend.agents)
        answers = await asyncio.gather(
            # Generous: a busy node answers late, and a late report is still news (silence
            # is judged over node_silent_after_s, not one poll).
            *(
                self.backend.call_agent(n, "report", timeout=max(5.0, self.site.telemetry_interval_s))
                for n in nodes
            ),
            return_exceptions=True,
        )
        now = self.clock()
        findings = []
        for node, answer in zip(nodes, answers, strict=True):
            findings += self.fleet.ingest(node, answer if isinstance(answer, NodeReport) else None, now)
        findings += self.fleet.silence(now)
        for f in findings:
            log.warning(
                "taking %s out of service: %s", f"{f.node}:{f.gpu}" if f.gpu is not None else f.node, f.reason
            )
            self.metrics.health_events.labels(f.kind).inc()
            self.take_out(
                f.node,
                None if f.gpu is None else [f.gpu],
                SlotState.UNHEALTHY.value,
                f.reason,
                "gpuq",
                requeue=True,
            )
        self.flag_idle(now)
        self.sync_ray()
        self.record(now)

    def record(self, now: float) -> None:
        if self.history and now - self.history[-1][0] < HISTORY_STEP_S:
            return
        inv = self.inventory
        readings = [g.utilization for r in self.fleet.reports.values() for g in r.gpus]
        self.history.append(
            (
                now,
                inv.allocated_count() / inv.total if inv.total else 0.0,
                sum(readings) / len(readings) if readings else None,
            )
        )

    def take_out(
        self, node: str, gpus: list[int] | None, state: str, reason: str, by: str, requeue: bool
    ) -> dict:
        now = self.clock()
        holders = self.fleet.take_out(node, gpus, state, reason, by, now)
        changed = []
        for job_id, on in holders.items():
            job = self.queue.get(job_id)
            where = ", ".join(f"{node}:{g}" for g in on)
            if requeue:
                self._evict(job_id, now, f"GPU {where} {state}: {reason}", note=f"{where} {state}: {reason}")
            else:
                job.note(now, "drain", f"{where} draining ({reason}): the job runs to its end")
            changed.append(job)
        self.journal.save(changed, kv={"fleet": self.fleet.saved()})
        self.tasks.wake()
        return {"node": node, "state": state, "jobs": sorted(holders)}

    def _evict(self, job_id: str, now: float, why: str, note: str | None = None):
        """Stop a job whose GPUs left service and put it back in line (launches.evict),
        saying why in its history."""
        job = self.queue.get(job_id)
        job.note(now, "evict", note or why)
        self.jobs.evict(job, why)
        return job

    def put_back(self, node: str, gpus: list[int] | None, by: str, reason: str) -> list[int]:
        back = self.fleet.put_back(node, gpus, by, self.clock(), reason)
        self.journal.save([], kv={"fleet": self.fleet.saved()})
        self.sync_ray()
        self.tasks.wake()
        return back

    def flag_idle(self, now: float) -> None:
        changed = []
        rules = self.fleet.monitor.rules
        for (node, gpu), (job_id, since) in self.fleet.idle(now).items():
            if (job_id, node, gpu) in self.flagged or job_id not in self.queue:
                continue
            self.flagged.add((job_id, node, gpu))
            job = self.queue.get(job_id)
            job.note(
                now,
                "idle",
                f"GPU {node}:{gpu} under {rules.idle_utilization:.0%} utilization for {now - since:.0f} s",
            )
            changed.append(job)
        if changed:
            self.journal.save(changed)

    def idle_of(self, job_id: str, now: float) -> list[str]:
        return sorted(f"{n}:{g}" for (n, g), (j, _) in self.fleet.idle(now).items() if j == job_id)

    def sync_ray(self) -> None:
        if self._quarantining is None or self._quarantining.done():
            self._quarantining = asyncio.get_event_loop().create_task(
                self.backend.quarantine(self.fleet.quarantined())
            )
