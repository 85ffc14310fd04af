"""The short chaos run (issue #14): scripts/chaos.py's run() on the test session's
cluster, one fault of each kind, a small mixed workload. Nothing lost, nothing run
twice, nothing left behind. Destructive for the session's cluster only in ways it
repairs itself: the killed node is started again, Ray restarts the orchestrator,
Serve the API replica."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import pytest

from orchestrator.deploy.localcluster import add_simulated_node
from tests.orchestration import Harness

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "chaos.py"


def chaos_module():
    spec = importlib.util.spec_from_file_location("chaos", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def store_disk(tmp_path):
    """A small tmpfs for the store, so the run can fill its disk (needs root, as CI)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(disk)], capture_output=True
    ).returncode:
        yield None  # not root: the run leaves out disk faults and says so in its figures
        return
    yield disk
    subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_a_short_chaos_run_loses_nothing_and_runs_nothing_twice(ray_cluster, api, store_disk, tmp_path):
    store = (store_disk or tmp_path) / "gpuq.db"
    orch = Harness(
        tmp_path,
        store_path=str(store),
        slot_idle_s=0,
        reap_interval_s=2.0,
        # A short lease, so a killed raylet's jobs move in ~16 s; not shorter, so that a
        # killed node agent (and its lease keeper) is back before the lease runs out.
        node_lease_s=10.0,
        node_fence_margin_s=1.0,
        priority_grants={"alice": "CRITICAL"},
    )  # the CRITICAL jobs that preempt LOW ones
    try:
        out = chaos_module().run(
            ray_cluster,
            api,
            "alice-token",
            "admin-token",
            add_simulated_node,
            store_disk,
            orch.cluster_id,
            jobs=12,
            faults=1,
            seed=7,
            timeout_s=300,
        )
    finally:
        orch.teardown()
    print(out)
    assert (
        out["refused"] == [] and out["jobs"]["acknowledged"] == out["jobs"]["planned"]
    )  # retried through faults
    assert out["lost"] == [] and out["double_run"] == [] and out["twice_terminal"] == []
    assert out["leftovers"] == {}
    assert set(out["faults"]) == {"node", "orch", "serve", "agent"} | ({"disk"} if store_disk else set())
