"""Driving a real orchestrator actor on the session's Ray cluster."""

from __future__ import annotations

import tempfile

import ray
from ray.util.placement_group import PlacementGroup, remove_placement_group

from orchestrator.head.actor import get_orchestrator, start_orchestrator
from orchestrator.head.names import NAMESPACE, ORCHESTRATOR_NAME
from orchestrator.node.agent import reap
from tests.accounts import UNIX_USERS
from tests.raycluster import wait_for

# No warm slots: each test starts a fresh orchestrator, and 16 idle Ray workers per test
# would cost more CPU than the tests themselves (test_warm_slots covers them).
# The session's own scratch root (jobs' private folders, users' virtualenvs): a run starts
# with nothing of an earlier one's, even where the accounts get the same uids again.
SCRATCH = tempfile.mkdtemp(prefix="gq-")  # short: Ray jobs' socket paths are under it (raycluster.MAX_TEMP)
FAST = dict(
    loop_interval_s=0.5,
    placement_timeout_s=20,
    stop_grace_s=1.0,
    reap_interval_s=1.0,
    warm_slots_per_node=0,
    unix_users=UNIX_USERS,
    scratch_dir=SCRATCH,
)


class Harness:
    """One orchestrator on the session's cluster. There is only ever one (its actor name is
    the cluster's), so a new Harness first ends whichever one is running."""

    current: Harness | None = None

    def __init__(self, tmp_path, **config):
        if Harness.current is not None:
            Harness.current.teardown()
        self.tmp = tmp_path
        self.closed = False
        self.config = {
            "store_path": str(tmp_path / "gpuq.db"),
            "data_dir": str(tmp_path / "data"),
            **FAST,
            **config,
        }
        Harness.current = self
        self.actor = start_orchestrator(self.config)
        assert ray.get(self.actor.ping.remote(), timeout=60) == "ok"
        self.cluster_id = ray.get(self.actor.status.remote())["details"]["cluster_id"]

    def call(self, method: str, *args, timeout: float = 30, **kwargs):
        return ray.get(getattr(get_orchestrator(), method).remote(*args, **kwargs), timeout=timeout)

    def submit(self, command: str, gpus: int = 1, **fields):
        spec = {
            "run_id": fields.pop("run_id", "t"),
            "user": fields.pop("user", "alice"),
            "command": command,
            "gpu_count": gpus,
            **fields,
        }
        return self.call("submit", spec)["job_id"]

    def job(self, job_id: str) -> dict:
        return self.call("get_job", job_id)

    def wait_state(self, job_id: str, *states: str, timeout: float = 60) -> dict:
        return wait_for(
            lambda: (j := self.job(job_id))["state"] in states and j,
            timeout,
            what=f"job {job_id} to reach {' or '.join(states)}",
        )

    def pid_or_none(self) -> int | None:
        """The orchestrator's pid, or None while it is down or restarting."""
        try:
            return self.call("pid", timeout=5)
        except Exception:
            return None

    def log(self, job_id: str, attempt: int | None = None, rank: int = 0) -> str:
        return self.call("logs", job_id, attempt, rank, 0, 1 << 20)["data"]

    def reset(self) -> None:
        """Between tests that share this orchestrator: nothing of the last one left waiting
        or running, starts on, every GPU back in service and free."""
        unfinished = [
            j
            for j in self.call("list_jobs", None, None, 100_000, 0)["jobs"]
            if j["state"] not in ("completed", "failed", "cancelled")
        ]
        for job in unfinished:
            try:
                self.call("cancel", job["id"], "reset between tests")
            except Exception:  # it ended meanwhile
                pass
        self.call("set_starts", True)
        status = self.call("status")
        if status["details"]["drained_gpus"]:
            for node in status["details"]["nodes"]:
                self.call("undrain", node, None, "tests")

        def settled():
            summary = self.call("status")["resource_summary"]
            return (
                summary["available_gpus"] == summary["total_gpus"] == 16
                and not self.call("list_jobs", "running", None, 1, 0)["jobs"]
            )

        wait_for(settled, 60, 0.1, what="the last test's jobs to be gone and every GPU free")

    def teardown(self) -> None:
        if self.closed:
            return
        self.closed = True
        if Harness.current is self:
            Harness.current = None
        # Kill until none is left: ray.kill returns before an actor dies, and an
        # orchestrator still alive for that moment may start an agent again.
        wait_for(self._kill_named_actors, 60, 0.5, what="gpuq's actors to be gone")
        for pg_id, info in ray.util.placement_group_table().items():
            if info["state"] != "REMOVED":
                remove_placement_group(PlacementGroup(ray.PlacementGroupID(bytes.fromhex(pg_id))))
        wait_for(lambda: not reap(self.cluster_id, set()), 10, what="tagged job processes to be gone")
        wait_for(
            lambda: ray.available_resources().get("GPU", 0) == 16, 30, what="all 16 GPUs to be free again"
        )

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


class Shared:
    """A module's orchestrator, made on first use and handed to each test reset: with
    nothing of an earlier test waiting, running or drained (see Harness.reset). A test
    that made an orchestrator of its own, or killed this one, ended it; the next test
    gets a new one. Starting and ending one per test cost the suite minutes."""

    def __init__(self, make):
        self.make = make
        self.harness: Harness | None = None

    def get(self) -> Harness:
        if self.harness is not None and not self.harness.closed:
            try:
                self.harness.reset()
                return self.harness
            except (ValueError, ray.exceptions.RayError):  # killed by a test before this one
                self.harness.teardown()
        self.harness = self.make()
        return self.harness

    def close(self) -> None:
        if self.harness is not None:
            self.harness.teardown()
