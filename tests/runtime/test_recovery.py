"""Nothing lost when the orchestrator dies: running jobs keep running, queued jobs stay
queued, jobs that ended meanwhile get their exit codes, no GPU is booked twice."""

import os
import signal

import pytest
import ray

from orchestrator.node.agent import tagged_processes
from tests.raycluster import wait_for


def pids_of(orch, job_id):
    return sorted(pid for pid, j in tagged_processes(orch.cluster_id).items() if j == job_id)


def no_gpu_twice(orch):
    owners = {}
    for node in orch.call("resources")["nodes"]:
        for gpu in node["gpus"]:
            if gpu["job_id"]:
                owners.setdefault(gpu["job_id"], []).append(gpu["name"])
    names = [n for gpus in owners.values() for n in gpus]
    assert len(names) == len(set(names))
    return owners


@pytest.mark.parametrize("how", ["ray.kill", "SIGKILL"])
def test_orchestrator_restart_loses_nothing(orch, how):
    long = orch.submit("echo started; sleep 300", gpus=4, run_id="long")
    ending = orch.submit("sleep 3; exit 3", gpus=1, max_retries=0, run_id="ending")
    waiting = orch.submit("echo all", gpus=16, run_id="waiting")
    orch.wait_state(long, "running")
    orch.wait_state(ending, "running")
    wait_for(lambda: orch.log(long) == "started\n", 30, what="the long job's command to run")
    before = pids_of(orch, long)
    assert before  # its command (its supervisor, forked by the slot's launcher, carries no tag)
    placement = orch.job(long)["allocation"]

    old_pid = orch.call("pid")
    if how == "ray.kill":
        ray.kill(orch.actor, no_restart=False)
    else:
        os.kill(old_pid, signal.SIGKILL)
    # ray.kill returns before the actor is gone: wait for a new process to answer.
    wait_for(lambda: orch.pid_or_none() not in (None, old_pid), 60, what="a restarted orchestrator")

    assert orch.job(waiting)["state"] == "queued"
    job = orch.wait_state(ending, "failed", timeout=60)
    assert job["exit_code"] == 3 and job["attempts"] == 1
    job = orch.job(long)
    assert job["state"] == "running" and job["attempts"] == 1 and job["allocation"] == placement
    assert pids_of(orch, long) == before  # the same processes: not restarted, not killed
    owners = no_gpu_twice(orch)
    assert sum(len(g) for g in owners.values()) == 4

    orch.call("cancel", long)
    orch.wait_state(waiting, "completed", timeout=90)
    assert orch.log(waiting) == "all\n"


def test_placement_that_never_happens_goes_back_in_line(ray_cluster, tmp_path):
    from ray.util.placement_group import placement_group, remove_placement_group

    from tests.orchestration import Harness

    small = Harness(tmp_path, placement_timeout_s=2)  # its own: no slot of an earlier test holds a GPU
    # Something outside gpuq holds all of gmi-node-1's GPUs: gpuq's inventory does not know.
    blocker = placement_group([{"GPU": 8, "gmi-node-1": 0.001}], name="outsider")
    ray.get(blocker.ready(), timeout=30)
    try:
        job_id = small.submit("echo placed", gpus=8)
        wait_for(
            lambda: any("placement timed out" in e["reason"] for e in small.job(job_id)["events"]),
            60,
            what="a placement time-out",
        )
    finally:
        remove_placement_group(blocker)
    try:
        small.wait_state(job_id, "completed", timeout=60)
    finally:
        small.teardown()


def test_a_dependency_survives_an_orchestrator_kill(orch):
    first = orch.submit("sleep 4; echo first", gpus=1, run_id="first")
    second = orch.submit("echo second", gpus=1, run_id="second", dependency=f"afterok:{first}")
    orch.wait_state(first, "running")
    old_pid = orch.call("pid")
    os.kill(old_pid, signal.SIGKILL)
    wait_for(lambda: orch.pid_or_none() not in (None, old_pid), 60, what="a restarted orchestrator")
    assert orch.job(second)["state"] == "queued"  # still waiting for the first, after the restart
    done = orch.wait_state(second, "completed", "failed", "cancelled", timeout=90)
    assert done["state"] == "completed" and done["started_at"] >= orch.job(first)["ended_at"]
    assert orch.log(second) == "second\n"
