"""The orchestrator: the queue, the state machine and the loop that applies plans.

It runs as the detached asyncio Ray actor `gpuq-orchestrator` (head/actor.py): every
method and the loop run on one event loop, so the pure core (JobQueue, Inventory) needs
no locks. The loop's steps are poll the queue, check resources, allocate,
launch, monitor) and wakes on submit and job end, and every `loop_interval_s`.

Order of writes, so that a restart never starts a job twice or loses one:
1. SCHEDULED (with the planned GPUs) is stored before anything is asked of Ray;
2. ALLOCATING is stored before the placement group is created (named after job and
   attempt, so a restart can find or remove it);
3. runners are named after job, attempt and rank, and `start` is idempotent: a
   restart adopts what exists instead of launching again;
4. RUNNING is stored with the GPUs Ray really bound.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import Callable

from orchestrator.core import lifecycle
from orchestrator.core.accounting import Accounting, Run
from orchestrator.core.config import Config
from orchestrator.core.fairshare import UsageLedger
from orchestrator.core.inventory import Inventory
from orchestrator.core.job import Job
from orchestrator.core.packages import stored_uri
from orchestrator.core.policy import PolicyConfig, plan
from orchestrator.core.queue import JobQueue
from orchestrator.core.snapshot import snapshot_of
from orchestrator.core.states import JobState
from orchestrator.head import jobpython
from orchestrator.head.backend import RayBackend
from orchestrator.head.backends import Backend
from orchestrator.head.bulk import Bulk
from orchestrator.head.dependents import Dependents
from orchestrator.head.groupcommit import GroupCommit
from orchestrator.head.history import History, Records
from orchestrator.head.idempotency import Keys
from orchestrator.head.launches import Launches
from orchestrator.head.metrics import Metrics
from orchestrator.head.notify import Notifier
from orchestrator.head.quotas import PackageBytes
from orchestrator.head.recovery import recover
from orchestrator.head.requests import Requests
from orchestrator.head.store import Store
from orchestrator.head.watch import GpuWatch
from orchestrator.version import code_version, config_version

log = logging.getLogger("gpuq.orchestrator")
EXPLAIN_INTERVAL_S = 1.0
PRUNE_EVERY_S = 6 * 3600  # history past job_retention_days leaves the store this often (and at start)


class OrchestratorService(Requests, Launches):
    def __init__(self, config: dict | None = None, backend: Backend | None = None,
                 clock: Callable[[], float] = time.time):
        """`backend`: where jobs run (RayBackend unless a test passes its fake: both are a
        backends.Backend); `clock`: what "now" is for every state change and record."""
        self.site = Config.model_validate(config or {})
        self.versions = {"code": code_version(), "config": config_version(config)}  # gpuq up compares them
        self.clock = clock
        self.store = Store(self.site.resolved_store_path())
        if self.store.migrated_from is not None:
            log.warning("job store migrated in place from schema %d to %d (the old file is kept beside it as .bak)",
                        self.store.migrated_from, self.store.schema_version)
        self.durable = GroupCommit(self.store)
        self.cluster_id = str(self.store.get("cluster_id") or uuid.uuid4().hex[:12])
        self.backend = backend or RayBackend(self.site.resolved_data_dir(), self.cluster_id,
                                             self.site.placement_timeout_s, self.site.slot_idle_s,
                                             self.site.warm_slots_per_node, self.site.resolved_scratch_dir())
        self.backend.telemetry = self.site.telemetry
        self.policy = PolicyConfig.from_site(self.site)
        self.queue = JobQueue()
        self.usage = UsageLedger(self.site.fairshare_half_life_s)
        self.nodes = self.backend.discover()
        # The nodes Ray reports, and those known before that are not back (the watch shows
        # them down); GPU nodes that join later are added by the watch (watch.look_at_nodes).
        known = (self.store.get("fleet") or {}).get("nodes", {})
        self.inventory = Inventory.of({**known, **{n: info.gpus for n, info in self.nodes.items()}})
        # What every job's environment starts from (it inherits nothing of the service's).
        self.job_base_env = {"PATH": self.site.job_path, "LANG": os.environ.get("LANG") or "C.UTF-8",
                             **({"TZ": os.environ["TZ"]} if os.environ.get("TZ") else {})}
        # The jobs' Python: a Ray job's `python`, and what runtime-env virtualenvs are made from.
        self.job_python = jobpython.resolve(self.site.job_python, self.site.job_path)
        self.starts_stopped = False  # an admin stopped starts (set_starts); memory only
        self.stopping: set[str] = set()  # jobs told to stop whose GPUs are not back yet
        self.evicting: dict[str, str] = {}  # jobs stopped because their GPUs left service -> why
        self.metrics = Metrics(self)
        self.watch = GpuWatch(self, self.store.get("fleet"))
        self.fleet = self.watch.fleet
        now = self.clock()
        self.accounting = Accounting(Run(*row) for row in self.store.usage())
        for run in self.accounting.runs:  # fair-share remembers recent usage across restarts
            if now - run.end < 8 * self.site.fairshare_half_life_s:
                self.usage.add(run.user, run.gpu_seconds, run.end)
        self.last_plan = None
        self.reserved: tuple[str, ...] = ()
        self.started_at = self.clock()
        self.backend.ensure_agents(self.nodes)
        self._wake = asyncio.Event()
        self._warming: asyncio.Task | None = None
        self._explained_at = 0.0
        self._tasks: set[asyncio.Task] = set()
        stats = self.store.get("stats") or {}
        for key, value in stats.items():
            setattr(self.queue.stats, key, value)
        self.keys = Keys()  # idempotency keys: one key, one job (idempotency.py)
        self.package_bytes = PackageBytes(self.site.max_package_bytes_per_user, self.site.package_keep_s)
        for up in self.store.audit(limit=1_000_000, action="package", since=now - self.site.package_keep_s):
            self.package_bytes.add(up["who"], stored_uri(up["who"], up["target"]), up["detail"].get("bytes", 0),
                                   up["time"])
        # Live jobs and recent history in memory; older history stays in the store (history.py).
        history, cutoff = History(self.store), now - self.site.job_memory_s
        jobs, self.set_aside = self.store.load(now, ended_since=cutoff)
        self.queue.restore_history(history.counts_before(cutoff), history.last_seq())
        self.records = Records(self.queue, history, cutoff)
        self.dependents = Dependents(self.queue, self.records, self.site)
        self.bulk_actions = Bulk(self.queue, self.site, self.clock, self)
        for bad in self.set_aside:  # kept in the store's set_aside table; said where an admin looks
            log.error("job %s could not be loaded and was set aside: %s", bad.job_id, bad.error)
            self.fleet.store_event(now, bad.job_id, f"job record could not be loaded and was set aside "
                                                   f"(table set_aside): {bad.error}")
        for job in jobs:
            self.queue.restore(job)
            if job.idempotency_key:
                self.keys.known(job.user, job.idempotency_key, job.id)
        self.notifier = Notifier.for_site(self.site, self.metrics.webhook_dropped_inc, jobs, self.clock)  # webhooks
        self.store.save([], kv={"cluster_id": self.cluster_id, **({"fleet": self.fleet.saved()} if self.set_aside else {})})
        loop = asyncio.get_event_loop()
        self._loop_task = loop.create_task(self._run())
        self._background = [self._loop_task, loop.create_task(self.watch.run()), loop.create_task(self.watch.run_nodes()),
                            *self.notifier.start()]

    # --- the loop -------------------------------------------------------------------

    async def _run(self) -> None:
        await recover(self)
        self.watch.look_at_nodes()  # a node lost while no orchestrator looked: its jobs are evicted
        last_reap = last_kept = last_forgot = time.monotonic()
        last_pruned = float("-inf")
        self.keep_packages()
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
                self.keep_packages()
            if time.monotonic() - last_forgot > min(60.0, self.site.job_memory_s / 4):
                last_forgot = time.monotonic()
                self.forget_history()
            if time.monotonic() - last_pruned > PRUNE_EVERY_S:
                last_pruned = time.monotonic()
                self.spawn(asyncio.to_thread(self.records.history.prune,
                                             self.clock() - self.site.job_retention_days * 86400))
            try:
                await asyncio.wait_for(self._wake.wait(), self.site.loop_interval_s)
            except TimeoutError:
                pass
            self._wake.clear()

    def forget_history(self) -> None:
        """Ended jobs leave memory after job_memory_s; every read still finds them in the
        store (history.py), which keeps them for job_retention_days."""
        if self.durable.failing is not None:  # an end may not be written yet: keep them all
            return
        for job in self.records.forget(self.clock(), self.site.job_memory_s, set(self.stopping)):
            self.notifier.states.pop(job.id, None)
            if job.idempotency_key:
                self.keys.forget(job.user, job.idempotency_key)

    def keep_warm(self) -> None:
        if self._warming is not None and not self._warming.done():
            return
        if self.queue.count(JobState.QUEUED) or not self.site.warm_slots_per_node:
            return  # waiting jobs need the GPUs now: no speculative slots
        free = {n: len(g) for n, g in self.inventory.free().items()}
        self._warming = asyncio.get_event_loop().create_task(self.backend.warm_up(free))

    def reap(self) -> None:
        """Backstop: have each node kill processes of jobs that are no longer running
        (or being stopped). Jobs between scheduling and running count as running."""
        live = [j.id for j in self.queue.jobs() if j.state.holds_gpus] + list(self.stopping)
        self.backend.reap(live)

    def wake(self) -> None:
        self._wake.set()

    def cycle(self) -> None:
        """One scheduling cycle: plan on a snapshot, then apply the decisions."""
        now = self.clock()
        began = time.perf_counter()
        changed = self.dependents.check(now, self.last_plan)  # jobs waiting on others stay out of the line
        if changed:
            self.save(changed)
        snap = snapshot_of(self.queue, self.inventory, now, self.usage.snapshot(now), frozenset(self.stopping),
                           self.reserved)
        # Reasons and estimated starts cost more than the decisions (a busy queue wakes the
        # loop on every submit and every job end): refresh them at most once a second.
        explain = time.monotonic() - self._explained_at >= EXPLAIN_INTERVAL_S
        decided = plan(snap, now, self.policy, explain=explain)
        # Reservations stay with their jobs from cycle to cycle. Kept in memory only: after a
        # restart the first cycle reserves afresh, as it would have for the head of the line.
        self.reserved = tuple(decided.reservations)
        if self.durable.failing is not None:  # a start must be stored before it reaches Ray
            decided = decided.stopped(f"no job starts while the job store cannot write: {self.durable.failing}")
        elif not self.starting_jobs:  # starts are stopped: keep the reasons, apply nothing
            decided = decided.stopped("the site has stopped starting jobs (start_jobs = false)"
                                      if not self.site.start_jobs else
                                      "an admin stopped starting jobs (gpuq down --drain, or PUT /orchestrator/starts)")
        self.queue.record_cycle()
        if explain:
            self._explained_at = time.monotonic()
            self.last_plan = decided
        effects = lifecycle.apply_plan(self.queue, self.inventory, decided, now)
        for job in effects.stop:
            self.stop_job(job)
            self.metrics.decisions.labels("preempt").inc()
        for job in effects.launch:
            self.metrics.scheduled(job, now)
        self.metrics.cycle.observe(time.perf_counter() - began)
        if effects.save:
            durable = self.save(effects.save)
            for job in effects.launch:
                self.spawn(self.launch(job, durable))

    def close(self) -> None:
        """Stop every task of this service and close its store (tests restart it in-process)."""
        for task in (*self._background, *self._tasks):
            task.cancel()
        self.store.close()

    def spawn(self, coro) -> None:
        task = asyncio.get_event_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def save(self, jobs: list[Job], kv: dict | None = None, usage: list[tuple] | None = None,
             audit: list[tuple] | None = None) -> asyncio.Future:
        """Write jobs through to the store; await the result where the next step must not
        happen before the change is durable. `audit` rows (at, who, action, target,
        detail) commit in the same transaction as the change they record."""
        done = self.durable.save(jobs, kv={"stats": dict(self.queue.stats.__dict__), **(kv or {})}, usage=usage,
                                 audit=audit)
        self.notifier.jobs_changed(jobs, self.clock())  # queued for delivery; never waits
        done.add_done_callback(_report_store_failure)
        return done

    # --- launching and monitoring ---------------------------------------------------

    def stop_job(self, job: Job) -> None:
        """TERM, grace, KILL: the supervisor of each bundle does it."""
        self.stopping.add(job.id)
        self.backend.stop(job.slots.get(job.attempts + (1 if job.state is JobState.ALLOCATING else 0), []),
                          job.id, job.attempts)

    async def monitor(self, job: Job, attempt: int) -> None:
        """Wait for every rank of the attempt to end, then finish the job."""
        names = job.slots.get(attempt, [])
        waits = {rank: asyncio.ensure_future(self.backend.wait(name, job.id, attempt, rank))
                 for rank, name in enumerate(names)}
        results: dict[int, dict | None] = {}
        pending = set(waits.values())
        ended_first = None  # the rank whose end made gpuq stop the others
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for rank, fut in waits.items():
                if fut in done and rank not in results:
                    results[rank] = fut.result()
                    # One rank failed: stop the others. A Ray job is its driver (rank 0):
                    # its end, whatever its exit, ends the other nodes of its cluster.
                    failed = results[rank] is None or results[rank].get("exit_code") != 0
                    if pending and ended_first is None and (failed or (rank == 0 and job.spec.ray)):
                        ended_first = rank
                        self.backend.stop(names, job.id, attempt)
        if ended_first is not None and job.id not in self.stopping:
            results = lifecycle.judged_by(results, ended_first)
        if any(res is None for res in results.values()):
            # A runner died: if its node did, mark the node down now, so that the job is
            # requeued as evicted and nothing is planned on that node again.
            self.watch.look_at_nodes()
        # A runner that died without an exit record: ask its node whether the job ended.
        for rank, res in results.items():
            if res is None:
                node = job.node_of_rank(attempt, rank)
                try:
                    results[rank] = await self.backend.call_agent(node, "read_exit", job.id, attempt, rank) if node else None
                except Exception:
                    results[rank] = None
                self.backend.discard(names[rank])  # a slot whose runner failed is not reused
        self.finish(job, attempt, [results[r] for r in sorted(results)])

    def finish(self, job: Job, attempt: int, results: list[dict | None]) -> None:
        """The job's processes are gone: give its GPUs back, count its usage, and let the
        lifecycle decide its state from what the runners reported."""
        now = self.clock()
        evicted = self.evicting.pop(job.id, None)  # before give_back, which forgets it
        for name in job.slots.get(attempt, []):
            self.backend.park(name)
        started = job.state_times.get(JobState.RUNNING, now)
        run = None
        if job.state_times.get(JobState.RUNNING) is not None and job.placements.get(attempt):
            run = Run(job.id, attempt, job.user, job.gpus, started, now)
            self.usage.add(job.user, run.gpu_seconds, now)
            self.accounting.add(run)
        self.give_back(job)
        was_running = job.state is JobState.RUNNING
        ended = lifecycle.classify(results, evicted, lambda rank: job.node_of_rank(attempt, rank), job.user)
        self.carry_out(lifecycle.run_ended(self.queue, job, ended, now))
        if was_running:
            self.metrics.finished(job, now - started)
        if run is not None:
            self.save([], usage=[(run.job_id, run.attempt, run.user, run.gpus, run.start, run.end)])

    def evict(self, job: Job, reason: str) -> None:
        """Stop a job whose GPUs left service and put it back in line, as a failure that
        is not its own. Held GPUs stay out of service when the job lets them go."""
        was = job.state
        effects, stopping = lifecycle.evict(self.queue, job, reason, self.clock())
        if stopping:
            self.evicting[job.id] = reason  # how its run ends, when it ends
        elif was is JobState.SCHEDULED:
            self.give_back(job)  # nothing on Ray yet: its launch stops at the first check
        self.carry_out(effects)

    def carry_out(self, effects: lifecycle.Effects) -> None:
        """What a lifecycle step asks of the runtime: store, stop, launch; then a cycle."""
        if effects.save:
            durable = self.save(effects.save)
            for job in effects.launch:
                self.spawn(self.launch(job, durable))
        for job in effects.stop:
            self.stop_job(job)
        self.wake()

    def running_runs(self, now: float) -> list[Run]:
        """Runs still going, counted up to `now` (for usage and its metric)."""
        return [Run(j.id, j.attempts, j.user, j.gpus, j.state_times[JobState.RUNNING], now)
                for j in self.queue.jobs() if j.state is JobState.RUNNING and JobState.RUNNING in j.state_times]

    def give_back(self, job: Job) -> None:
        """Give the job's GPUs back and forget any stop owed to it."""
        if self.inventory.allocation_of(job.id) is not None:
            self.inventory.give_back(job.id)
        self.stopping.discard(job.id)
        self.evicting.pop(job.id, None)  # a launch given up, or a job ended: no stop is owed


def _report_store_failure(done: asyncio.Future) -> None:
    if not done.cancelled() and done.exception() is not None:
        log.error("job store write failed: %s", done.exception())
