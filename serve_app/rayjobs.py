"""Ray's Jobs REST API, the subset Ray's own `ray job` CLI uses, mapped onto gpuq.

So that the unmodified `ray job submit --address http://127.0.0.1:8000 --headers
'{"Authorization": "Bearer <token>"}' --entrypoint-num-gpus 2 -- python train.py`
queues a gpuq job, streams its output and exits 0 or 1 with it.

Mapping: `entrypoint` -> command; `entrypoint_num_gpus` -> gpu_count (rounded up; a
job that asks for none gets 1: gpuq queues GPU jobs); `submission_id` -> run id and
idempotency key; `runtime_env.env_vars` -> env; `metadata` keys `priority`, `user`
(admins), `time_limit`, `max_retries` -> the same gpuq fields. Other runtime_env keys
(working_dir uploads, pip) are refused by name: gpuq runs commands in place.
"""

import math
import re

STATUS = {
    "queued": "PENDING", "held": "PENDING", "scheduled": "PENDING", "allocating": "PENDING",
    "preempted": "PENDING", "running": "RUNNING", "completed": "SUCCEEDED", "failed": "FAILED", "cancelled": "STOPPED",
}
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
METADATA_FIELDS = {"priority": "priority", "user": "user", "time_limit": "time_limit", "max_retries": "max_retries"}


class Refused(ValueError):
    def __init__(self, field: str, message: str):
        self.field, self.message = field, message
        super().__init__(f"{field}: {message}")


def spec_from_ray(body: dict, default_user: str) -> tuple[dict, str | None]:
    """A gpuq spec (and idempotency key) from a Ray job submission body."""
    entrypoint = body.get("entrypoint")
    if not isinstance(entrypoint, str) or not entrypoint.strip():
        raise Refused("entrypoint", "must be a non-empty command")
    runtime_env = body.get("runtime_env") or {}
    unsupported = sorted(set(runtime_env) - {"env_vars"})
    if unsupported:
        raise Refused("runtime_env", f"{', '.join(unsupported)} not supported: gpuq runs the command in place; "
                                     "use env_vars, and absolute paths in the command")
    gpus = body.get("entrypoint_num_gpus") or 1
    submission_id = body.get("submission_id") or body.get("job_id")
    spec = {
        "command": entrypoint,
        "gpu_count": max(1, math.ceil(float(gpus))),
        "run_id": _safe(submission_id) if submission_id else "ray-job",
        "user": default_user,
        "env": {str(k): str(v) for k, v in (runtime_env.get("env_vars") or {}).items()},
    }
    for key, value in (body.get("metadata") or {}).items():
        if key in METADATA_FIELDS:
            spec[METADATA_FIELDS[key]] = int(value) if key == "max_retries" and str(value).isdigit() else value
    return spec, submission_id


def details(job: dict) -> dict:
    """gpuq's job detail as Ray's JobDetails."""
    status = STATUS[job["state"]]
    message = {
        "PENDING": "waiting in gpuq's queue",
        "RUNNING": f"running on {job['placement']}",
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
        "runtime_env": {"env_vars": spec.get("env", {})},
        "driver_agent_http_address": None,
        "driver_node_id": None,
        "driver_exit_code": job.get("exit_code"),
    }


def _safe(text: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "-", str(text))[:64].lstrip("-._")
    return cleaned or "ray-job"
