"""What the orchestrator shows: plain dicts in the API's shapes (README, "REST API"), for the API and CLI.

Times are seconds since the epoch (UTC). Keys of the API's first version keep their names and
meaning; everything else is added under new keys.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from orchestrator.core.decisions import Pending, Plan, Reason
from orchestrator.core.fleet import Fleet
from orchestrator.core.inventory import Inventory, SlotState
from orchestrator.core.job import Job, format_allocation
from orchestrator.core.queue import JobQueue
from orchestrator.core.states import JobState
from orchestrator.head.backends import Backend
from orchestrator.head.jobpython import JobPython
from orchestrator.head.nodes import NodeInfo
from orchestrator.host.accounts import install_mode


def submitted(job: Job, queue: JobQueue) -> dict:
    """POST /queue/submit's answer: success, job_id, status, queue_position."""
    return {
        "success": True,
        "job_id": job.id,
        "job": {
            "id": job.id,
            "run_id": job.spec.run_id,
            "state": job.state.value,
            "gpu_count": job.spec.gpu_count,
            "priority": int(job.priority),
        },
        "queue_position": queue.position(job.id),
    }


def job(j: Job, queue: JobQueue, detail: bool = False) -> dict:
    out: dict[str, Any] = {
        "id": j.id,
        "run_id": j.spec.run_id,
        "name": j.spec.name,
        "user": j.spec.user,
        "state": j.state.value,
        "gpu_count": j.spec.gpu_count,
        "priority": int(j.priority),
        "priority_name": j.priority.name,
        "time_limit": j.spec.time_limit,
        "submitted_at": j.submitted_at,
        "started_at": j.state_times.get(JobState.RUNNING),
        "ended_at": j.state_times.get(j.state) if j.state.is_terminal else None,
        "attempts": j.attempts,
        "retries": j.retries,
        "allocation": j.allocation,
        "placement": format_allocation(j.allocation),
        "exit_code": j.exit_code,
        "failure_reason": j.failure_reason,
        "queue_position": queue.position(j.id) if j.id in queue else None,  # history is never in line
    }
    if j.array_id is not None:
        out.update(array_id=j.array_id, array_index=j.array_index)
    if j.spec.ray:  # a Ray program: where its own cluster runs; Ray's dashboard is not started for it
        out["ray_cluster"] = {"head": j.ray_head, "nodes": len(j.allocation) or None, "dashboard": None}
    if detail:
        out.update(
            spec=j.spec.model_dump(mode="json"),
            placements={str(a): alloc for a, alloc in j.placements.items()},
            slots={str(a): names for a, names in j.slots.items()},
            state_times={s.value: t for s, t in j.state_times.items()},
            events=[e.model_dump(mode="json") for e in j.events],
        )
    return out


def jobs(page: list[Job], total: int, queue: JobQueue, limit: int, offset: int, detail: bool = False) -> dict:
    """A page of jobs, newest first, as people read job lists (history.Records.page)."""
    return {"jobs": [job(j, queue, detail) for j in page], "total": total, "limit": limit, "offset": offset}


def line(queue: JobQueue, last: Plan | None, limit: int, waiting_on: dict | None = None) -> dict:
    """Queued jobs in the order the policy considers them, with why and when, then held
    ones: at most `limit` of each, and how many there are in all (`total`, `held`)."""
    order = list(last.order) if last else []
    seen = set(order)
    order += [j.id for j in queue.queued() if j.id not in seen]  # submitted since the last cycle
    out: list[dict[str, Any]] = []
    for jid in order:
        if jid not in queue:
            continue
        j = queue.get(jid)
        if j.state is not JobState.QUEUED:
            continue
        pending = (last.pending.get(jid) if last else None) or Pending(
            Reason.PRIORITY, "waiting for the next scheduling cycle"
        )
        out.append(
            {
                **job(j, queue),
                "position": len(out) + 1,
                "reason": pending.code.value,
                "message": pending.message,
                "estimated_start": pending.estimated_start,
            }
        )
        if len(out) >= limit:
            break
    for jid in list(queue.blocked)[:limit]:  # waiting on other jobs: out of the line (dependents.py)
        pending = (waiting_on or {}).get(jid) or Pending(
            Reason.DEPENDENCY, "waits for the jobs it depends on"
        )
        out.append(
            {
                **job(queue.get(jid), queue),
                "position": None,
                "reason": pending.code.value,
                "message": pending.message,
                "estimated_start": pending.estimated_start,
            }
        )
    held = [j for j in queue.jobs() if j.state is JobState.HELD][:limit]
    out += [
        {
            **job(j, queue),
            "position": None,
            "reason": Reason.HELD.value,
            "message": "held; release it to put it back in line",
            "estimated_start": None,
        }
        for j in held
    ]
    return {"jobs": out, "total": queue.count(JobState.QUEUED), "held": queue.count(JobState.HELD)}


@dataclass(frozen=True)
class About:
    """What this orchestrator is, as its status says: fixed when it starts."""

    cluster_id: str
    started_at: float
    versions: dict  # of the code and site config it runs
    set_aside: int  # job records that failed to load
    policy: str
    job_python: JobPython


def status(
    *,
    queue: JobQueue,
    inventory: Inventory,
    fleet: Fleet,
    backend: Backend,
    about: About,
    loop_running: bool,
    starting_jobs: bool,
    store_error: Exception | None,
    now: float,
    busy_while_waiting: dict | None = None,
) -> dict:
    """GET /orchestrator/status: queue and resource summaries, running jobs, stats, and `details`."""
    inv, q = inventory, queue
    s = q.stats
    total, allocated = inv.total, inv.allocated_count()
    unhealthy = inv.unhealthy_count()
    summary = q.summary()
    return {
        "running": loop_running,
        "stats": {
            "jobs_scheduled": s.jobs_scheduled,
            "jobs_completed": s.jobs_completed,
            "jobs_failed": s.jobs_failed,
            "scheduling_cycles": s.scheduling_cycles,
        },
        "resource_summary": {
            "total_gpus": total,
            "available_gpus": inv.free_count(),
            "allocated_gpus": allocated,
        },
        "queue_summary": {k: summary[k] for k in ("total_jobs", "queued", "running", "completed", "failed")},
        "details": {
            "utilization": allocated / total if total else 0.0,
            # Why GPUs are out of service, as the web page and `gpuq status` say it.
            "unhealthy_gpus": unhealthy,
            "drained_gpus": sum(1 for o in fleet.out.values() if o.state == "drained"),  # draining too
            "down_gpus": sum(1 for slots in inv.nodes.values() for sl in slots if sl.shown == "down"),
            "down_nodes": sorted(fleet.down),
            # Nodes whose jobs may still run, out of reach, and when they are requeued.
            "fencing": {n: d.requeue_at for n, d in sorted(fleet.down.items()) if d.fencing},
            "idle_gpus": len(fleet.idle(now)),
            "telemetry": sorted({r.source for r in fleet.reports.values()}),
            "containment": {n: r.containment for n, r in sorted(fleet.reports.items()) if r.containment},
            "queue_wait": queue_wait(q, now),
            # GPUs busy while jobs waited, the last 24 h, and where the idle time went (head/idle.py).
            "busy_while_waiting": busy_while_waiting,
            "states": summary,
            "jobs_retried": s.jobs_retried,
            "jobs_preempted": s.jobs_preempted,
            "jobs_cancelled": s.jobs_cancelled,
            "nodes": list(inv.sizes),
            "policy": about.policy,
            "slots": {
                "busy": sum(1 for sl in backend.slots.values() if sl.parked_at is None),
                "parked": sum(1 for sl in backend.slots.values() if sl.parked_at is not None and sl.ready),
            },
            "cluster_id": about.cluster_id,
            "started_at": about.started_at,
            "install": install_mode(),
            "ray_jobs": {
                "job_python": about.job_python.path,
                "ready": about.job_python.ray_ready,
                "why_not": about.job_python.why_not or None,
            },
            "starting_jobs": starting_jobs,  # false: the site config or an admin stopped starts
            "records_set_aside": about.set_aside,
            "version": about.versions,
            "store": {"writable": store_error is None, "error": str(store_error) if store_error else None},
        },
    }


def queue_wait(queue: JobQueue, now: float) -> dict:
    """How long the jobs in line now have waited: the dashboard's "Queue Wait Time (avg, max)"."""
    waits = [now - j.state_times.get(JobState.QUEUED, j.submitted_at) for j in queue.queued()]
    return {
        "avg_s": sum(waits) / len(waits) if waits else 0.0,
        "max_s": max(waits, default=0.0),
        "jobs": len(waits),
    }


def resources(
    inventory: Inventory, queue: JobQueue, fleet: Fleet, nodes: dict[str, NodeInfo], now: float
) -> dict:
    """Every node and GPU: state, job, user, health, idleness and the latest telemetry.
    A node's `telemetry.source` says whether its readings are real NVML or simulated."""
    inv = inventory
    idle = fleet.idle(now)
    out = []
    for node, slots in inv.nodes.items():
        report = fleet.reports.get(node)
        samples = {g.index: g for g in report.gpus} if report else {}
        gpus = []
        for slot in slots:
            j = queue.get(slot.job_id) if slot.job_id and slot.job_id in queue else None
            why = fleet.state_of(node, slot.index)
            g = samples.get(slot.index)
            gpus.append(
                {
                    "index": slot.index,
                    "name": slot.name,
                    "state": slot.shown,
                    "job_id": slot.job_id,
                    "run_id": j.spec.run_id if j else None,
                    "user": j.spec.user if j else None,
                    "idle": (node, slot.index) in idle,
                    "idle_since": idle[(node, slot.index)][1] if (node, slot.index) in idle else None,
                    "out_of_service": None
                    if why is None
                    else {"state": why.state, "reason": why.reason, "by": why.by, "since": why.since},
                    "telemetry": None
                    if g is None
                    else {
                        "utilization": g.utilization,
                        "memory_used_bytes": g.memory_used_bytes,
                        "memory_total_bytes": g.memory_total_bytes,
                        "temperature_celsius": g.temperature_celsius,
                        "power_watts": g.power_watts,
                        "ecc_uncorrected": g.ecc_uncorrected,
                    },
                }
            )
        info = nodes.get(node)
        down = fleet.down.get(node)
        out.append(
            {
                "node": node,
                "ip": info.ip if info else None,
                "total": len(slots),
                "state": "up" if down is None else "fencing" if down.fencing else "down",
                "down": None if down is None else asdict(down),  # reason, since, requeue_at, fenced
                "free": sum(1 for s in slots if s.state is SlotState.FREE),
                "gpus": gpus,
                "telemetry": {
                    "source": report.source if report else None,
                    "detail": report.detail if report else "no report yet",
                    "reported_at": report.at if report else None,
                },
            }
        )
    return {"nodes": out}
