"""What one user may see of another's job, as `squeue` shows it: the shape, not the content.

Cluster-wide views (status, the queue, resources, metrics, usage) are for every
authenticated user. A job's command, environment, working directory and output are
its owner's and the admins'; anyone else sees its id, name, user, GPUs, priority,
state, placement and times. This module is the one place that decides it.
"""

from __future__ import annotations

from serve_app.auth import Principal

# The parts of a job's spec that describe its shape; the rest (command, env,
# working_dir, retry codes) is private.
SHAPE = ("run_id", "name", "user", "gpu_count", "priority", "time_limit", "preemptible", "multi_node", "ray")


def may_see_private(who: Principal | None, owner: str) -> bool:
    return who is not None and who.may_act_for(owner)


def job_for(who: Principal | None, job: dict) -> dict:
    """The job as `who` may see it."""
    if may_see_private(who, job["user"]) or "spec" not in job:
        return job
    return {**job, "spec": {k: v for k, v in job["spec"].items() if k in SHAPE}, "private": True}
