"""What happens to a job when something happens to it.

The one place that turns an event into moves of the state machine (states.py, applied
through the queue) and into the effects the runtime must carry out:

- a plan's decisions (`apply_plan`): victims are marked PREEMPTED and must be stopped;
  starts are SCHEDULED on their GPUs and must be launched;
- the end of a run (`classify`, then `run_ended`): what the runners reported becomes
  one typed Exit; a PREEMPTED job goes back in line in its place, a RUNNING one
  completes or fails, and a failure is retried or not (`may_retry`, the one retry
  decision);
- GPUs that left service under a job (`evict`);
- a placement Ray did not make in time (`placement_timed_out`), a launch that
  failed (`launch_failed`), a launch a restart cut short (`not_started`).

Pure: `now` is passed in, nothing here touches Ray, the store or a clock. The live
service carries out the effects (head/launches.py). The simulator applies its
plans through `apply_plan` and `run_ended` too, on its own light records (`Moves`);
having no runners, it carries out the effects at once: a victim's GPUs come back
and a start runs in the same instant (sim/simulator.py, step 2, says so).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Generic, Protocol, TypeVar

from orchestrator.core.decisions import Plan
from orchestrator.core.inventory import Inventory
from orchestrator.core.job import Job
from orchestrator.core.queue import JobQueue
from orchestrator.core.states import JobState


class ExitKind(str, Enum):
    """How a run ended, as far as retrying goes."""

    COMPLETED = "completed"  # every rank exited 0
    FAILED = "failed"  # the command exited non-zero: the job's own failure
    TIME_LIMIT = "time_limit"  # killed at its time limit (Slurm's TIMEOUT): never retried
    NO_ACCOUNT = "no_account"  # its user has no Unix account on the node: a retry fails the same way
    WORKDIR = "workdir"  # the working directory its user named does not exist there: their mistake
    NODE_LOST = "node_lost"  # a runner died without an exit record
    STOPPED = "stopped"  # stopped while RUNNING, not by gpuq: its runner or node went away
    EVICTED = "evicted"  # its GPUs left service (health, drain with requeue)
    LAUNCH_FAILED = "launch_failed"  # Ray could not start it
    RUNTIME_ENV = "runtime_env"  # its runtime env could not be set up (pip failed): the job's own error
    OUT_OF_MEMORY = (
        "out_of_memory"  # killed at its memory limit (Slurm's OUT_OF_MEMORY): a retry would repeat it
    )


# Faults that are not the job's: retried without using up its retries.
INFRASTRUCTURE = frozenset({ExitKind.NODE_LOST, ExitKind.STOPPED, ExitKind.EVICTED, ExitKind.LAUNCH_FAILED})
# Failures another try would repeat.
FINAL = frozenset(
    {ExitKind.TIME_LIMIT, ExitKind.NO_ACCOUNT, ExitKind.WORKDIR, ExitKind.RUNTIME_ENV, ExitKind.OUT_OF_MEMORY}
)


@dataclass(frozen=True)
class Exit:
    kind: ExitKind
    message: str = ""
    exit_code: int | None = None
    notes: tuple[str, ...] = ()  # what the node said of the run (no home folder, so it ran elsewhere)


J = TypeVar("J")  # a job as the caller keeps it: a Job, or the simulator's light record
J_co = TypeVar("J_co", covariant=True)


class Moves(Protocol[J_co]):
    """The queue moves a plan needs: JobQueue's, or the simulator's on its light records."""

    def schedule(self, job_id: str, now: float, allocation: dict[str, list[int]]) -> J_co: ...
    def preempt(self, job_id: str, now: float, reason: str) -> J_co: ...
    def requeue(self, job_id: str, now: float, reason: str) -> J_co: ...


@dataclass
class Effects(Generic[J]):
    """What the runtime must do after a lifecycle step, in this order: make `save`
    durable, stop the processes of `stop`, launch `launch`."""

    save: list[J] = field(default_factory=list)
    stop: list[J] = field(default_factory=list)
    launch: list[J] = field(default_factory=list)


def apply_plan(queue: Moves[J], inventory: Inventory, decided: Plan, now: float) -> Effects[J]:
    """A cycle's decisions. A victim keeps its GPUs until its processes are gone (its
    runner reports, then `run_ended` requeues it); a start holds its GPUs from now."""
    out: Effects[J] = Effects()
    for p in decided.preemptions:
        job = queue.preempt(p.job_id, now, p.reason)
        out.save.append(job)
        out.stop.append(job)
    for s in decided.starts:
        inventory.allocate(s.job_id, s.allocation)
        job = queue.schedule(s.job_id, now, s.allocation)
        out.save.append(job)
        out.launch.append(job)
    return out


def judged_by(
    results: dict[int, dict[str, Any] | None], ended_first: int
) -> dict[int, dict[str, Any] | None]:
    """The ranks of a gang that gpuq stopped because `ended_first` ended (it failed, or
    it is a Ray job's driver) did not fail: the run is judged by the rank that ended it
    (a torchrun rank's crash, not the TERM the others got), never as a system stop."""
    return {
        rank: (
            {**res, "exit_code": 0, "reason": "exited"}
            if rank != ended_first and res is not None and res.get("reason") == "stopped"
            else res
        )
        for rank, res in results.items()
    }


def classify(
    results: list[dict[str, Any] | None],
    evicted: str | None,
    node_of_rank: Callable[[int], str | None],
    user: str,
) -> Exit:
    """One Exit from what each rank's runner reported (None: it died without a record).
    `evicted` is why the job was being stopped for its GPUs, if it was."""
    codes = [r.get("exit_code") for r in results if r is not None]
    reasons = {r.get("reason") for r in results if r is not None}
    if evicted:
        return Exit(ExitKind.EVICTED, evicted)
    if not results or any(r is None for r in results):
        return Exit(ExitKind.NODE_LOST, "node lost: the runner died without an exit record")
    if "fenced" in reasons:
        return Exit(ExitKind.STOPPED, "stopped by its node, which lost the head for longer than its lease")
    if reasons & {"stopped", "interrupted"}:
        return Exit(ExitKind.STOPPED, "stopped by the system: its runner or node went away")
    if "no_account" in reasons:
        rank = next(i for i, r in enumerate(results) if r and r.get("reason") == "no_account")
        return Exit(ExitKind.NO_ACCOUNT, f"no Unix account for {user} on {node_of_rank(rank) or 'its node'}")
    said = {r.get("reason"): str(r.get("message") or "").strip() for r in results if r is not None}
    if "runtime_env_failed" in said:  # the job's own: its runtime env cannot be made
        last = (said["runtime_env_failed"] or "no reason given").splitlines()[-1]
        return Exit(ExitKind.RUNTIME_ENV, f"runtime env setup failed: {last[:500]}")
    if "launch_failed" in said:  # the node's: its folder, or a fork, failed
        return Exit(
            ExitKind.LAUNCH_FAILED,
            f"launch failed: {said['launch_failed'][:500] or 'the command could not start'}",
        )
    if "workdir_missing" in said:
        return Exit(ExitKind.WORKDIR, said["workdir_missing"][:500])
    notes = tuple(str(n)[:500] for r in results if r is not None for n in (r.get("notes") or [])[:4])
    if "out_of_memory" in said:
        return Exit(
            ExitKind.OUT_OF_MEMORY,
            f"out of memory: {said['out_of_memory'][:500]}",
            next((c for c in codes if c), None),
            notes,
        )
    if "time_limit" in reasons:
        return Exit(ExitKind.TIME_LIMIT, "time limit", next((c for c in codes if c), None), notes)
    if all(c == 0 for c in codes):
        return Exit(ExitKind.COMPLETED, notes=notes)
    return Exit(ExitKind.FAILED, "command failed", next(c for c in codes if c != 0), notes)


def may_retry(job: Job, kind: ExitKind) -> bool:
    """The retry decision: never for a failure another try would repeat; always for a
    fault that is not the job's (its retries are not used up); else while retries are
    left and the exit code is one the job retries on (retry_on_exit_codes)."""
    if kind in FINAL:
        return False
    if kind in INFRASTRUCTURE:
        return True
    return job.retries_left > 0 and job.worth_retry(job.exit_code)


def back_in_line(queue: Moves[J], job_id: str, now: float) -> J:
    """A preempted job whose processes are gone goes back in line, in its place."""
    return queue.requeue(job_id, now, "preempted; back in line in its place")


def run_ended(queue: JobQueue, job: Job, ended: Exit | None, now: float) -> Effects[Job]:
    """The job's processes are gone (its GPUs are the runtime's to give back). `ended`
    is how the run ended; None when there is nothing to judge (a preempted job: the
    simulator calls back_in_line alone, on its light records)."""
    for note in ended.notes if ended is not None else ():
        job.note(now, "node", note)
    if job.state is JobState.PREEMPTED:
        back_in_line(queue, job.id, now)
    elif job.state is JobState.RUNNING and ended is not None:
        if ended.kind is ExitKind.COMPLETED:
            queue.complete(job.id, now)
        else:
            _fail(queue, job, ended, now)
    return Effects(save=[job])


def evict(queue: JobQueue, job: Job, reason: str, now: float) -> tuple[Effects[Job], bool]:
    """GPUs under `job` left service. Nothing on Ray yet (SCHEDULED): back in line now.
    Placed or running: it must be stopped, and its end is then an eviction (the bool:
    the runtime remembers `reason` until the run ends)."""
    if job.state is JobState.SCHEDULED:
        return Effects(save=[queue.requeue(job.id, now, reason)]), False
    if job.state in (JobState.ALLOCATING, JobState.RUNNING):
        return Effects(stop=[job] if job.state is JobState.RUNNING else []), True
    return Effects(), False


def placement_timed_out(queue: JobQueue, job: Job, timeout_s: float, now: float) -> Effects[Job]:
    """Ray did not place the job in time: back in line in its place (not a failure)."""
    if job.state is not JobState.ALLOCATING:
        return Effects()
    return not_started(queue, job, f"placement timed out after {timeout_s:.0f} s", now)


def not_started(queue: JobQueue, job: Job, why: str, now: float) -> Effects[Job]:
    """A job scheduled or being placed whose command never ran (a placement that timed
    out, a restart before its launch finished): back in line in its place; not a
    failure, so no retry is used."""
    if job.state not in (JobState.SCHEDULED, JobState.ALLOCATING):
        return Effects()
    return Effects(save=[queue.requeue(job.id, now, why)])


def launch_failed(queue: JobQueue, job: Job, error: str, now: float) -> Effects[Job]:
    """The launch raised: an infrastructure failure, retried without using a retry."""
    if job.state not in (JobState.ALLOCATING, JobState.RUNNING):
        return Effects()
    _fail(queue, job, Exit(ExitKind.LAUNCH_FAILED, f"launch failed: {error}"), now)
    return Effects(save=[job])


def runtime_env_failed(queue: JobQueue, job: Job, error: str, now: float) -> Effects[Job]:
    """Ray could not set up the job's runtime env: FAILED, with Ray's words, and not
    retried (the same spec fails the same way; it is not the infrastructure's fault)."""
    if job.state is not JobState.ALLOCATING:
        return Effects()
    first = error.strip().splitlines()[-1] if error.strip() else "setup failed"
    _fail(queue, job, Exit(ExitKind.RUNTIME_ENV, f"runtime env setup failed: {first[:500]}"), now)
    return Effects(save=[job])


def _fail(queue: JobQueue, job: Job, ended: Exit, now: float) -> None:
    queue.fail(
        job.id, now, ended.message, exit_code=ended.exit_code, infrastructure=ended.kind in INFRASTRUCTURE
    )
    if may_retry(job, ended.kind):
        queue.retry(job.id, now)
