"""Driving a real orchestrator actor on the session's Ray cluster."""

from __future__ import annotations

import tempfile

import ray
from ray.util.placement_group import PlacementGroup, remove_placement_group

from orchestrator.runtime.actor import get_orchestrator, start_orchestrator
from orchestrator.runtime.agent import reap
from orchestrator.runtime.names import NAMESPACE, ORCHESTRATOR_NAME
from tests.accounts import UNIX_USERS
from tests.raycluster import wait_for

# No warm slots: each test starts a fresh orchestrator, and 16 idle Ray workers per test
# would cost more CPU than the tests themselves (test_warm_slots covers them).
# The session's own scratch root (jobs' private folders, users' virtualenvs): a run starts
# with nothing of an earlier one's, even where the accounts get the same uids again.
SCRATCH = tempfile.mkdtemp(prefix="gpuq-scratch-")
FAST = dict(loop_interval_s=0.5, placement_timeout_s=20, stop_grace_s=1.0, reap_interval_s=1.0, warm_slots_per_node=0,
            unix_users=UNIX_USERS, scratch_dir=SCRATCH)


class Harness:
    def __init__(self, tmp_path, **config):
        self.tmp = tmp_path
        self.config = {"store_path": str(tmp_path / "gpuq.db"), "data_dir": str(tmp_path / "data"), **FAST, **config}
        self.actor = start_orchestrator(self.config)
        assert ray.get(self.actor.ping.remote(), timeout=60) == "ok"
        self.cluster_id = ray.get(self.actor.status.remote())["details"]["cluster_id"]

    def call(self, method: str, *args, timeout: float = 30, **kwargs):
        return ray.get(getattr(get_orchestrator(), method).remote(*args, **kwargs), timeout=timeout)

    def submit(self, command: str, gpus: int = 1, **fields):
        spec = {"run_id": fields.pop("run_id", "t"), "user": fields.pop("user", "alice"), "command": command,
                "gpu_count": gpus, **fields}
        return self.call("submit", spec)["job_id"]

    def job(self, job_id: str) -> dict:
        return self.call("get_job", job_id)

    def wait_state(self, job_id: str, *states: str, timeout: float = 60) -> dict:
        return wait_for(lambda: (j := self.job(job_id))["state"] in states and j, timeout,
                        what=f"job {job_id} to reach {' or '.join(states)}")

    def pid_or_none(self) -> int | None:
        """The orchestrator's pid, or None while it is down or restarting."""
        try:
            return self.call("pid", timeout=5)
        except Exception:
            return None

    def log(self, job_id: str, attempt: int | None = None, rank: int = 0) -> str:
        return self.call("logs", job_id, attempt, rank, 0, 1 << 20)["data"]

    def teardown(self) -> None:
        # Kill until none is left: ray.kill returns before an actor dies, and an
        # orchestrator still alive for that moment may start an agent again.
        wait_for(self._kill_named_actors, 60, 0.5, what="gpuq's actors to be gone")
        for pg_id, info in ray.util.placement_group_table().items():
            if info["state"] != "REMOVED":
                remove_placement_group(PlacementGroup(ray.PlacementGroupID(bytes.fromhex(pg_id))))
        wait_for(lambda: not reap(self.cluster_id, set()), 10, what="tagged job processes to be gone")
        wait_for(lambda: ray.available_resources().get("GPU", 0) == 16, 30, what="all 16 GPUs to be free again")

    @staticmethod
    def _kill_named_actors() -> bool:
        named = [a for a in ray.util.list_named_actors(all_namespaces=True) if a["namespace"] == NAMESPACE]
        orchestrators = [a for a in named if a["name"] == ORCHESTRATOR_NAME]
        for info in orchestrators or named:  # the orchestrator first: it is what starts the others
            try:
                ray.kill(ray.get_actor(info["name"], namespace=NAMESPACE), no_restart=True)
            except ValueError:
                pass
        return not named
