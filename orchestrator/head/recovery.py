"""After a (re)start: make what Ray runs agree with what the store says, through the
launches part (launches.py): its queue, GPUs and backend, and the steps of a launch.

The store is the truth for what users were told; Ray is the truth for what runs.
- SCHEDULED jobs had nothing on Ray yet: they go back in line.
- ALLOCATING jobs whose slots were all recorded (the names are stored before any job
  runs in them) finish their launch: `run` is idempotent per job, so a command that
  already started is adopted, never started twice. Others go back in line.
- RUNNING jobs are adopted: their runners, found by slot name, are watched again. A
  runner that is gone is asked about through its node's agent: an exit record there
  means the job ended while we were down; none means its node was lost.
- PREEMPTED and CANCELLED jobs whose runners still exist are stopped again.
- Every other gpuq slot (parked ones included) is removed.
"""

from __future__ import annotations

import logging

from orchestrator.core import lifecycle
from orchestrator.core.inventory import AllocationError
from orchestrator.core.job import Job
from orchestrator.core.states import JobState
from orchestrator.head.launches import Launches

log = logging.getLogger("gpuq.recovery")

_HOLDING = (JobState.ALLOCATING, JobState.RUNNING, JobState.PREEMPTED, JobState.CANCELLED)


async def recover(launches: Launches) -> None:
    now = launches.clock()
    keep: set[str] = set()
    for job in list(launches.queue.jobs()):
        if job.state is JobState.SCHEDULED:
            launches.carry_out(
                lifecycle.not_started(launches.queue, job, "orchestrator restarted before launch", now)
            )
            continue
        if job.state not in _HOLDING or not job.allocation:
            continue
        attempt = job.attempts + 1 if job.state is JobState.ALLOCATING else job.attempts
        names = job.slots.get(attempt, [])
        alive = [launches.backend.has_runner(n) for n in names]
        if job.state is JobState.ALLOCATING and (len(names) != len(job.allocation) or not all(alive)):
            launches.carry_out(
                lifecycle.not_started(launches.queue, job, "orchestrator restarted during placement", now)
            )
            continue
        if job.state is JobState.CANCELLED and not any(alive):
            continue
        try:
            launches.inventory.allocate(job.id, job.allocation)
        except AllocationError as e:  # should not happen; never let it stop recovery
            log.error("recovery: %s", e)
        # A cancelled job may hold fewer nodes than it had slots: adopt what both name.
        for name, (node, gpus) in zip(names, job.allocation.items(), strict=False):
            launches.backend.adopt_slot(name, node, len(gpus), gpus)
            keep.add(name)
        if job.state is JobState.ALLOCATING:
            launches.tasks.spawn(_finish_launch(launches, job, attempt, names))
            continue
        if job.state in (JobState.PREEMPTED, JobState.CANCELLED):
            launches.stop_job(job)
        launches.tasks.spawn(launches.monitor(job, attempt))
    launches.backend.forget_unknown_slots(keep)
    launches.backend.adopt_quarantine()
    launches.tasks.wake()


async def _finish_launch(launches: Launches, job: Job, attempt: int, names: list[str]) -> None:
    try:
        infos = await launches.start_on(
            names, job, attempt
        )  # the same launch again: the runners answer it once
    except Exception:
        log.exception("recovery: could not finish the launch of %s", job.id)
        for name in names:
            launches.backend.discard(name)
        launches.give_back(job)
        launches.carry_out(
            lifecycle.not_started(
                launches.queue, job, "orchestrator restarted during launch", launches.clock()
            )
        )
        return
    if infos is not None:
        await launches.adopt(job, attempt, infos)
