"""Ray's Jobs REST API, the subset Ray's own `ray job` CLI uses, mapped onto gpuq.

So that the unmodified `ray job submit --address http://127.0.0.1:8000 --headers
'{"Authorization": "Bearer <token>"}' --entrypoint-num-gpus 2 -- python train.py`
queues a gpuq job, streams its output and exits 0 or 1 with it.

Mapping (the request is checked by models.RaySubmitRequest first): `entrypoint` ->
command; `entrypoint_num_gpus` -> gpu_count (whole GPUs; a job that names none gets
1: gpuq queues GPU jobs); `submission_id` -> run id and idempotency key;
`runtime_env` -> runtime_env (working_dir, py_modules, pip, uv, env_vars, excludes:
orchestrator/core/runtime_env.py); `metadata` keys `priority`, `user` (admins),
`time_limit`, `max_retries`, `name` -> the same gpuq fields; `ray` ("true"/"false";
default true) -> whether it gets a private Ray cluster (a Ray entrypoint calls
`ray.init()`). What gpuq cannot honour
(conda, containers, CPU, memory or custom resources, label selectors) is refused by
name, never dropped.
"""

import re
from typing import Any

from serve_app.models import RaySubmitRequest

STATUS = {
    "queued": "PENDING",
    "held": "PENDING",
    "scheduled": "PENDING",
    "allocating": "PENDING",
    "preempted": "PENDING",
    "running": "RUNNING",
    "completed": "SUCCEEDED",
    "failed": "FAILED",
    "cancelled": "STOPPED",
}
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
_RAY_WORDS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def spec_from_ray(
    req: RaySubmitRequest, default_user: str, ray_default: bool = True
) -> tuple[dict, str | None]:
    """A gpuq spec (and idempotency key) from a Ray job submission. It is a Ray program
    (a private Ray cluster for its `ray.init()`) unless metadata `ray` says "false", or
    the site's `ray_jobs_api_ray` made that the default."""
    submission_id = req.submission_id or req.job_id
    spec: dict[str, Any] = {
        "command": req.entrypoint,
        "gpu_count": int(req.entrypoint_num_gpus or 1),
        "run_id": _safe(submission_id) if submission_id else "ray-job",
        "user": default_user,
        **({"runtime_env": req.runtime_env} if req.runtime_env else {}),
        **(req.metadata or {}),  # gpuq's own fields, validated with the rest by JobSpec
    }
    said = spec.pop("ray", None)
    spec["ray"] = ray_default if said is None else _RAY_WORDS.get(said.strip().lower(), said)
    if "max_retries" in spec:  # metadata values are strings in Ray's API
        spec["max_retries"] = (
            int(spec["max_retries"]) if spec["max_retries"].isdigit() else spec["max_retries"]
        )
    return spec, submission_id


def details(job: dict) -> dict:
    """gpuq's job detail as Ray's JobDetails."""
    status = STATUS[job["state"]]
    message = {
        "PENDING": "waiting in gpuq's queue",
        "RUNNING": f"running on {job['placement']}"
        + (
            f", a Ray program on its own Ray cluster (head {job['ray_cluster']['head']})"
            if job.get("ray_cluster")
            else ""
        ),
        "SUCCEEDED": "exit code 0",
        "FAILED": f"{job.get('failure_reason') or 'failed'} (exit code {job.get('exit_code')})",
        "STOPPED": "cancelled",
    }[status]
    spec = job.get("spec", {})
    return {
        "type": "SUBMISSION",
        "job_id": job["id"],
        "submission_id": job["id"],
        "driver_info": None,
        "status": status,
        "entrypoint": spec.get("command", ""),
        "message": message,
        "error_type": None,
        "start_time": int(job["started_at"] * 1000) if job.get("started_at") else None,
        "end_time": int(job["ended_at"] * 1000) if job.get("ended_at") else None,
        "metadata": {"gpuq_run_id": job["run_id"], "user": job["user"], "priority": job["priority_name"]},
        "runtime_env": {**(spec.get("runtime_env") or {}), "env_vars": spec.get("env", {})},
        "driver_agent_http_address": None,
        "driver_node_id": None,
        "driver_exit_code": job.get("exit_code"),
    }


def _safe(text: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "-", text)[:64].lstrip("-._")
    return cleaned or "ray-job"
