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

Nodes are looked at every NODE_LOOK_S (and at once when a runner dies: NodeLooks), with
their leases (core/lease.py). A node Ray declares dead, or whose lease has not been
renewed for `node_lease_s`, is *down* and nothing is planned on it; but its jobs may
still run there (a network partition stops nothing on the node), so it is *fencing*
until `requeue_at`, by when the node has stopped them itself. Only then are they
requeued (Fences tells the launches watching them). A node that registers again (a new
raylet under the same name) returns to service once its fence has ended; a new node
joins.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

from orchestrator.core.config import Config
from orchestrator.core.fleet import Fleet
from orchestrator.core.inventory import Inventory, SlotState
from orchestrator.core.job import Job
from orchestrator.core.lease import Contacts, ray_settled
from orchestrator.core.queue import JobQueue
from orchestrator.core.states import JobState
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


class Fences:
    """When each node's fence ends: a launch watching a job on a node waits for this
    before it takes a lost runner for an ended job (launches.Launches.monitor). The
    watch ends a fence after it has evicted the node's jobs. A node back in service
    starts a new generation, for the jobs launched on it after."""

    def __init__(self) -> None:
        self._over: dict[str, asyncio.Event] = {}

    def of(self, node: str) -> asyncio.Event:
        return self._over.setdefault(node, asyncio.Event())

    def ended(self, node: str) -> None:
        self.of(node).set()

    def renewed(self, node: str) -> None:
        if self.of(node).is_set():
            self._over[node] = asyncio.Event()


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
        contacts: Contacts,
        fences: Fences,
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
        self.contacts, self.fences = contacts, fences

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
        """Compare Ray's live GPU nodes and their leases with the inventory: joined,
        lost, fenced, back."""
        try:
            found = self.backend.discover()
        except Exception:  # the GCS did not answer: look again next time, change nothing
            log.exception("could not list Ray's nodes")
            return
        now = self.clock()
        self.read_leases(now)
        for name, info in found.items():
            if name not in self.inventory.nodes:
                self.inventory.add_node(name, info.gpus)
                self.fleet.node_added(name)
                self.contacts.contact(name, now)
                log.info("node %s joined with %d GPUs", name, info.gpus)
                self.journal.save([], kv={"fleet": self.fleet.saved()})
            elif name in self.fleet.down:
                # Back once its fence is over (never while its old jobs may run there), its
                # lease is renewed again (Ray may still list a raylet cut off for longer
                # than the lease) and Ray can no longer declare its raylet dead.
                down = self.fleet.down[name]
                if (
                    not down.fencing
                    and self.contacts.renewed_since_lost(name, now)
                    and ray_settled(down.since, self.site.node_lease_s, now)
                ):
                    self.node_back(name)
            elif name in self.nodes and self.nodes[name].node_id != info.node_id:
                # A new raylet under the old name between two looks: the old one's jobs
                # may still run on the host (a raylet that exited left them to their fence).
                self.node_lost(name, "its raylet was replaced")
            elif self.contacts.lapsed(name, now):
                self.node_lost(name, f"its lease was not renewed for {self.contacts.late(name, now):.0f} s")
        for name in list(self.inventory.nodes):
            if name not in found and name not in self.fleet.down:
                self.node_lost(name, "Ray reports its raylet dead")
        self.end_fences(now)
        if found != self.nodes:
            self.nodes = found
            self.backend.ensure_agents(self.serving())
            self.tasks.wake()

    def serving(self) -> dict[str, NodeInfo]:
        """Ray's live nodes that are not down: a node whose lease ran out may still be
        listed by Ray, but its agent is not called (nor judged silent) until it is back."""
        return {n: info for n, info in self.nodes.items() if n not in self.fleet.down}

    def read_leases(self, now: float) -> None:
        try:
            values = self.backend.leases(list(self.inventory.nodes))
        except Exception:  # the GCS did not answer in time: no renewal seen, which is safe
            log.warning("could not read the node leases", exc_info=True)
            return
        for node, value in values.items():
            self.contacts.heard(node, value, now)

    def node_lost(self, node: str, reason: str) -> None:
        now = self.clock()
        requeue_at = max(now, self.contacts.requeue_at(node))
        holders = self.fleet.node_lost(node, reason, now, requeue_at)
        log.warning(
            "node %s is down: %s; %d job(s) requeued in %.0f s, when the node has stopped them",
            node,
            reason,
            len(holders),
            requeue_at - now,
        )
        self.metrics.health_events.labels("node_down").inc()
        self.notifier.node_down(node, reason, now)
        self.backend.node_lost(node)  # its slots, agent and quarantine groups are gone with it
        self.contacts.forget(node)
        changed = []
        for job_id in holders:
            job = self.queue.get(job_id)
            if job.state in (JobState.SCHEDULED, JobState.ALLOCATING) and not job.slots.get(job.attempts + 1):
                # Still being placed: nothing of it was started there, so it can go at once.
                changed.append(self._evict(job_id, now, f"node {node} down: {reason}"))
                continue
            job.note(
                now,
                "fencing",
                f"node {node} down ({reason}): the job may still run there, so it is requeued at "
                f"{_clock_time(requeue_at)} UTC, when the node has certainly stopped it",
            )
            changed.append(job)
        self.journal.save(changed, kv={"fleet": self.fleet.saved()})
        self.tasks.wake()
        self.end_fences(now)

    def end_fences(self, now: float) -> None:
        """Requeue the jobs of nodes whose fence is over; then tell the launches."""
        for node in self.fleet.fences_due(now):
            down = self.fleet.down[node]
            changed = [
                self._evict(
                    job_id, now, f"node {node} down: {down.reason}; its jobs stopped there by the fence"
                )
                for job_id in self.fleet.holders(node)
                if job_id in self.queue
            ]
            self.fleet.fence_ended(node, now)
            log.warning("node %s fenced: %d job(s) requeued", node, len(changed))
            self.journal.save(changed, kv={"fleet": self.fleet.saved()})
            self.fences.ended(node)
            self.tasks.wake()

    def node_back(self, node: str) -> None:
        back = self.fleet.node_back(node, self.clock(), self.site.node_return_to_service)
        self.contacts.contact(node, self.clock())
        self.fences.renewed(node)
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
        self.backend.ensure_agents(self.serving())  # replaces agents that died
        nodes = [n for n in self.backend.agents if n not in self.fleet.down]
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


def _clock_time(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%H:%M:%S")
