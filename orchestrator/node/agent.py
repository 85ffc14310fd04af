"""The node agent: one detached Ray actor per node, reserving no GPU.

It serves what lives on its node's disk — job logs and exit records — so nothing
depends on a shared file system; it reports its GPUs' telemetry (NVML, or the
simulation where NVML is missing: orchestrator/node/telemetry.py) and how it contains
jobs; and it reaps, the backstop behind the supervisor: the cgroup of a job the
orchestrator no longer runs is killed and removed (a supervisor that was SIGKILLed
leaves it behind), and so is any process tagged with this cluster's id and such a job
(a node where no cgroup can be made).

It holds the node's lease (core/lease.py) through its lease keeper, a process of its
own (leasekeeper.py): every second the keeper asks the GCS whether this node is alive
and writes the lease there; when both answer in time it records the renewal in the
node's lease file (node/lease.py), which every supervisor reads. A node that cannot
reach the head renews nothing, and its jobs stop by themselves. Should a supervisor be
gone, the agent kills what is left of every job FENCE_KILL_S after the lease ran out.
All of it without the head: the node is on its own.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import ray

from orchestrator.core import lease as leases
from orchestrator.node import cgroups, procs
from orchestrator.node import lease as node_lease
from orchestrator.node.jobfiles import job_dir, open_owned, read_exit
from orchestrator.node.telemetry import SIMULATED, NodeReport, provider_for, report

MAX_READ = 1024 * 1024
PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
# The lease keeper, in a Python that ignores PYTHON* variables (-I): gpuq's package first.
KEEPER = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from orchestrator.node.leasekeeper import main; sys.exit(main(sys.argv[2:]))"
)


AGENT_PREFIX = "gpuq-agent-"


def agent_name(node: str) -> str:
    return f"{AGENT_PREFIX}{node}"


@ray.remote(num_cpus=0, max_restarts=-1, max_concurrency=8)  # type: ignore[call-overload]  # Ray types it short
class NodeAgent:
    def __init__(self, node: str, data_root: str, cluster_id: str, gpus: int = 0, telemetry: str = "auto"):
        self.node, self.data_root, self.cluster_id = node, data_root, cluster_id
        self.provider = None
        self.gpus, self.telemetry = gpus, telemetry
        self._lock = threading.Lock()
        self.containment = cgroups.find()
        self.lease_s: float | None = None  # set by the orchestrator (configure); None: no backstop yet
        self.renewed = node_lease.now()  # an agent starts on a node Ray has just placed it on
        self.fenced_at: float | None = None
        self._keeper: subprocess.Popen | None = None  # the lease keeper (leasekeeper.py)
        self._keeper_path: Path | None = None
        threading.Thread(target=self._hold_lease, daemon=True, name="gpuq-lease").start()

    def configure(
        self,
        data_root: str,
        cluster_id: str,
        gpus: int = 0,
        telemetry: str = "auto",
        lease_s: float | None = None,
    ) -> None:
        """A (re)started orchestrator states where data lives, which cluster it is, how
        many GPUs Ray declares here, where telemetry should come from and the lease."""
        self.lease_s = lease_s if lease_s is not None else self.lease_s
        with self._lock:
            if (gpus, telemetry, cluster_id) != (self.gpus, self.telemetry, self.cluster_id):
                self.provider = None  # chosen again on the next report
            self.data_root, self.cluster_id, self.gpus, self.telemetry = (
                data_root,
                cluster_id,
                gpus,
                telemetry,
            )

    def _provider(self):
        # The agent answers up to 8 calls at once on threads: without the lock, a first
        # report and a first fault injection could each make a provider, and the fault
        # would land in the one that is then thrown away.
        with self._lock:
            if self.provider is None:
                self.provider = provider_for(self.node, self.gpus, self.cluster_id, self.telemetry)
            return self.provider

    def report(self) -> NodeReport | None:
        """This node's GPUs now; None while a simulated node is told to be silent."""
        provider = self._provider()
        if provider.source == SIMULATED and provider.faults.silent:
            return None
        return dataclasses.replace(report(provider, self.node), containment=self.containment.describe())

    def inject(self, fault: str, gpu: int | None = None, value: float | None = None) -> str:
        """Inject a fault into the simulation (telemetry.SimulatedProvider.inject). Refused
        on a node whose telemetry is real: a test must never fake a real GPU's health."""
        provider = self._provider()
        if provider.source != SIMULATED:
            raise ValueError(
                f"{self.node} reports real NVML telemetry; faults can only be injected into a simulated node"
            )
        return provider.inject(fault, gpu, value)

    def ping(self) -> str:
        return self.node

    # --- the lease: this node's own, held without the head ---------------------------

    def _hold_lease(self) -> None:
        """Keep the lease keeper running (leasekeeper.py), watch its renewals, and kill
        what is left of the node's jobs FENCE_KILL_S after the lease ran out."""
        log = logging.getLogger("gpuq.agent")
        failing = False
        while True:
            try:
                path = node_lease.lease_path(self.data_root, self.node)
                self._keep(path)
                now = node_lease.now()
                self.renewed = max(self.renewed, node_lease.read(path) or 0.0)
                late = now - self.renewed
                if late > 3 * leases.RENEW_EVERY_S and not failing:
                    failing = True
                    log.warning("%s has not renewed its lease for %.0f s", self.node, late)
                elif late <= 3 * leases.RENEW_EVERY_S and failing:
                    failing, self.fenced_at = False, None
                    log.warning("%s renews its lease again", self.node)
                if self.lease_s is not None and late > self.lease_s + leases.FENCE_KILL_S:
                    self._fence_leftovers()
            except Exception:
                log.exception("the lease watch failed once")
            time.sleep(leases.RENEW_EVERY_S / 2)

    def _keep(self, path) -> None:
        """The lease keeper runs, for this lease file (started again if it died, or
        if the orchestrator moved the data dir)."""
        if self._keeper is not None and self._keeper.poll() is None and self._keeper_path == path:
            return
        if self._keeper is not None and self._keeper.poll() is None:
            self._keeper.kill()
            self._keeper.wait()
        from ray._private import worker

        mine = worker.global_worker.gcs_client  # type: ignore[attr-defined]  # set once connected
        node_id = ray.get_runtime_context().get_node_id()
        self._keeper = subprocess.Popen(
            [
                sys.executable,
                "-I",
                "-c",
                KEEPER,
                PACKAGE_ROOT,
                mine.address,
                mine.cluster_id.hex(),
                node_id,
                str(path),
                leases.key(self.node),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            cwd="/",
        )
        self._keeper_path = path

    def _fence_leftovers(self) -> None:
        """The lease ran out FENCE_KILL_S ago: every job of this node has stopped, unless
        its supervisor is gone. Kill what is left of them."""
        if self.fenced_at is None:
            self.fenced_at = node_lease.now()
            logging.getLogger("gpuq.agent").warning(
                "%s lost the head: killing what is left of its jobs", self.node
            )
        cgroups.leftover(self.containment, cgroups.scope(self.cluster_id, self.node), set())
        reap(self.cluster_id, set())

    def read_log(
        self,
        job_id: str,
        attempt: int,
        rank: int,
        offset: int = 0,
        limit: int = MAX_READ,
        tail: int | None = None,
        raw: bool = False,
    ) -> dict:
        """Bytes [offset, offset+limit) of a bundle's output, or its last `tail` bytes; as
        bytes with `raw` (the orchestrator's reads), else as text (an older caller's)."""
        # The job's user owns its folder: never follow a link there (jobfiles.py).
        fd = open_owned(job_dir(self.data_root, self.node, job_id, attempt, rank), "output.log")
        if fd is None:
            return {"data": b"" if raw else "", "offset": offset, "size": 0, "exists": False}
        with os.fdopen(fd, "rb") as f:
            size = os.fstat(fd).st_size
            if tail is not None:
                offset = max(0, size - tail)
            limit = max(0, min(limit, MAX_READ))
            f.seek(offset)
            data = f.read(limit)
        return {
            "data": data if raw else data.decode("utf-8", "replace"),
            "offset": offset + len(data),
            "size": size,
            "exists": True,
        }

    def read_exit(self, job_id: str, attempt: int, rank: int) -> dict | None:
        return read_exit(job_dir(self.data_root, self.node, job_id, attempt, rank))

    def reap(self, live_job_ids: list[str]) -> list[int]:
        """Kill the cgroups, and process groups tagged with this cluster, of jobs that are
        not running; the pids killed by tag."""
        cgroups.leftover(self.containment, cgroups.scope(self.cluster_id, self.node), set(live_job_ids))
        return reap(self.cluster_id, set(live_job_ids))


def tagged_processes(cluster_id: str) -> dict[int, str]:
    """pid -> job id, for every process carrying this cluster's job tag."""
    return {pid: env["GPUQ_JOB_ID"] for pid, env in procs.tagged(cluster_id).items()}


def reap(cluster_id: str, live: set[str]) -> list[int]:
    killed = []
    for pid, job_id in tagged_processes(cluster_id).items():
        if job_id in live:
            continue
        try:
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                continue
        killed.append(pid)
    return killed
