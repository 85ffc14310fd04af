"""What users ask of the orchestrator about jobs: submit (one, an array, a dry run),
cancel, hold, release, priority, many at once; the job, the jobs, the line, the logs;
runtime-env packages. What is asked of the cluster as a whole is cluster.py's.

The actor's public methods forward here (actor.PUBLIC); the parts this is handed do the
work: launches stop and give back, uploads store packages, the loop says why a job
waits. Each request validates, changes the queue, makes the change durable before it
answers where a user is told it happened, and wakes the loop.

`by` is who asks, as the API authenticated them (a rights.Caller): the rights in
rights.py are checked against it, and every change is written to the audit trail
with it, in the same commit as the change. A direct call on the actor (no `by`) can
only come from the service account itself and is trusted.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from orchestrator.core import runtime_env
from orchestrator.core.config import Config
from orchestrator.core.decisions import Reason, Start
from orchestrator.core.errors import GpuqError, InvalidSpec, OverLimit
from orchestrator.core.inventory import Inventory
from orchestrator.core.job import Job, JobSpec, format_allocation
from orchestrator.core.policy import dry_run
from orchestrator.core.priority import Priority
from orchestrator.core.queue import JobQueue
from orchestrator.core.rights import Caller, check_preemptible, check_priority
from orchestrator.core.states import JobState
from orchestrator.core.submission import ARRAY_PREFIX, parse_array
from orchestrator.head import views
from orchestrator.head.audit import audit
from orchestrator.head.bulk import Bulk
from orchestrator.head.dependents import Dependents
from orchestrator.head.history import Records
from orchestrator.head.idempotency import Keys
from orchestrator.head.jobpython import JobPython
from orchestrator.head.journal import Journal
from orchestrator.head.launches import Launches
from orchestrator.head.loop import SchedulingLoop
from orchestrator.head.output import Output
from orchestrator.head.tasks import Tasks
from orchestrator.head.uploads import Uploads
from orchestrator.head.watch import GpuWatch
from orchestrator.host.accounts import missing_account


class Requests:
    def __init__(
        self,
        *,
        site: Config,
        clock: Callable[[], float],
        queue: JobQueue,
        inventory: Inventory,
        journal: Journal,
        tasks: Tasks,
        launches: Launches,
        loop: SchedulingLoop,
        dependents: Dependents,
        bulk: Bulk,
        records: Records,
        keys: Keys,
        uploads: Uploads,
        watch: GpuWatch,
        output: Output,
        job_python: JobPython,
    ):
        self.site, self.clock, self.queue, self.inventory = site, clock, queue, inventory
        self.journal, self.tasks, self.launches, self.loop = journal, tasks, launches, loop
        self.dependents, self.bulk_actions, self.records, self.keys = dependents, bulk, records, keys
        self.uploads, self.watch, self.output, self.job_python = uploads, watch, output, job_python

    def validation_config(self) -> Config:
        sizes = self.inventory.sizes or dict(self.site.nodes)
        return self.site.model_copy(update={"nodes": sizes})

    def may_submit(self, parsed: JobSpec, by: Caller | None) -> None:
        """Rights (rights.py) and the Unix account the job will run as (accounts.py)."""
        if by is not None:
            check_priority(by, parsed.priority, None, self.site.max_priority, self.site.priority_grants)
            check_preemptible(by, parsed.preemptible, self.site.priority_grants)
        why = missing_account(parsed.user, self.site.unix_users, self.site.allowed_system_accounts)
        if why:
            raise InvalidSpec([("user", why)])
        if parsed.ray and not self.job_python.ray_ready:
            raise InvalidSpec([("ray", f"this site cannot run Ray programs yet: {self.job_python.why_not}")])

    async def submit(self, spec: dict, idempotency_key: str | None = None, by: Caller | None = None) -> dict:
        """Validate and enqueue; durable before it answers. A submit repeated with the same
        key by the same user (a client retrying after a time-out) returns the first job.
        Two fields are about the submission, not the job: `array` (a count, "A-B" or
        "1,3,5": one job per index, with GPUQ_ARRAY_INDEX) and `test_only` (a dry run:
        where and when it would start; nothing is enqueued)."""
        self.journal.writable()
        spec = dict(spec)
        indices = parse_array(spec.pop("array", None))
        test_only = spec.pop("test_only", False)
        if not isinstance(test_only, bool):
            raise InvalidSpec([("test_only", "must be true or false")])
        parsed = self.dependents.resolved(JobSpec.parse(spec, self.validation_config()))
        self.may_submit(parsed, by)
        if runtime_env.packages(parsed.runtime_env):
            await self.uploads.check_exist(parsed)
        if test_only:
            return self.dry_run(parsed)
        if indices is not None:
            return await self.submit_array(parsed, indices, idempotency_key, by)
        if (known := await self.keys.claim(parsed.user, idempotency_key)) is not None:
            return views.submitted(self.queue.get(known), self.queue)
        job = None
        try:
            self.may_queue(parsed.user, 1)
            job = self.queue.enqueue(parsed, self.clock())
            job.idempotency_key = idempotency_key
            self.dependents.added([job])
            await self.journal.save(
                [job],
                audit=[
                    audit(
                        self.clock(),
                        by,
                        "submit",
                        job.id,
                        user=parsed.user,
                        run_id=parsed.run_id,
                        gpus=parsed.gpu_count,
                        priority=parsed.priority.name,
                    )
                ],
            )
        except GpuqError:
            if job is not None:
                self.queue.forget(job.id)  # not stored means not accepted: the caller may retry
                self.journal.drop([job.id])
            self.keys.settle(parsed.user, idempotency_key, None)
            raise
        self.keys.settle(parsed.user, idempotency_key, job.id)
        self.tasks.wake()
        return views.submitted(job, self.queue)

    def may_queue(self, user: str, count: int) -> None:
        """Refuse (429) a submit that would pass the user's max_jobs_per_user."""
        have, most = self.queue.live_of(user), self.site.max_jobs_per_user
        if have + count > most:
            raise OverLimit(
                "max_jobs_per_user",
                f"{user} has {have} jobs queued or running and this submit adds "
                f"{count}; the site allows {most} per user (max_jobs_per_user, array members counted): "
                "wait for some to end, or cancel some",
                retry_after_s=60,
            )

    def dry_run(self, parsed: JobSpec) -> dict:
        now = self.clock()
        if parsed.dependency and not (verdict := self.dependents.judge(parsed)).met:
            return {
                "success": True,
                "test_only": True,
                "would_start": False,
                "estimated_start": None,
                "reason": Reason.DEPENDENCY.value,
                "message": verdict.never or verdict.waits_for,
            }
        probe = Job.new(parsed, seq=self.queue.next_seq, now=now, job_id="dry-run")
        answer = dry_run(self.loop.snapshot(now), now, self.loop.policy, probe)
        if isinstance(answer, Start):
            return {
                "success": True,
                "test_only": True,
                "would_start": True,
                "estimated_start": now,
                "allocation": answer.allocation,
                "placement": format_allocation(answer.allocation),
            }
        return {
            "success": True,
            "test_only": True,
            "would_start": False,
            "estimated_start": answer.estimated_start,
            "reason": answer.code.value,
            "message": answer.message,
        }

    async def submit_array(
        self, parsed: JobSpec, indices: list[int], key: str | None, by: Caller | None = None
    ) -> dict:
        if (known := await self.keys.claim(parsed.user, key)) is not None:
            first = self.queue.get(known)
            return {
                **views.submitted(first, self.queue),
                "array": {"id": first.array_id, "count": len(indices)},
            }
        now = self.clock()
        base = parsed.run_id[: 64 - len(str(max(indices))) - 1]
        jobs = []
        array_id = f"{ARRAY_PREFIX}{uuid.uuid4().hex[:9]}"
        try:
            self.may_queue(parsed.user, len(indices))
            for i in indices:
                spec = parsed.model_copy(
                    update={"run_id": f"{base}_{i}", "env": {**parsed.env, "GPUQ_ARRAY_INDEX": str(i)}}
                )
                jobs.append(self.queue.enqueue(spec, now))
                self.queue.join_array(jobs[-1], array_id, i)
            self.dependents.added(jobs)
            jobs[0].idempotency_key = key
            await self.journal.save(
                jobs,
                audit=[
                    audit(
                        self.clock(),
                        by,
                        "submit",
                        jobs[0].id,
                        user=parsed.user,
                        run_id=parsed.run_id,
                        gpus=parsed.gpu_count,
                        priority=parsed.priority.name,
                        array=len(jobs),
                        last=jobs[-1].id,
                    )
                ],
            )
        except GpuqError:
            for job in jobs:
                self.queue.forget(job.id)
            self.journal.drop(j.id for j in jobs)
            self.keys.settle(parsed.user, key, None)
            raise
        self.keys.settle(parsed.user, key, jobs[0].id)
        self.tasks.wake()
        return {
            **views.submitted(jobs[0], self.queue),
            "array": {
                "id": array_id,
                "count": len(jobs),
                "indices": [indices[0], indices[-1]],
                "job_ids": [j.id for j in jobs],
            },
        }

    async def cancel(self, job_id: str, reason: str = "cancelled", by: Caller | None = None) -> dict:
        self.journal.writable()
        job_id = self.records.live(job_id, "cancel")
        job = self.queue.get(job_id)
        was = job.state
        self.queue.cancel(job_id, self.clock(), reason)
        await self.journal.save(
            [job], audit=[audit(self.clock(), by, "cancel", job_id, user=job.user, was=was.value)]
        )
        if was in (JobState.RUNNING, JobState.PREEMPTED):
            self.launches.stop_job(job)
        elif was is JobState.SCHEDULED:
            self.launches.give_back(job)  # its launch task sees CANCELLED and stops there
        self.tasks.wake()
        return views.job(job, self.queue)

    async def bulk(self, action: str, selector: dict, by: Caller | None = None, priority=None) -> dict:
        return await self.bulk_actions.run(action, selector, by, priority)  # many jobs at once: bulk.py

    async def hold(self, job_id: str, by: Caller | None = None) -> dict:
        self.journal.writable()
        job_id = self.records.live(job_id, "hold")
        job = self.queue.hold(job_id, self.clock())
        await self.journal.save([job], audit=[audit(self.clock(), by, "hold", job_id, user=job.user)])
        return views.job(job, self.queue)

    async def release(self, job_id: str, by: Caller | None = None) -> dict:
        self.journal.writable()
        job_id = self.records.live(job_id, "release")
        job = self.queue.release(job_id, self.clock())
        await self.journal.save([job], audit=[audit(self.clock(), by, "release", job_id, user=job.user)])
        self.tasks.wake()
        return views.job(job, self.queue)

    async def set_priority(self, job_id: str, priority, by: Caller | None = None) -> dict:
        self.journal.writable()
        job_id = self.records.live(job_id, "set priority")
        job = self.queue.get(job_id)
        was = job.priority
        try:
            priority = Priority.parse(priority)
        except ValueError as e:
            raise InvalidSpec([("priority", str(e))]) from None
        if by is not None:
            check_priority(by, priority, was, self.site.max_priority, self.site.priority_grants)
        job = self.queue.set_priority(job_id, priority, self.clock())
        await self.journal.save(
            [job],
            audit=[
                audit(
                    self.clock(), by, "priority", job_id, user=job.user, was=was.name, now=job.priority.name
                )
            ],
        )
        self.tasks.wake()
        return views.job(job, self.queue)

    async def get_job(self, job_id: str) -> dict:
        job = self.records.find(job_id)
        job_id = job.id
        out = views.job(job, self.queue, detail=True)
        out["idle_gpus"] = self.watch.idle_of(job_id, self.clock())  # held but unused for the idle window
        pending = self.dependents.pending.get(job_id) or (
            self.loop.last_plan.pending.get(job_id) if self.loop.last_plan else None
        )
        if (
            pending is not None and out["state"] == JobState.QUEUED.value
        ):  # why it waits, as `gpuq queue` says
            out["pending"] = {
                "reason": pending.code.value,
                "message": pending.message,
                "estimated_start": pending.estimated_start,
            }
        return out

    async def list_jobs(
        self,
        state: str | None = None,
        user: str | None = None,
        limit: int = 100,
        offset: int = 0,
        detail: bool = False,
    ) -> dict:
        wanted = JobState(state) if state else None
        page, total = self.records.page(wanted, user, limit, offset)
        return views.jobs(page, total, self.queue, limit, offset, detail)

    async def queue_view(self, limit: int = 100) -> dict:
        return views.line(self.queue, self.loop.last_plan, limit, self.dependents.pending)

    async def logs(
        self,
        job_id: str,
        attempt: int | None = None,
        rank: int = 0,
        offset: int = 0,
        limit: int = 65536,
        tail: int | None = None,
        raw: bool = False,
    ) -> dict:
        """A job's output from `offset`: its whole text (every attempt, in order), or one
        attempt's log; bytes with `raw` (head/output.py)."""
        job = self.records.find(job_id)
        return await self.output.read(job, attempt, rank, offset, limit, tail, raw)

    async def package_exists(self, uri: str, by: Caller | None = None) -> bool:
        return await self.uploads.exists(uri, by)  # Ray's GET /api/packages: uploads.py

    async def package_put(self, uri: str, data: bytes, by: Caller | None = None) -> dict:
        return await self.uploads.put(uri, data, by)  # Ray's PUT /api/packages: uploads.py
