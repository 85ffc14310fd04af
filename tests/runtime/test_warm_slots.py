"""Warm slots: while nothing waits, one-GPU slots are kept ready so small jobs start at
once; a job that needs their GPUs evicts them."""

import pytest
import ray

from tests.orchestration import Harness
from tests.raycluster import wait_for


def slot_actors() -> set[str]:
    return {
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["name"].startswith("gpuq-slot-")
    }


@pytest.fixture
def warm(ray_cluster, tmp_path):
    harness = Harness(tmp_path, warm_slots_per_node=2)
    yield harness
    harness.teardown()


def test_small_jobs_take_the_warm_slots_and_big_ones_evict_them(warm):
    wait_for(lambda: warm.call("status")["details"]["slots"]["parked"] == 4, 60, what="four warm slots")
    ready = slot_actors()
    assert len(ready) == 4
    small = warm.submit("echo small", gpus=1, run_id="small")
    warm.wait_state(small, "completed")
    assert set(warm.job(small)["slots"]["1"]) <= ready
    # 8 GPUs on one node: the node's warm slots must make room.
    big = warm.submit("echo big", gpus=8, run_id="big")
    warm.wait_state(big, "completed", timeout=60)
    assert not set(warm.job(big)["slots"]["1"]) & ready
