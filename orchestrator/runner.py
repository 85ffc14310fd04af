"""The runner: one detached Ray actor per bundle of a running job.

It is created inside the job's placement-group bundle with `num_gpus=k`, so Ray binds
k GPUs of that node to it; it starts the supervisor (orchestrator/supervisor.py) with
CUDA_VISIBLE_DEVICES set from the GPU IDs Ray assigned — always explicitly: with
num_gpus=0 Ray sets no CUDA_VISIBLE_DEVICES at all, and a child must never see every
GPU of the node by accident. It waits for the supervisor and reports its exit.

Runners are detached and named (`gpuq-run-<job>-<attempt>-<rank>`): they survive an
orchestrator restart, and the restarted orchestrator adopts them by name. Methods run
on a small thread pool so `stop` is served while `wait` blocks.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import ray


def job_dir(data_root: str, node: str, job_id: str, attempt: int, rank: int) -> Path:
    """Where a bundle's output and exit record live on its node (no shared file system)."""
    return Path(data_root) / node / "jobs" / job_id / str(attempt) / str(rank)


def runner_name(job_id: str, attempt: int, rank: int) -> str:
    return f"gpuq-run-{job_id}-{attempt}-{rank}"


@ray.remote(num_cpus=0, max_restarts=0, max_concurrency=4)
class Runner:
    def __init__(self, job_id: str, attempt: int, rank: int, node: str, data_root: str):
        self.job_id, self.attempt, self.rank, self.node = job_id, attempt, rank, node
        self.dir = job_dir(data_root, node, job_id, attempt, rank)
        self.proc: subprocess.Popen | None = None
        self.started: dict | None = None

    def rendezvous(self) -> dict:
        """Address and a free port for rank 0 (MASTER_ADDR / MASTER_PORT of torchrun)."""
        with socket.socket() as s:
            s.bind(("", 0))
            port = s.getsockname()[1]
        return {"ip": ray.util.get_node_ip_address(), "port": port}

    def start(self, command: str, env: dict[str, str], working_dir: str | None, time_limit: float, grace: float) -> dict:
        """Launch the command under the supervisor. Idempotent: a second call (a restarted
        orchestrator finishing a launch) returns the first launch, never starts twice."""
        if self.started is not None:
            return self.started
        gpus = [int(g) for g in ray.get_gpu_ids()]
        self.dir.mkdir(parents=True, exist_ok=True)
        child_env = {**os.environ, **env, "CUDA_VISIBLE_DEVICES": ",".join(map(str, gpus))}
        child_env.pop("RAY_ADDRESS", None)
        cmd = [
            sys.executable, "-m", "orchestrator.supervisor", "--dir", str(self.dir),
            "--time-limit", str(time_limit), "--grace", str(grace),
        ]
        if working_dir:
            cmd += ["--cwd", working_dir]
        cmd += ["--", "/bin/bash", "-c", command]
        # Its own session: a SIGKILL of this worker's process group does not reach the job;
        # the supervisor's parent-death signal ends it instead, cleanly.
        self.proc = subprocess.Popen(cmd, env=child_env, start_new_session=True, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.started = {
            "node": self.node,
            "node_id": ray.get_runtime_context().get_node_id(),
            "gpus": gpus,
            "pid": self.proc.pid,
            "started_at": time.time(),
        }
        return self.started

    def wait(self) -> dict:
        """Block until the supervisor exits; its exit record."""
        if self.proc is None:
            raise RuntimeError("runner was not started")
        self.proc.wait()
        return read_exit(self.dir) or {"exit_code": None, "signal": None, "reason": "supervisor_lost", "ended_at": time.time()}

    def stop(self) -> None:
        """Ask the supervisor to stop the job: TERM, its grace period, then KILL."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def ping(self) -> str:
        return self.node


def read_exit(directory: Path) -> dict | None:
    try:
        return json.loads((directory / "exit.json").read_text())
    except (OSError, ValueError):
        return None
