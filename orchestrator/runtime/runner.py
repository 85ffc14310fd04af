"""The runner: a detached Ray actor that runs jobs on the GPUs of one slot.

A *slot* is a detached placement group with one GPU bundle on one node, plus one
runner created inside it with `num_gpus=k`, so Ray binds k GPUs of that node to the
runner. The runner starts each job's command under the supervisor
(orchestrator/runtime/supervisor.py) with CUDA_VISIBLE_DEVICES set from the GPU IDs Ray
assigned — always explicitly: with num_gpus=0 Ray sets no CUDA_VISIBLE_DEVICES at
all, and a job must never see every GPU of the node by accident. The job's
environment is sent to the supervisor on a pipe, never through this worker's own
environment (which holds Ray's address and token) nor its command line (which every
user of the node can read).

Slots are reused: when a job ends its slot is parked, and the next job of the same
shape on that node runs in it at once. Starting a Ray worker process costs about as
much as everything else in a launch together (measured: ~0.7 s of CPU), so reuse is
what makes a busy queue of short jobs go fast.

Runners are detached and named, so they survive an orchestrator restart, which finds
them again by the slot names stored with each job. Methods run on a small thread
pool so `stop` is served while `wait` blocks. Every call names the job (id, attempt,
rank) it is about: `run` is idempotent for the same job, so nothing starts twice.
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

from orchestrator.runtime.jobfiles import job_dir, read_exit

# What the supervisor itself inherits: enough to start Python, and the job tags the
# node's reaper and telemetry find processes by. Not the job's environment.
SUPERVISOR_ENV = ("PATH", "LANG", "LC_ALL", "TZ", "PYTHONPATH", "VIRTUAL_ENV", "HOME")
# The supervisor needs the standard library and gpuq's own package only, so it starts
# with `-S`: no site, none of the venv's .pth hooks (an editable install's finder,
# pynvml's redirector), which cost a start ~15 ms on every job. PYTHONPATH says where
# gpuq's package is instead.
PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


@ray.remote(num_cpus=0, max_restarts=0, max_concurrency=4)
class Runner:
    def __init__(self, node: str, data_root: str):
        self.node, self.data_root = node, data_root
        self.key: tuple[str, int, int] | None = None
        self.proc: subprocess.Popen | None = None
        self.started: dict | None = None

    def hello(self) -> dict:
        """Where the runner is and which GPUs Ray bound to it."""
        return {"node": self.node, "gpus": [int(g) for g in ray.get_gpu_ids()],
                "node_id": ray.get_runtime_context().get_node_id(), "ip": ray.util.get_node_ip_address()}

    def rendezvous(self) -> dict:
        """Address and a free port for rank 0 (MASTER_ADDR / MASTER_PORT of torchrun)."""
        with socket.socket() as s:
            s.bind(("", 0))
            port = s.getsockname()[1]
        return {"ip": ray.util.get_node_ip_address(), "port": port}

    def run(self, job_id: str, attempt: int, rank: int, command: str, env: dict[str, str],
            working_dir: str | None, time_limit: float, grace: float, account: str | None = None,
            base_env: dict[str, str] | None = None, group_read: bool = False) -> dict:
        """Launch a job's command under the supervisor, as `account` (None: this worker's
        own account); the same job twice returns the first launch."""
        key = (job_id, attempt, rank)
        if self.key == key and self.started is not None:
            return self.started
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError(f"runner on {self.node} is busy with job {self.key[0]}")
        gpus = [int(g) for g in ray.get_gpu_ids()]
        directory = job_dir(self.data_root, self.node, job_id, attempt, rank)
        job_env = {**env, "CUDA_VISIBLE_DEVICES": ",".join(map(str, gpus))}
        tags = {k: v for k, v in job_env.items() if k.startswith("GPUQ_")}
        own_env = {**{k: os.environ[k] for k in SUPERVISOR_ENV if k in os.environ}, **tags,
                   "CUDA_VISIBLE_DEVICES": job_env["CUDA_VISIBLE_DEVICES"]}
        own_env["PYTHONPATH"] = os.pathsep.join(filter(None, (PACKAGE_ROOT, own_env.get("PYTHONPATH"))))
        cmd = [
            sys.executable, "-S", "-m", "orchestrator.runtime.supervisor", "--dir", str(directory),
            "--time-limit", str(time_limit), "--grace", str(grace),
        ]
        if working_dir:
            cmd += ["--cwd", working_dir]
        if account:
            cmd += ["--user", account]
        if group_read:
            cmd.append("--group-read")
        cmd += ["--", "/bin/bash", "-c", command]
        # Its own session: a SIGKILL of this worker's process group does not reach the job;
        # the supervisor's parent-death signal ends it instead, cleanly.
        self.proc = subprocess.Popen(cmd, env=own_env, start_new_session=True, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd="/")
        try:
            self.proc.stdin.write(json.dumps({"base": base_env or {}, "env": job_env}).encode())
            self.proc.stdin.close()
        except BrokenPipeError:
            pass  # it died at once; wait() reports how
        self.key = key
        self.started = {"node": self.node, "gpus": gpus, "pid": self.proc.pid, "started_at": time.time()}
        return self.started

    def wait(self, job_id: str, attempt: int, rank: int) -> dict | None:
        """Block until that job's supervisor exits; its exit record (None: not this runner's job)."""
        if self.key != (job_id, attempt, rank) or self.proc is None:
            return None
        # The supervisor prints its exit record when the job is over: believed over the
        # copy on disk, which the job's user owns.
        said = self.proc.stdout.read()
        self.proc.wait()
        try:
            record = json.loads(said.decode().strip().splitlines()[-1])
        except (ValueError, IndexError):
            record = read_exit(job_dir(self.data_root, self.node, job_id, attempt, rank))
        return record or {"exit_code": None, "signal": None, "reason": "supervisor_lost", "ended_at": time.time()}

    def stop(self, job_id: str, attempt: int, rank: int) -> None:
        """Ask the supervisor to stop that job: TERM, its grace period, then KILL."""
        if self.key == (job_id, attempt, rank) and self.proc is not None and self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

