"""Launches: a planned job from its slots to its end. Its slots come from Ray, its
command starts on them (as its user, with its runtime env, as a Ray cluster of its own
for a Ray job), its runners are watched, and its end is judged and applied.

A part the service composes (service.py): it owns the jobs being stopped and evicted,
and is handed everything else it uses. The order of writes that keeps a restart from
starting a job twice is service.py's docstring's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from orchestrator.core import lifecycle, rayjob, runtime_env
from orchestrator.core.accounting import Accounting, Run
from orchestrator.core.config import Config
from orchestrator.core.fairshare import UsageLedger
from orchestrator.core.fleet import Fleet
from orchestrator.core.inventory import Inventory
from orchestrator.core.job import Job
from orchestrator.core.lease import FENCE_KILL_S, Contacts
from orchestrator.core.queue import JobQueue
from orchestrator.core.states import JobState
from orchestrator.head.backends import Backend
from orchestrator.head.jobpython import JobPython
from orchestrator.head.journal import Journal
from orchestrator.head.metrics import Metrics
from orchestrator.head.tasks import Tasks
from orchestrator.head.watch import Fences, NodeLooks
from orchestrator.host.accounts import account_for
from orchestrator.node.launchspec import LaunchSpec
from orchestrator.node.packagestore import SETUP_FAILED, RuntimeEnvFailed

log = logging.getLogger("gpuq.orchestrator")


class Launches:
    def __init__(
        self,
        *,
        site: Config,
        clock: Callable[[], float],
        queue: JobQueue,
        inventory: Inventory,
        backend: Backend,
        journal: Journal,
        tasks: Tasks,
        metrics: Metrics,
        fleet: Fleet,
        usage: UsageLedger,
        accounting: Accounting,
        job_python: JobPython,
        job_base_env: dict[str, str],
        looks: NodeLooks,
        fences: Fences,
        contacts: Contacts,
    ):
        self.site, self.clock, self.queue, self.inventory = site, clock, queue, inventory
        self.backend, self.journal, self.tasks, self.metrics, self.fleet = (
            backend,
            journal,
            tasks,
            metrics,
            fleet,
        )
        self.usage, self.accounting, self.looks = usage, accounting, looks
        self.fences, self.contacts = fences, contacts
        self.job_python, self.job_base_env = job_python, job_base_env
        self.stopping: set[str] = set()  # jobs told to stop whose GPUs are not back yet
        self.evicting: dict[str, str] = {}  # jobs stopped because their GPUs left service -> why

    async def launch(self, job: Job, scheduled_stored: asyncio.Future) -> None:
        try:
            await scheduled_stored  # SCHEDULED is durable before anything is asked of Ray
            await self._launch_steps(job)
        except Exception as e:  # never leave a job stuck half-launched
            log.exception("launch of %s failed", job.id)
            attempt = job.attempts + (1 if job.state is JobState.ALLOCATING else 0)
            for name in job.slots.get(attempt, []):
                self.backend.discard(name)
            self.give_back(job)
            if (
                job.state is JobState.SCHEDULED
            ):  # its start was never stored, nothing reached Ray: back in line
                self.carry_out(lifecycle.not_started(self.queue, job, f"not started: {e}", self.clock()))
            else:
                self.carry_out(lifecycle.launch_failed(self.queue, job, str(e), self.clock()))

    async def _launch_steps(self, job: Job) -> None:
        if job.state is not JobState.SCHEDULED:
            return  # cancelled before its launch began; cancel gave its GPUs back
        attempt = job.attempts + 1
        # ALLOCATING is stored together with the slot names, below: a restart before that
        # finds the job SCHEDULED (back in line) and removes any slot no job names.
        self.queue.allocate(job.id, self.clock())
        names: list[str] = []
        for node, gpus in job.allocation.items():
            slot = await self.backend.acquire(node, len(gpus), gpus, self.fleet.out_of_service_on(node))
            if slot is not None:
                names.append(slot.name)
            if slot is None or job.state is not JobState.ALLOCATING:
                for name in names:
                    self.backend.park(name)
                evicted = self.evicting.get(job.id)  # its node went down or its GPUs left service
                self.give_back(job)
                self.carry_out(
                    lifecycle.not_started(self.queue, job, f"{evicted}; back in line", self.clock())
                    if evicted
                    else lifecycle.placement_timed_out(
                        self.queue, job, self.site.placement_timeout_s, self.clock()
                    )
                )
                return
        job.slots[attempt] = names
        await self.journal.save([job])  # before anything runs: a restart finds the slots by these names
        if (infos := await self.start_on(names, job, attempt)) is not None:
            await self.adopt(job, attempt, infos)

    async def start_on(self, names: list[str], job: Job, attempt: int) -> list[dict] | None:
        """Run the command as its user's account (accounts.py) in a clean environment, once
        its runtime env is made (the job is ALLOCATING meanwhile); what the runners say, or
        None if the env could not be made (the job failed, the tool's words in its history)."""
        env = {
            **job.spec.env,
            "GPUQ_JOB_ID": job.id,
            "GPUQ_RUN_ID": job.spec.run_id,
            "GPUQ_ATTEMPT": str(attempt),
            "GPUQ_USER": job.spec.user,
        }
        renv = runtime_env.plan(job.spec.runtime_env, job.user, self.site)
        if renv is not None:
            renv["python"] = self.job_python.path or "python3"
        if job.spec.ray and not self.job_python.ray_ready:  # the site changed since it was accepted
            raise RuntimeError(f"a Ray job needs a Python every user may run: {self.job_python.why_not}")
        ray_job = rayjob.plan(self.site, self.job_python.path or "python3") if job.spec.ray else None
        try:
            spec = LaunchSpec(
                job.id,
                attempt,
                job.spec.command,
                env,
                job.spec.working_dir,
                float(job.time_limit),
                self.site.stop_grace_s,
                account_for(job.spec.user, self.site.unix_users),
                self.job_base_env,
                self.site.job_logs_group_readable,
                renv,
                self.limits_of(job),
                self.site.node_lease_s,
            )
            infos = await self.backend.start(names, spec, ray_job)
        except RuntimeEnvFailed as e:
            for name in names:  # other ranks may be setting up, or running: their runners go
                self.backend.discard(name)
            self.give_back(job)
            # Its command never ran: `gpuq logs` and `ray job logs` show this (Requests.logs).
            job.note(self.clock(), SETUP_FAILED, f"[gpuq] runtime env setup failed:\n{e}\n")
            self.carry_out(lifecycle.runtime_env_failed(self.queue, job, str(e), self.clock()))
            return None
        for made in (i for i in infos if i.get("setup_s") is not None):
            job.note(
                self.clock(),
                "runtime_env",
                f"runtime env made on {made['node']} in {made['setup_s']:.1f} s, as "
                "its user (not counted in the time limit)",
            )
        return infos

    def limits_of(self, job: Job) -> dict:
        """The job's CPU and memory limits per node, else the site's per GPU (runner.rank_limits)."""
        return {
            "cpus": job.spec.cpus,
            "memory": job.spec.memory,
            "cpus_per_gpu": self.site.default_cpus_per_gpu,
            "memory_per_gpu": self.site.default_memory_per_gpu,
        }

    async def adopt(self, job: Job, attempt: int, infos: list[dict]) -> None:
        """The command runs: record where it really runs, then watch it."""
        actual = {info["node"]: sorted(info["gpus"]) for info in infos}
        for node in actual:  # its runner answered: the node was in touch (its lease counts from here)
            self.contacts.contact(node, self.clock())
        head = next((i["ray_head"] for i in infos if i.get("ray_head")), None)
        if head:
            job.ray_head = head
            job.note(
                self.clock(),
                "ray",
                f"a Ray program: its own Ray cluster of {len(infos)} node(s), head {head} on "
                f"{infos[0]['node']} (no dashboard); Ray's logs go to ray-logs/ in the "
                "job's folder on each node",
            )
        if job.state is JobState.ALLOCATING:
            moved = self.inventory.rebind(job.id, actual)
            for other_id, alloc in moved.items():  # still only planned: their plan follows Ray
                self.queue.get(other_id).allocation = alloc
            self.journal.save(
                [
                    self.queue.start(job.id, min(i["started_at"] for i in infos), actual),
                    *(self.queue.get(o) for o in moved),
                ]
            )
            if job.id in self.evicting:  # its GPUs left service while it was being placed
                self.stop_job(job)
        elif job.state is JobState.CANCELLED:
            self.stop_job(job)
        await self.monitor(job, attempt)

    def stop_job(self, job: Job) -> None:
        """TERM, grace, KILL: the supervisor of each bundle does it."""
        self.stopping.add(job.id)
        self.backend.stop(
            job.slots.get(job.attempts + (1 if job.state is JobState.ALLOCATING else 0), []),
            job.id,
            job.attempts,
        )

    async def monitor(self, job: Job, attempt: int) -> None:
        """Wait for every rank of the attempt to end, then finish the job."""
        names = job.slots.get(attempt, [])
        waits = {
            rank: asyncio.ensure_future(self.rank_end(name, job, attempt, rank))
            for rank, name in enumerate(names)
        }
        results: dict[int, dict | None] = {}
        pending = set(waits.values())
        ended_first = None  # the rank whose end made gpuq stop the others
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for rank, fut in waits.items():
                if fut in done and rank not in results:
                    result = results[rank] = fut.result()
                    # One rank failed: stop the others. A Ray job is its driver (rank 0):
                    # its end, whatever its exit, ends the other nodes of its cluster.
                    failed = result is None or result.get("exit_code") != 0
                    if pending and ended_first is None and (failed or (rank == 0 and job.spec.ray)):
                        ended_first = rank
                        self.backend.stop(names, job.id, attempt)
        if ended_first is not None and job.id not in self.stopping:
            results = lifecycle.judged_by(results, ended_first)
        if any(res is None for res in results.values()):
            # A runner died: if its node did, mark the node down now, so that the job is
            # requeued as evicted and nothing is planned on that node again.
            await self.looks.look_now()
        # A runner that died without an exit record: ask its node whether the job ended
        # (not a node that is down: its agent is out of reach, and the fence has spoken).
        for rank, res in results.items():
            if res is None:
                node = job.node_of_rank(attempt, rank)
                try:
                    results[rank] = (
                        await self.backend.call_agent(node, "read_exit", job.id, attempt, rank)
                        if node and node not in self.fleet.down
                        else None
                    )
                except Exception:
                    results[rank] = None
                self.backend.discard(names[rank])  # a slot whose runner failed is not reused
        self.finish(job, attempt, [results[r] for r in sorted(results)])

    async def rank_end(self, name: str, job: Job, attempt: int, rank: int) -> dict | None:
        """A rank's exit record, or None for a runner that is gone and a rank that has
        certainly stopped. A runner's death is not the job's end: its supervisor, on the
        node, may still be giving the job its grace (a TERM-proof command runs on), so
        the rank ends when its exit record is on the node's disk, or when its node's
        fence is over (watch.py), never before."""
        node = job.node_of_rank(attempt, rank)
        if node is None:
            return await self.backend.wait(name, job.id, attempt, rank)
        fenced = asyncio.ensure_future(self.fences.of(node).wait())
        ended = asyncio.ensure_future(self.backend.wait(name, job.id, attempt, rank))
        try:
            await asyncio.wait({ended, fenced}, return_when=asyncio.FIRST_COMPLETED)
            if not ended.done():
                return None  # fenced while its runner was out of reach: its processes are gone
            if (result := ended.result()) is not None:
                return result
            await self.looks.look_now()  # the runner is gone: so may its node be
            return await self.record_or_fence(job, attempt, rank, node, fenced)
        finally:
            for fut in (ended, fenced):
                if not fut.done():
                    fut.cancel()

    async def record_or_fence(
        self, job: Job, attempt: int, rank: int, node: str, fenced: asyncio.Future
    ) -> dict | None:
        """After a runner died: the rank's exit record from its node's agent once the
        supervisor has written it, or None once the node's fence is over (or the node
        was lost before leases). A supervisor that died with its runner writes none: past
        its grace and the fence's kill time, the node's agent kills what is left."""
        give_up = self.clock() + self.site.stop_grace_s + FENCE_KILL_S + self.site.node_fence_margin_s
        while True:
            down = self.fleet.down.get(node)
            if down is not None:
                if down.fencing:
                    await fenced
                return None
            try:
                record = await self.backend.call_agent(node, "read_exit", job.id, attempt, rank, timeout=5.0)
            except Exception:
                record = None
            if record:
                return record
            if self.clock() >= give_up:
                holding = [j.id for j in self.queue.jobs() if self.inventory.allocation_of(j.id) is not None]
                self.backend.reap([j for j in holding if j != job.id])
                return None
            await asyncio.wait({fenced}, timeout=1.0)

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
            self.journal.save([], usage=[(run.job_id, run.attempt, run.user, run.gpus, run.start, run.end)])

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
            durable = self.journal.save(effects.save)
            for job in effects.launch:
                self.tasks.spawn(self.launch(job, durable))
        for job in effects.stop:
            self.stop_job(job)
        self.tasks.wake()

    def running_runs(self, now: float) -> list[Run]:
        """Runs still going, counted up to `now` (for usage and its metric)."""
        return [
            Run(j.id, j.attempts, j.user, j.gpus, j.state_times[JobState.RUNNING], now)
            for j in self.queue.jobs()
            if j.state is JobState.RUNNING and JobState.RUNNING in j.state_times
        ]

    def give_back(self, job: Job) -> None:
        """Give the job's GPUs back and forget any stop owed to it."""
        if self.inventory.allocation_of(job.id) is not None:
            self.inventory.give_back(job.id)
        self.stopping.discard(job.id)
        self.evicting.pop(job.id, None)  # a launch given up, or a job ended: no stop is owed
