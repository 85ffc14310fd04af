"""The scheduling loop: plan on a snapshot of the queue and the GPUs, apply the plan.

It wakes on submit and job end (tasks.Tasks.wake), and every `loop_interval_s`. Each
cycle: the dependents whose dependencies settled join the line, the pure policy plans
(core/policy.py), and what it decided is applied: preemptions stopped, starts stored,
then launched (launches.py). Between cycles it keeps the housekeeping: reap strays,
keep named packages, let old history leave memory, prune the store.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from orchestrator.core import lifecycle
from orchestrator.core.config import Config
from orchestrator.core.decisions import Plan, Snapshot
from orchestrator.core.fairshare import UsageLedger
from orchestrator.core.idleness import Idle, idle_now, waiting_shapes
from orchestrator.core.inventory import Inventory
from orchestrator.core.policy import PolicyConfig, plan
from orchestrator.core.queue import JobQueue
from orchestrator.core.snapshot import snapshot_of
from orchestrator.core.states import JobState
from orchestrator.head.backends import Backend
from orchestrator.head.dependents import Dependents
from orchestrator.head.history import Records
from orchestrator.head.idempotency import Keys
from orchestrator.head.idle import IdleWatch
from orchestrator.head.journal import Journal
from orchestrator.head.launches import Launches
from orchestrator.head.metrics import Metrics
from orchestrator.head.notify import Notifier
from orchestrator.head.recovery import recover
from orchestrator.head.tasks import Tasks
from orchestrator.head.uploads import Uploads
from orchestrator.head.watch import GpuWatch

log = logging.getLogger("gpuq.orchestrator")
EXPLAIN_INTERVAL_S = 1.0
PRUNE_EVERY_S = 6 * 3600  # history past job_retention_days leaves the store this often (and at start)


class SchedulingLoop:
    def __init__(
        self,
        *,
        site: Config,
        clock: Callable[[], float],
        policy: PolicyConfig,
        queue: JobQueue,
        inventory: Inventory,
        usage: UsageLedger,
        dependents: Dependents,
        records: Records,
        journal: Journal,
        launches: Launches,
        backend: Backend,
        metrics: Metrics,
        tasks: Tasks,
        watch: GpuWatch,
        uploads: Uploads,
        notifier: Notifier,
        keys: Keys,
    ):
        self.site, self.clock, self.policy, self.queue, self.inventory = site, clock, policy, queue, inventory
        self.usage, self.dependents, self.records, self.journal = usage, dependents, records, journal
        self.launches, self.backend, self.metrics, self.tasks = launches, backend, metrics, tasks
        self.watch, self.uploads, self.notifier, self.keys = watch, uploads, notifier, keys
        self.last_plan: Plan | None = None  # with reasons and estimated starts (at most once a second)
        self.reserved: tuple[str, ...] = ()
        self.starts_stopped = False  # an admin stopped starts (requests.set_starts); memory only
        self.idle = IdleWatch(metrics)  # GPUs idle while jobs wait, and why
        self._explained_at = 0.0
        self._warming: asyncio.Task | None = None
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = self.tasks.spawn(self.run())

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def starting_jobs(self) -> bool:
        return self.site.start_jobs and not self.starts_stopped

    async def run(self) -> None:
        await recover(self.launches)
        self.watch.look_at_nodes()  # a node lost while no orchestrator looked: its jobs are evicted
        last_reap = last_kept = last_forgot = time.monotonic()
        last_pruned = float("-inf")
        self.uploads.keep()
        while True:
            try:
                self.cycle()
                self.backend.evict_idle()
                self.keep_warm()
            except Exception:  # a bad cycle must not stop scheduling; the next one retries
                log.exception("scheduling cycle failed")
            if time.monotonic() - last_reap > self.site.reap_interval_s:
                last_reap = time.monotonic()
                self.reap()
            if time.monotonic() - last_kept > self.site.package_keep_s / 4:
                last_kept = time.monotonic()
                self.uploads.keep()
            if time.monotonic() - last_forgot > min(60.0, self.site.job_memory_s / 4):
                last_forgot = time.monotonic()
                self.forget_history()
            if time.monotonic() - last_pruned > PRUNE_EVERY_S:
                last_pruned = time.monotonic()
                self.tasks.spawn(
                    asyncio.to_thread(
                        self.records.history.prune, self.clock() - self.site.job_retention_days * 86400
                    )
                )
            await self.tasks.until_woken(self.site.loop_interval_s)

    def snapshot(self, now: float) -> Snapshot:
        """What the policy plans on: the line, the GPUs, recent usage, stops under way and
        the reservations kept from the last cycle."""
        return snapshot_of(
            self.queue,
            self.inventory,
            now,
            self.usage.snapshot(now),
            frozenset(self.launches.stopping),
            self.reserved,
        )

    def cycle(self) -> None:
        """One scheduling cycle: plan on a snapshot, then apply the decisions."""
        now = self.clock()
        began = time.perf_counter()
        changed = self.dependents.check(now, self.last_plan)  # jobs waiting on others stay out of the line
        if changed:
            self.journal.save(changed)
        # Reasons and estimated starts cost more than the decisions (a busy queue wakes the
        # loop on every submit and every job end): refresh them at most once a second.
        explain = time.monotonic() - self._explained_at >= EXPLAIN_INTERVAL_S
        decided = plan(self.snapshot(now), now, self.policy, explain=explain)
        # Reservations stay with their jobs from cycle to cycle. Kept in memory only: after a
        # restart the first cycle reserves afresh, as it would have for the head of the line.
        self.reserved = tuple(decided.reservations)
        stopped = self.journal.failing is not None or not self.starting_jobs
        if self.journal.failing is not None:  # a start must be stored before it reaches Ray
            decided = decided.stopped(
                f"no job starts while the job store cannot write: {self.journal.failing}"
            )
        elif not self.starting_jobs:  # starts are stopped: keep the reasons, apply nothing
            decided = decided.stopped(
                "the site has stopped starting jobs (start_jobs = false)"
                if not self.site.start_jobs
                else "an admin stopped starting jobs (gpuq down --drain, or PUT /orchestrator/starts)"
            )
        self.queue.record_cycle()
        if explain:
            self._explained_at = time.monotonic()
            self.last_plan = decided
        effects = lifecycle.apply_plan(self.queue, self.inventory, decided, now)
        for job in effects.stop:
            self.launches.stop_job(job)
            self.metrics.decisions.labels("preempt").inc()
        for job in effects.launch:
            self.metrics.scheduled(job, now)
        self.idle.note(self.idle_after(decided, stopped), now)
        self.metrics.cycle.observe(time.perf_counter() - began)
        if effects.save:
            durable = self.journal.save(effects.save)
            for job in effects.launch:
                self.tasks.spawn(self.launches.launch(job, durable))

    def idle_after(self, decided: Plan, stopped: bool) -> Idle:
        """The GPUs as this cycle leaves them, for IdleWatch: who waits, what is free, and
        for which reservations (core/idleness.py says why each idle GPU is idle)."""
        inv, cfg = self.inventory, self.policy
        if cfg.capped:
            holding = [(job.user, job.gpus) for job in map(self.queue.get, inv.jobs())]
            shapes = waiting_shapes(self.queue.line, cfg.cap_for, holding)
        else:
            shapes = waiting_shapes(self.queue.line)
        free = {n: len(g) for n, g in inv.free().items()}
        kept = [r.counts for r in decided.reservations.values()]
        return idle_now(inv.sizes, inv.usable(), free, inv.allocated_count(), shapes, kept, stopped)

    def forget_history(self) -> None:
        """Ended jobs leave memory after job_memory_s; every read still finds them in the
        store (history.py), which keeps them for job_retention_days."""
        if self.journal.failing is not None:  # an end may not be written yet: keep them all
            return
        for job in self.records.forget(self.clock(), self.site.job_memory_s, set(self.launches.stopping)):
            self.notifier.states.pop(job.id, None)
            if job.idempotency_key:
                self.keys.forget(job.user, job.idempotency_key)

    def keep_warm(self) -> None:
        if self._warming is not None and not self._warming.done():
            return
        if self.queue.count(JobState.QUEUED) or not self.site.warm_slots_per_node:
            return  # waiting jobs need the GPUs now: no speculative slots
        free = {n: len(g) for n, g in self.inventory.free().items()}
        self._warming = self.tasks.spawn(self.backend.warm_up(free))

    def reap(self) -> None:
        """Backstop: have each node kill processes of jobs that are no longer running
        (or being stopped). Jobs between scheduling and running count as running."""
        live = [j.id for j in self.queue.jobs() if j.state.holds_gpus] + list(self.launches.stopping)
        self.backend.reap(live)
