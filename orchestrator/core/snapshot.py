"""Build the policy's Snapshot from the live bookkeeping (JobQueue + Inventory).

The simulator keeps its own lighter bookkeeping and builds Snapshots directly; both
hand the same kind of Snapshot to the same plan().
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from orchestrator.core.decisions import Snapshot
from orchestrator.core.inventory import Inventory
from orchestrator.core.job import Job
from orchestrator.core.preemption import Running
from orchestrator.core.queue import JobQueue
from orchestrator.core.states import JobState


def running_view(job: Job, now: float, stopping: bool = False) -> Running:
    # A job between SCHEDULED and RUNNING has not started its clock yet: count from now.
    started = job.state_times.get(JobState.RUNNING, now) if job.state is JobState.RUNNING else now
    return Running(
        id=job.id,
        label=job.label,
        user=job.user,
        priority=int(job.priority),
        counts={node: len(g) for node, g in job.allocation.items()},
        started_at=started,
        time_limit=job.time_limit,
        preemptible=job.preemptible,
        stopping=stopping,
    )


def snapshot_of(
    queue: JobQueue,
    inventory: Inventory,
    now: float,
    usage: Mapping[str, float] | None = None,
    stopping: frozenset[str] = frozenset(),
    reserved: Sequence[str] = (),
) -> Snapshot:
    """`stopping`: ids of jobs being stopped whose GPUs are not back yet; `reserved`: the
    jobs that held reservations after the last cycle."""
    running = [running_view(queue.get(job_id), now, job_id in stopping) for job_id in inventory.jobs()]
    return Snapshot(
        sizes=inventory.usable(),
        free=inventory.free(),
        line=queue.line,
        running=running,
        usage=dict(usage or {}),
        reserved=tuple(reserved),
    )
