"""The job queue: every job gpuq knows, and the line of queued jobs in order.

Order is "by priority, then first come, first served": priority descending, then the
submission sequence number. A job keeps its sequence number for life, so a retried,
preempted, released or re-prioritised job takes its original place among its peers.

The line (ordering.Line) keeps queued jobs sorted by (-priority, seq) and grouped
the way the policy reads them: insert, remove, re-prioritise and `position` are
all O(log n). Every state change goes through `_move`, which keeps
the line and the counters in step with the state machine.

This object is pure and single-threaded: the orchestrator actor is its only writer.
What survives a restart is the store's business (see store.py), not this module's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

from orchestrator.core.errors import AmbiguousJobId, DuplicateJob, IllegalTransition, JobNotFound
from orchestrator.core.inventory import Allocation
from orchestrator.core.job import Event, Job, JobSpec, format_allocation
from orchestrator.core.ordering import Line
from orchestrator.core.priority import Priority
from orchestrator.core.states import JobState, Trigger

MIN_PREFIX = 4  # shorter is too easy to mistype into someone else's job


@dataclass
class Stats:
    """Counters of what the scheduler did since the queue was created (the `stats` of
    GET /orchestrator/status)."""

    jobs_scheduled: int = 0
    jobs_completed: int = 0
    jobs_failed: int = 0
    scheduling_cycles: int = 0
    jobs_retried: int = 0
    jobs_preempted: int = 0
    jobs_cancelled: int = 0


_COUNTED = {
    Trigger.SCHEDULE: "jobs_scheduled",
    Trigger.COMPLETE: "jobs_completed",
    Trigger.FAIL: "jobs_failed",
    Trigger.RETRY: "jobs_retried",
    Trigger.PREEMPT: "jobs_preempted",
    Trigger.CANCEL: "jobs_cancelled",
}


class JobQueue:
    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self.line = Line()  # queued jobs, as the policy reads them
        self._by_state: Counter[JobState] = Counter()
        self._live_by_user: Counter[str] = Counter()  # jobs not finished, per user (max_jobs_per_user)
        self.moved: set[str] = set()  # jobs that changed state since the owner last took them (take_moved)
        self._next_seq = 1
        self._arrays: dict[str, dict[int, str]] = {}  # array id -> index -> job id
        # QUEUED jobs kept out of the line while their dependencies are not met: they are
        # waiting, but the policy does not see them (no start, no reservation).
        self.blocked: set[str] = set()
        self.stats = Stats()

    # --- reading -------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._jobs)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._jobs

    def resolve(self, ref: str) -> str:
        """The id of the one job whose id is `ref` or starts with it (at least
        MIN_PREFIX characters), as `gpuq jobs` prints ids short, or the array member
        `ARRAY_INDEX` (Slurm's 1234_5). A scan, paid only when `ref` is not a whole id."""
        if ref in self._jobs:
            return ref
        head, _, index = ref.rpartition("_")
        if head and index.isdigit() and (array := self.resolve_array(head)) is not None:
            member = self._arrays[array].get(int(index))
            if member is None:
                raise JobNotFound(ref)
            return member
        matches = [i for i in self._jobs if i.startswith(ref)] if len(ref) >= MIN_PREFIX else []
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise AmbiguousJobId(ref, sorted(matches))
        raise JobNotFound(ref)

    def resolve_array(self, ref: str) -> str | None:
        """The array whose id is `ref` or starts with it (MIN_PREFIX+); None if none."""
        if ref in self._arrays:
            return ref
        matches = [a for a in self._arrays if a.startswith(ref)] if len(ref) >= MIN_PREFIX else []
        if len(matches) > 1:
            raise AmbiguousJobId(ref, sorted(matches))
        return matches[0] if matches else None

    def array(self, array_id: str) -> list[Job]:
        """An array's members, by index."""
        return [self._jobs[i] for _, i in sorted(self._arrays.get(array_id, {}).items())]

    def get(self, job_id: str) -> Job:
        try:
            return self._jobs[job_id]
        except KeyError:
            raise JobNotFound(job_id) from None

    def jobs(self) -> Iterator[Job]:
        """Every job, in submission order."""
        return iter(self._jobs.values())

    def queued(self) -> Iterator[Job]:
        """Queued jobs in line order: priority, then submission."""
        return iter(self.line.fifo())  # type: ignore[arg-type]

    def position(self, job_id: str) -> int | None:
        """1-based place in line (the API's `queue_position`); None if not queued (or
        kept out of the line by its dependencies)."""
        job = self.get(job_id)
        if job.state is not JobState.QUEUED or job_id in self.blocked:
            return None
        return self.line.position(job)

    @property
    def next_seq(self) -> int:
        """The sequence number the next submission will get (its place in line)."""
        return self._next_seq

    def count(self, state: JobState) -> int:
        return self._by_state[state]

    def take_moved(self) -> set[str]:
        """The jobs that changed state since the last call (dependencies.Index.moved)."""
        out, self.moved = self.moved, set()
        return out

    def live_of(self, user: str) -> int:
        """How many of `user`'s jobs are not finished (queued, held, placed or running)."""
        return self._live_by_user[user]

    def counts(self) -> dict[JobState, int]:
        return {state: self._by_state[state] for state in JobState}

    def summary(self) -> dict[str, int]:
        """The status's `queue_summary`: a count per state, and the total."""
        c = self._by_state
        return {
            "total_jobs": sum(c.values()),
            "queued": c[JobState.QUEUED],
            "running": c[JobState.RUNNING],
            "completed": c[JobState.COMPLETED],
            "failed": c[JobState.FAILED],
            "held": c[JobState.HELD],
            "scheduled": c[JobState.SCHEDULED],
            "allocating": c[JobState.ALLOCATING],
            "preempted": c[JobState.PREEMPTED],
            "cancelled": c[JobState.CANCELLED],
        }

    # --- changing ------------------------------------------------------------------

    def enqueue(self, spec: JobSpec, now: float, job_id: str | None = None) -> Job:
        """Enqueue a validated spec at the back of its priority level."""
        if job_id is not None and job_id in self._jobs:
            raise DuplicateJob(job_id)
        job = Job.new(spec, seq=self._next_seq, now=now, job_id=job_id)
        self._next_seq += 1
        self._jobs[job.id] = job
        self._by_state[job.state] += 1
        self._live_by_user[job.user] += 1
        self.line.add(job)
        return job

    def block(self, job_id: str) -> None:
        """Keep a queued job out of the line (its dependencies are not met)."""
        job = self.get(job_id)
        if job.state is JobState.QUEUED and job_id not in self.blocked:
            self.line.remove(job)
            self.blocked.add(job_id)

    def unblock(self, job_id: str) -> None:
        """Its dependencies are met: back in the line, in its place (its sequence)."""
        if job_id in self.blocked:
            self.blocked.discard(job_id)
            self.line.add(self.get(job_id))

    def join_array(self, job: Job, array_id: str, index: int) -> None:
        """Make a just-submitted job member `index` of array `array_id`."""
        job.array_id, job.array_index = array_id, index
        self._arrays.setdefault(array_id, {})[index] = job.id

    def restore(self, job: Job) -> None:
        """Put back a job loaded from the store, keeping its id, sequence and state."""
        if job.id in self._jobs:
            raise DuplicateJob(job.id)
        self._jobs[job.id] = job
        self._by_state[job.state] += 1
        self._live_by_user[job.user] += not job.state.is_terminal
        if job.state is JobState.QUEUED:
            self.line.add(job)
        if job.array_id is not None and job.array_index is not None:
            self._arrays.setdefault(job.array_id, {})[job.array_index] = job.id
        self._next_seq = max(self._next_seq, job.seq + 1)

    def evict(self, job_id: str) -> Job:
        """An ended job leaves memory (it stays in the store: head/history.py); it is
        still counted in its state, as history is."""
        job = self.get(job_id)
        if not job.state.is_terminal:
            raise ValueError(f"job {job_id} is {job.state.value}: only ended jobs leave memory")
        del self._jobs[job_id]
        self.moved.discard(job_id)
        if job.array_id is not None and job.array_index is not None:
            members = self._arrays.get(job.array_id, {})
            members.pop(job.array_index, None)
            if not members:
                self._arrays.pop(job.array_id, None)
        return job

    def restore_history(self, counts: dict[JobState, int], last_seq: int) -> None:
        """What a restart did not load (older history): its counts, and its highest
        sequence, so new jobs still come after every stored one."""
        self._by_state.update(counts)
        self._next_seq = max(self._next_seq, last_seq + 1)

    def forget(self, job_id: str) -> None:
        """Drop a job that was never acknowledged (its submission could not be stored)."""
        job = self.get(job_id)
        if job.state is JobState.QUEUED and job_id not in self.blocked:
            self.line.remove(job)
        self.blocked.discard(job_id)
        self._by_state[job.state] -= 1
        self._live_by_user[job.user] -= not job.state.is_terminal
        del self._jobs[job_id]
        if job.array_id is not None and job.array_index is not None:
            members = self._arrays.get(job.array_id, {})
            members.pop(job.array_index, None)
            if not members:
                self._arrays.pop(job.array_id, None)

    def schedule(self, job_id: str, now: float, allocation: Allocation, reason: str = "") -> Job:
        # The nodes only: which GPU indices of them the job gets is Ray's to say when its
        # placement is made, and the "running on" event names those (the ones in its
        # CUDA_VISIBLE_DEVICES), so the history never names two sets for one run.
        where = ", ".join(
            f"{node} ({len(gpus)} GPU{'s' if len(gpus) != 1 else ''})" for node, gpus in allocation.items()
        )
        job = self._move(job_id, Trigger.SCHEDULE, now, reason or f"placed on {where}")
        job.allocation = {node: list(gpus) for node, gpus in allocation.items()}
        return job

    def allocate(self, job_id: str, now: float, reason: str = "placement group requested") -> Job:
        return self._move(job_id, Trigger.ALLOCATE, now, reason)

    def start(self, job_id: str, now: float, allocation: Allocation | None = None) -> Job:
        """The command runs. `allocation` is what Ray really bound, if it differs from the plan."""
        job = self.get(job_id)
        where = allocation if allocation is not None else job.allocation
        job = self._move(job_id, Trigger.START, now, f"running on {format_allocation(where)}")
        job.allocation = {node: list(gpus) for node, gpus in where.items()}
        job.placements[job.attempts] = dict(job.allocation)
        return job

    def complete(self, job_id: str, now: float) -> Job:
        job = self._move(job_id, Trigger.COMPLETE, now, "exit code 0")
        job.exit_code = 0
        return job

    def fail(
        self, job_id: str, now: float, reason: str, exit_code: int | None = None, infrastructure: bool = False
    ) -> Job:
        """The job failed. `infrastructure` marks a fault that is not the job's own (a lost
        node, a dead runner): retrying it does not use up the job's retries."""
        text = reason if exit_code is None else f"{reason} (exit code {exit_code})"
        job = self._move(job_id, Trigger.FAIL, now, text)
        job.exit_code = exit_code
        job.failure_reason = reason
        job.infrastructure_failure = infrastructure
        return job

    def can_retry(self, job_id: str) -> bool:
        job = self.get(job_id)
        return job.state is JobState.FAILED and (job.infrastructure_failure or job.retries_left > 0)

    def retry(self, job_id: str, now: float) -> Job:
        job = self.get(job_id)
        reason = (
            "infrastructure failure: retry not counted"
            if job.infrastructure_failure
            else (f"auto-retry {job.retries + 1} of {job.spec.max_retries}")
        )
        return self._move(job_id, Trigger.RETRY, now, reason)

    def preempt(self, job_id: str, now: float, reason: str) -> Job:
        return self._move(job_id, Trigger.PREEMPT, now, reason)

    def requeue(self, job_id: str, now: float, reason: str) -> Job:
        return self._move(job_id, Trigger.REQUEUE, now, reason)

    def hold(self, job_id: str, now: float, reason: str = "held") -> Job:
        return self._move(job_id, Trigger.HOLD, now, reason)

    def release(self, job_id: str, now: float, reason: str = "released") -> Job:
        return self._move(job_id, Trigger.RELEASE, now, reason)

    def cancel(self, job_id: str, now: float, reason: str = "cancelled") -> Job:
        return self._move(job_id, Trigger.CANCEL, now, reason)

    def set_priority(self, job_id: str, priority: Priority | int | str, now: float) -> Job:
        """Re-prioritise a job that has not finished. It keeps its submission order among
        the jobs of its new level."""
        job = self.get(job_id)
        new = Priority.parse(priority)
        if job.state.is_terminal:
            raise IllegalTransition(job.state.value, "change the priority of", [], job_id)
        if new == job.priority:
            return job
        in_line = job.state is JobState.QUEUED and job_id not in self.blocked
        if in_line:
            self.line.remove(job)
        old = job.priority
        job.spec = job.spec.model_copy(update={"priority": new})
        if in_line:
            self.line.add(job)
        job.events.append(
            Event(
                time=now,
                from_state=job.state,
                to_state=job.state,
                trigger="reprioritise",
                reason=f"priority {old.name} -> {new.name}",
            )
        )
        return job

    def record_cycle(self) -> None:
        self.stats.scheduling_cycles += 1

    def _move(self, job_id: str, trigger: Trigger, now: float, reason: str) -> Job:
        job = self.get(job_id)
        before = job.state
        was_in_line = before is JobState.QUEUED and job_id not in self.blocked
        job.apply(trigger, now, reason)  # raises before changing anything if illegal
        self.blocked.discard(
            job_id
        )  # out of QUEUED, or back in it: the next cycle blocks it again if need be
        if was_in_line:
            self.line.remove(job)
        if job.state is JobState.QUEUED:
            self.line.add(job)
        self._by_state[before] -= 1
        self._by_state[job.state] += 1
        self.moved.add(job_id)
        if before.is_terminal != job.state.is_terminal:
            self._live_by_user[job.user] += -1 if job.state.is_terminal else 1
        if trigger in _COUNTED:
            setattr(self.stats, _COUNTED[trigger], getattr(self.stats, _COUNTED[trigger]) + 1)
        return job
