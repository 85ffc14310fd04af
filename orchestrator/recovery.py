"""After a (re)start: make what Ray runs agree with what the store says.

The store is the truth for what users were told; Ray is the truth for what runs.
- SCHEDULED jobs had nothing on Ray yet (their placement group is requested only
  after ALLOCATING is stored): they go back in line.
- ALLOCATING jobs finish their launch if their placement group exists — runners are
  found by name and `start` is idempotent, so nothing starts twice — else go back.
- RUNNING jobs are adopted: their runners are watched again. A runner that is gone
  is asked about through its node's agent: an exit record there means the job ended
  while we were down; none means its node was lost (an infrastructure failure).
- PREEMPTED and CANCELLED jobs whose runners still exist are stopped again.
- Placement groups that belong to no such job are removed.
"""

from __future__ import annotations

import logging
import time

import ray

from orchestrator.backend import pg_name
from orchestrator.inventory import AllocationError
from orchestrator.states import JobState

log = logging.getLogger("gpuq.recovery")

_HOLDING = (JobState.ALLOCATING, JobState.RUNNING, JobState.PREEMPTED, JobState.CANCELLED)


async def recover(svc) -> None:
    now = time.time()
    keep: set[str] = set()
    for job in list(svc.queue.jobs()):
        if job.state is JobState.SCHEDULED:
            svc.save([svc.queue.requeue(job.id, now, "orchestrator restarted before launch")])
            continue
        if job.state not in _HOLDING or not job.allocation:
            continue
        attempt = job.attempts + 1 if job.state is JobState.ALLOCATING else job.attempts
        ranks = len(job.allocation)
        alive = [svc.backend.runner(job.id, attempt, r) is not None for r in range(ranks)]
        if job.state is JobState.CANCELLED and not any(alive):
            continue
        try:
            svc.inventory.allocate(job.id, job.allocation)
        except AllocationError as e:  # should not happen; never let it stop recovery
            log.error("recovery: %s", e)
        keep.add(pg_name(job.id, attempt))
        if job.state is JobState.ALLOCATING:
            svc.spawn(_finish_launch(svc, job, attempt))
            continue
        if job.state in (JobState.PREEMPTED, JobState.CANCELLED):
            svc.stopping.add(job.id)
            svc.backend.stop(job.id, attempt, ranks)
        svc.spawn(svc._monitor(job, attempt, ranks))
    for name in svc.backend.gpuq_pgs():
        if name not in keep:
            svc.backend.remove_pg(name)
    svc.wake()


async def _finish_launch(svc, job, attempt: int) -> None:
    counts = {node: len(g) for node, g in job.allocation.items()}
    try:
        pg = ray.util.get_placement_group(pg_name(job.id, attempt))
    except ValueError:
        pg = None
    if pg is None:
        svc.backend.cleanup(job.id, attempt, len(counts))
        svc._release(job)
        svc.save([svc.queue.requeue(job.id, time.time(), "orchestrator restarted during placement")])
        svc.wake()
        return
    env = {**job.spec.env, "GPUQ_JOB_ID": job.id, "GPUQ_RUN_ID": job.spec.run_id, "GPUQ_ATTEMPT": str(attempt),
           "GPUQ_USER": job.spec.user}
    infos = await svc.backend.launch(job.id, attempt, pg, counts, env, job.spec.command, job.spec.working_dir,
                                     float(job.time_limit), svc.site.stop_grace_s)
    await svc.adopt(job, attempt, infos)
