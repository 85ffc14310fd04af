"""The runner: a detached Ray actor that runs jobs on the GPUs of one slot.

A *slot* is a detached placement group with one GPU bundle on one node, plus one
runner created inside it with `num_gpus=k`, so Ray binds k GPUs of that node to the
runner. The runner starts each job's command under a supervisor
(orchestrator/runtime/supervisor.py), forked by the slot's launcher, with
CUDA_VISIBLE_DEVICES set from the GPU IDs Ray assigned — always explicitly: with
num_gpus=0 Ray sets no CUDA_VISIBLE_DEVICES at all, and a job must never see every
GPU of the node by accident. The job's environment is sent to the launcher on a
socket, never through this worker's own environment (which holds Ray's address and token) nor its command line (which every
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

import os
import signal
import socket
import time

import ray

from orchestrator.runtime.jobfiles import job_dir
from orchestrator.runtime.launcher import Launched, Launcher


def rendezvous_env(master: dict) -> dict[str, str]:
    """Where rank 0 listens, in torchrun's variables (runner.rendezvous's answer)."""
    return {"MASTER_ADDR": master["ip"], "MASTER_PORT": str(master["port"]),
            "PET_MASTER_ADDR": master["ip"], "PET_MASTER_PORT": str(master["port"])}


def prepared_for_jobs(env: dict) -> dict:
    """What a job takes from the environment Ray prepared for this worker: the working
    directory, the packages on PYTHONPATH (under Ray's runtime_resources: not the
    service's own entries) and the virtualenv."""
    out: dict = {}
    if "working_dir" in env:
        out["cwd"] = os.getcwd()
    out["pythonpath"] = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
                         if f"{os.sep}runtime_resources{os.sep}" in p]
    venv = os.environ.get("VIRTUAL_ENV")
    if ("pip" in env or "uv" in env) and venv:
        out["venv"] = venv
    return out


def in_prepared_env(prepared: dict, job_env: dict[str, str], base_env: dict[str, str]) -> dict[str, str]:
    """The variables that put a job's command in the prepared environment."""
    out = {}
    if prepared["pythonpath"]:
        out["PYTHONPATH"] = os.pathsep.join([*prepared["pythonpath"], *filter(None, [job_env.get("PYTHONPATH")])])
    if prepared.get("venv"):
        path = job_env.get("PATH") or base_env.get("PATH") or os.defpath
        out["PATH"] = f"{prepared['venv']}{os.sep}bin{os.pathsep}{path}"
        out["VIRTUAL_ENV"] = prepared["venv"]
    return out


@ray.remote(num_cpus=0, max_restarts=0, max_concurrency=4)
class Runner:
    def __init__(self, node: str, data_root: str, env: dict | None = None):
        self.node, self.data_root = node, data_root
        # Made with a runtime env, Ray prepared this worker in it before this runs: its
        # current directory is the unpacked working_dir, its PYTHONPATH names the
        # packages, its PATH starts with the virtualenv's bin. Jobs get the same.
        self.prepared = prepared_for_jobs(env) if env else None
        self.key: tuple[str, int, int] | None = None
        self.proc: Launched | None = None
        self.started: dict | None = None
        self.launcher = Launcher()  # with the slot, not on its first job's clock

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
        if self.proc is not None and not self.proc.ended.is_set():
            raise RuntimeError(f"runner on {self.node} is busy with job {self.key[0]}")
        gpus = [int(g) for g in ray.get_gpu_ids()]
        directory = job_dir(self.data_root, self.node, job_id, attempt, rank)
        job_env = {**env, "CUDA_VISIBLE_DEVICES": ",".join(map(str, gpus))}
        if "MASTER_ADDR" not in job_env:  # a one-slot job: its own node is its rendezvous
            job_env.update(rendezvous_env(self.rendezvous()))
        if self.prepared is not None:
            working_dir = self.prepared.get("cwd") or working_dir
            job_env.update(in_prepared_env(self.prepared, job_env, base_env or {}))
        argv = ["--dir", str(directory), "--time-limit", str(time_limit), "--grace", str(grace)]
        if working_dir:
            argv += ["--cwd", working_dir]
        if account:
            argv += ["--user", account]
        if group_read:
            argv.append("--group-read")
        argv += ["--", "/bin/bash", "-c", command]
        # The job's environment goes on the launcher's socket, never through this
        # worker's own environment nor a command line.
        self.proc = self.launcher.launch(argv, {"base": base_env or {}, "env": job_env}, directory)
        self.key = key
        self.started = {"node": self.node, "gpus": gpus, "pid": self.proc.pid, "started_at": time.time()}
        return self.started

    def wait(self, job_id: str, attempt: int, rank: int) -> dict | None:
        """Block until that job's supervisor exits; its exit record (None: not this runner's job)."""
        if self.key != (job_id, attempt, rank) or self.proc is None:
            return None
        return self.proc.result()

    def stop(self, job_id: str, attempt: int, rank: int) -> None:
        """Ask the supervisor to stop that job: TERM, its grace period, then KILL."""
        if self.key == (job_id, attempt, rank) and self.proc is not None and not self.proc.ended.is_set():
            try:
                os.kill(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

