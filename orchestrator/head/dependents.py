"""Jobs that wait for other jobs (`--dependency afterok:ID`), in the live orchestrator:
resolved at submit, checked before each scheduling cycle. A part of the service that
owns its state (the index of dependents by target, and why each waits) and is handed
only what it reads: the queue, where jobs are (history.Records) and the site; the
service saves what it changed. The rules are the core's (core/dependencies.py).

Before each cycle the waiting jobs whose targets moved since the last are judged
(dependencies.Index: the cost follows what changed, not how many wait). Met: it joins the
line in its place (its submission order), and the policy sees it from then on. Not
yet: it stays out of the line (no start, no reservation), with the reason Dependency
and an estimated start from its targets' expected ends. Never (afterok on a job that
failed or was cancelled, …): it is cancelled with DependencyNeverSatisfied and the
cause, or held instead where the site says `dependency_never_satisfied = "hold"`.
The dependency is part of the job's spec, so it survives a restart.
"""

from __future__ import annotations

from orchestrator.core import dependencies
from orchestrator.core.config import Config
from orchestrator.core.decisions import Pending, Plan, Reason
from orchestrator.core.errors import AmbiguousJobId, InvalidSpec, JobNotFound
from orchestrator.core.job import Job, JobSpec
from orchestrator.core.queue import JobQueue
from orchestrator.core.states import JobState
from orchestrator.core.submission import ARRAY_PREFIX
from orchestrator.head.history import Records

NEVER = "DependencyNeverSatisfied"


class Dependents:
    def __init__(self, queue: JobQueue, records: Records, site: Config):
        self.queue, self.records, self.site = queue, records, site
        self.index: dependencies.Index | None = None  # built at the first cycle, from what was loaded
        self.pending: dict[str, Pending] = {}  # why each waiting dependent waits, and until when

    def resolved(self, spec: JobSpec) -> JobSpec:
        """The spec with each job its dependency names as a whole id (an array's id for
        an array): refused if one names no job, or several."""
        if spec.dependency is None:
            return spec
        conds = []
        for kind, refs in dependencies.parse(spec.dependency):
            whole = []
            for ref in refs:
                try:
                    whole.append(self.queue.resolve_array(ref) or self._whole_id(ref))
                except (JobNotFound, AmbiguousJobId) as e:
                    raise InvalidSpec([("dependency", f"{kind}:{ref}: {e}")]) from None
            conds.append((kind, list(dict.fromkeys(whole))))  # a target named twice is judged once
        named = sum(len(self._members(ref)) for _, refs in conds for ref in refs)
        if named > self.site.max_dependency_jobs:
            raise InvalidSpec(
                [
                    (
                        "dependency",
                        f"stands for {named} jobs (array members counted); the site allows "
                        f"{self.site.max_dependency_jobs} (max_dependency_jobs)",
                    )
                ]
            )
        return spec.model_copy(update={"dependency": dependencies.render(conds)})

    def _whole_id(self, ref: str) -> str:
        """A job's whole id, in memory or only in the store; or an array's that left memory."""
        try:
            return self.records.find(ref).id
        except JobNotFound:
            if ref.startswith(ARRAY_PREFIX) and self.records.history.array(ref):
                return ref
            raise

    def targets_of(self, job: Job) -> set[str]:
        conditions = dependencies.parse(job.spec.dependency) if job.spec.dependency else []
        return {m.id for _, refs in conditions for ref in refs for m in self._members(ref)}

    def added(self, jobs: list[Job]) -> None:
        """Just submitted: judged before the next cycle plans."""
        if self.index is not None:
            for job in jobs:
                if job.spec.dependency:
                    self.index.add(job.id, self.targets_of(job))

    def judge(self, spec: JobSpec) -> dependencies.Verdict:
        return dependencies.verdict(
            dependencies.parse(spec.dependency) if spec.dependency else [], self._members
        )

    def _members(self, ref: str) -> list[Job]:
        return self.records.members(ref)

    def check(self, now: float, last_plan: Plan | None) -> list[Job]:
        """Before a cycle: let in, keep out or give up on each job that waits on others;
        the jobs it changed, for the service to save."""
        if self.index is None:  # first cycle: every unfinished job with a dependency
            self.index = dependencies.Index()
            for job in self.queue.jobs():
                if job.spec.dependency and not job.state.is_terminal:
                    self.index.add(job.id, self.targets_of(job))
        self.index.moved(self.queue.take_moved())
        changed: list[Job] = []
        for job_id in self.index.due():
            if job_id not in self.queue:  # its submit was not stored: it was never accepted
                self.index.drop(job_id)
                continue
            job = self.queue.get(job_id)
            if job.state is not JobState.QUEUED:
                self.pending.pop(job_id, None)
                if job.state not in (JobState.HELD, JobState.PREEMPTED):
                    self.index.drop(job_id)  # it started or ended: nothing left to wait for
                continue
            verdict = self.judge(job.spec)
            if verdict.met:
                self.queue.unblock(job_id)
                self.index.drop(job_id)
                self.pending.pop(job_id, None)
            elif verdict.never:
                self.index.drop(job_id)
                self.pending.pop(job_id, None)
                reason = f"{NEVER}: {verdict.never}"
                if self.site.dependency_never_satisfied == "hold":
                    self.queue.hold(job_id, now, reason)
                else:
                    self.queue.cancel(job_id, now, reason)
                    job.failure_reason = reason
                changed.append(job)
            else:
                self.queue.block(job_id)
                self.pending[job_id] = Pending(
                    Reason.DEPENDENCY, verdict.waits_for, self._expected_end(verdict.targets, now, last_plan)
                )
        return changed

    def _expected_end(self, targets: tuple[Job, ...], now: float, last_plan: Plan | None) -> float | None:
        """When the last target should be over: a running one by its time limit, a
        waiting one from its own estimated start; None when one has no estimate."""
        last = now
        for t in targets:
            if t.state is JobState.RUNNING:
                start: float | None = t.state_times.get(JobState.RUNNING, now)
            else:
                pending = (last_plan.pending.get(t.id) if last_plan else None) or self.pending.get(t.id)
                start = pending.estimated_start if pending else None
            if start is None:
                return None
            last = max(last, start + t.time_limit)
        return last
