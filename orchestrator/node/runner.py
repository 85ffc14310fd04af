"""The runner: a detached Ray actor that runs jobs on the GPUs of one slot.

A *slot* is a detached placement group with one GPU bundle on one node, plus one
runner created inside it with `num_gpus=k`, so Ray binds k GPUs of that node to the
runner. The runner starts each job's command under a supervisor
(orchestrator/node/supervisor.py), forked by the slot's launcher, with
CUDA_VISIBLE_DEVICES set from the GPU IDs Ray assigned — always explicitly: with
num_gpus=0 Ray sets no CUDA_VISIBLE_DEVICES at all, and a job must never see every
GPU of the node by accident. The job's environment is sent to the launcher on a
socket, never through this worker's own environment (which holds Ray's address and
the path of its token) nor its command line (which every user of the node can read).

A runner is root's (in a multi-user install) and is made with no runtime env of any
job: a user's package on its PYTHONPATH would run as root in it. It fetches a job's
packages from Ray's store as bytes into the node's package cache (node/packagestore.py) and
hands them to the supervisor open; the user's own process unpacks them.

Slots are reused: when a job ends its slot is parked, and the next job of the same
shape on that node runs in it at once, whatever its runtime env. Starting a Ray worker process costs about as
much as everything else in a launch together (measured: ~0.7 s of CPU), so reuse is
what makes a busy queue of short jobs go fast.

Runners are detached and named, so they survive an orchestrator restart, which finds
them again by the slot names stored with each job. Methods run on a small thread
pool so `stop` is served while `wait` blocks. Every call names the job (id, attempt,
rank) it is about: `run` is idempotent for the same job, so nothing starts twice.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import time
from pathlib import Path

import ray

from orchestrator.node import cgroups, packagestore
from orchestrator.node.jobfiles import job_dir
from orchestrator.node.launcher import Launched, Launcher
from orchestrator.node.launchspec import LaunchSpec
from orchestrator.node.lease import lease_path


def rendezvous_env(master: dict) -> dict[str, str]:
    """Where rank 0 listens, in torchrun's variables (runner.rendezvous's answer)."""
    return {
        "MASTER_ADDR": master["ip"],
        "MASTER_PORT": str(master["port"]),
        "PET_MASTER_ADDR": master["ip"],
        "PET_MASTER_PORT": str(master["port"]),
    }


def node_share(gpus: int, node_gpus: int, limits: dict | None = None) -> dict[str, int]:
    """What a Ray job's node declares besides its GPUs: its GPUs' share of this machine's
    CPUs and memory, or the job's limits (rank_limits) where it has them. At least one
    CPU per GPU and one more, so that a trainer of one worker per GPU (Ray Train's
    default asks a CPU each) fits on a small machine."""
    share = gpus / max(node_gpus, gpus)
    limits = limits or {}
    cpus = max(gpus + 1, math.ceil(limits.get("cpus") or (os.cpu_count() or 1) * share))
    total = limits.get("memory") or int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * share)
    object_store = max(100 * 1024 * 1024, int(total * 0.3))  # Ray's own default share
    return {
        "cpus": cpus,
        "memory": max(total - object_store, 256 * 1024 * 1024),
        "object_store": object_store,
    }


def rank_limits(limits: dict, gpus: int) -> dict:
    """A rank's memory (bytes) and CPUs: the job's own per node, else the site's per GPU."""
    memory = limits.get("memory") or (limits.get("memory_per_gpu") or 0) * gpus or None
    cpus = limits.get("cpus") or (limits.get("cpus_per_gpu") or 0) * gpus or None
    return {"memory": int(memory) if memory else None, "cpus": cpus}


@ray.remote(num_cpus=0, max_restarts=0, max_concurrency=4)  # type: ignore[call-overload]  # Ray types it short
class Runner:
    def __init__(self, node: str, data_root: str, scratch: str | None = None):
        self.node, self.data_root = node, data_root
        self.scratch = scratch or str(Path(data_root) / node / "scratch")
        self.key: tuple[str, int, int] | None = None
        self.proc: Launched | None = None
        self.started: dict | None = None
        self.announced = False  # the running job's supervisor says when its runtime env is ready
        self.launcher = Launcher()  # with the slot, not on its first job's clock
        self.containment = cgroups.find()  # what this node can contain a job with (cgroups.py)

    def hello(self) -> dict:
        """Where the runner is and which GPUs Ray bound to it."""
        return {
            "node": self.node,
            "gpus": [int(g) for g in ray.get_gpu_ids()],
            "node_id": ray.get_runtime_context().get_node_id(),
            "ip": ray.util.get_node_ip_address(),
        }

    def rendezvous(self) -> dict:
        """Address and a free port for rank 0 (MASTER_ADDR / MASTER_PORT of torchrun)."""
        with socket.socket() as s:
            s.bind(("", 0))
            port = s.getsockname()[1]
        return {"ip": ray.util.get_node_ip_address(), "port": port}

    def run(self, spec: LaunchSpec, rank: int, ray_node: dict | None = None) -> dict:
        """Launch rank `rank` of a job's attempt (`spec`) under the supervisor, as
        `spec.account` (None: this worker's own account); the same job twice returns the
        first launch. With a runtime env (`spec.renv`: its packages, as stored, and pip/uv
        lists), the packages are fetched here as bytes and handed over open; the
        supervisor has them unpacked and the virtualenv made as the user, and this
        returns once that is done, with `setup_s`, or with `setup_failed` and why.
        `ray_node` (a Ray job's rank: its role, port block, token, Python) makes the rank
        a node of the job's private Ray cluster; this runner adds the node's share of
        CPUs and memory, and its address. `spec.limits` (the job's `memory` bytes and
        `cpus` per node, else the site's per GPU) are enforced by the rank's cgroup."""
        job_id, attempt, env, renv = spec.job_id, spec.attempt, spec.env, spec.renv
        key = (job_id, attempt, rank)
        if self.key == key and self.proc is not None:
            return self._when_prepared()
        if self.proc is not None and not self.proc.ended.is_set():
            raise RuntimeError(f"runner on {self.node} is busy with job {self.key[0] if self.key else '?'}")
        gpus = [int(g) for g in ray.get_gpu_ids()]
        directory = job_dir(self.data_root, self.node, job_id, attempt, rank)
        job_env = {**env, "CUDA_VISIBLE_DEVICES": ",".join(map(str, gpus))}
        if "MASTER_ADDR" not in job_env:  # a one-slot job: its own node is its rendezvous
            job_env.update(rendezvous_env(self.rendezvous()))
        plan = {
            "scratch": self.scratch,
            "job": f"{job_id}-{attempt}-{rank}",
            **(renv or {}),
            "announce": bool(renv),
        }
        fds: list[int] = []
        try:
            for package in plan.get("packages", []):
                fds.append(
                    packagestore.open_package(
                        package["stored"],
                        Path(self.data_root) / self.node / "packages",
                        int(plan.get("keep_s") or 3600),
                        package["uri"],
                    )
                )
        except packagestore.RuntimeEnvFailed as e:
            for fd in fds:
                os.close(fd)
            return {"setup_failed": str(e)}
        argv = ["--dir", str(directory), "--time-limit", str(spec.time_limit), "--grace", str(spec.grace)]
        if spec.working_dir:
            argv += ["--cwd", spec.working_dir]
        if spec.account:
            argv += ["--user", spec.account]
        if spec.group_read:
            argv.append("--group-read")
        argv += ["--", "/bin/bash", "-c", spec.command]
        sent: dict = {"base": spec.base_env or {}, "env": job_env, "prepare": plan}
        if getattr(spec, "lease_s", None):  # a spec from an older head has none
            sent["lease"] = {"path": str(lease_path(self.data_root, self.node)), "seconds": spec.lease_s}
        mine = rank_limits(spec.limits or {}, len(gpus))
        if self.containment.usable:
            sent["cgroup"] = {
                "name": cgroups.rank_name(
                    cgroups.scope(env.get("GPUQ_CLUSTER", "none"), self.node), job_id, attempt, rank
                ),
                "found": self.containment.as_sent(),
                **mine,
            }
        if ray_node:
            sent["ray"] = {
                **ray_node,
                **node_share(len(gpus), ray_node["node_gpus"], mine),
                "ip": ray.util.get_node_ip_address(),
            }
        # The job's environment goes on the launcher's socket, never through this
        # worker's own environment nor a command line.
        try:
            self.proc = self.launcher.launch(argv, sent, directory, fds)
        finally:
            for fd in fds:
                os.close(fd)
        self.key = key
        self.started = {"node": self.node, "gpus": gpus, "pid": self.proc.pid, "started_at": time.time()}
        if ray_node and ray_node["role"] == "head":
            self.started["ray_head"] = f"{sent['ray']['ip']}:{ray_node['ports']}"
        self.announced = plan["announce"]
        return self._when_prepared()

    def _when_prepared(self) -> dict:
        """The launch's answer: at once for a plain job; for one with a runtime env, once
        that is ready or has failed."""
        proc, started = self.proc, self.started
        if proc is None or started is None:  # only called once a launch has set both
            raise RuntimeError(f"runner on {self.node} has launched nothing")
        if not self.announced:
            return started
        proc.ready.wait()
        if proc.prepared is not None:
            return {**started, "setup_s": proc.prepared.get("setup_s", 0.0), "started_at": time.time()}
        record = proc.result(0) or {}
        if record.get("reason") == "runtime_env_failed":
            return {"setup_failed": record.get("message") or "the runtime env could not be set up"}
        return started

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
