"""The orchestrator on a real Ray cluster with two simulated 8-GPU nodes."""

import itertools

import pytest

from orchestrator.node.agent import tagged_processes

SHOW_GPUS = 'echo "gpus=$CUDA_VISIBLE_DEVICES rank=$GPUQ_NODE_RANK nnodes=$GPUQ_NNODES node=$GPUQ_NODE"'


def visible(log: str) -> list[int]:
    line = next(x for x in log.splitlines() if x.startswith("gpus="))
    return [int(g) for g in line.split()[0][len("gpus=") :].split(",")]


def test_a_4_gpu_job_sees_exactly_its_4_gpus(orch):
    job_id = orch.submit(SHOW_GPUS, gpus=4)
    job = orch.wait_state(job_id, "completed")
    gpus = visible(orch.log(job_id))
    assert len(set(gpus)) == 4
    ((node, ids),) = job["allocation"].items()
    assert sorted(gpus) == ids
    assert job["exit_code"] == 0 and job["attempts"] == 1


def test_concurrent_jobs_on_one_node_never_share_a_gpu(orch):
    ids = [orch.submit(SHOW_GPUS + "; sleep 2", gpus=g, run_id=f"j{g}") for g in (4, 2, 1)]
    jobs = [orch.wait_state(j, "completed") for j in ids]
    seen: dict[tuple[str, int], str] = {}
    for job_id, job in zip(ids, jobs, strict=True):
        ((node, gpus),) = job["allocation"].items()
        assert sorted(visible(orch.log(job_id))) == gpus
        for g in gpus:
            assert (node, g) not in seen, f"{node}:{g} given to two jobs"
            seen[(node, g)] = job_id


def test_a_12_gpu_job_gets_8_plus_4_across_the_nodes_with_rank_env(orch):
    job_id = orch.submit(
        SHOW_GPUS + '; echo "master=$MASTER_ADDR:$MASTER_PORT world=$GPUQ_WORLD_SIZE"', gpus=12
    )
    job = orch.wait_state(job_id, "completed")
    assert sorted(len(g) for g in job["allocation"].values()) == [4, 8]
    logs = [orch.log(job_id, rank=r) for r in (0, 1)]
    assert [len(visible(x)) for x in logs] == [len(g) for g in job["allocation"].values()]
    assert "rank=0 nnodes=2" in logs[0] and "rank=1 nnodes=2" in logs[1]
    masters = {line for x in logs for line in x.splitlines() if line.startswith("master=")}
    assert len(masters) == 1 and "world=12" in masters.pop()


def test_a_gang_whose_one_rank_crashes_fails_with_that_ranks_exit_once(orch):
    """The other rank is stopped by gpuq: that TERM is not a fault of the system's, so
    the job is not requeued forever; it fails with the crashed rank's code."""
    job_id = orch.submit('if [ "$GPUQ_NODE_RANK" = 1 ]; then exit 3; fi; sleep 300', gpus=12, max_retries=0)
    job = orch.wait_state(job_id, "failed", "completed")
    assert (job["state"], job["attempts"], job["exit_code"]) == ("failed", 1, 3)


def test_a_failing_command_is_retried_exactly_max_retries_times(orch):
    job_id = orch.submit("echo attempt $GPUQ_ATTEMPT; exit 7", max_retries=2)
    job = orch.wait_state(job_id, "failed")
    assert job["attempts"] == 3 and job["retries"] == 2 and job["exit_code"] == 7
    assert [orch.log(job_id, attempt=a).strip() for a in (1, 2, 3)] == ["attempt 1", "attempt 2", "attempt 3"]
    events = orch.job(job_id)["events"]
    assert [e["reason"] for e in events if e["trigger"] == "retry"] == [
        "auto-retry 1 of 2",
        "auto-retry 2 of 2",
    ]


def test_exit_codes_outside_the_users_retry_list_are_not_retried(orch):
    job_id = orch.submit("exit 1", max_retries=3, retry_on_exit_codes=[75])
    job = orch.wait_state(job_id, "failed")
    assert job["attempts"] == 1 and job["exit_code"] == 1


def test_time_limit_stops_the_whole_process_tree(orch):
    job_id = orch.submit("sleep 300 & sleep 300; wait", time_limit=2)
    job = orch.wait_state(job_id, "failed", timeout=60)
    assert job["failure_reason"] == "time limit" and job["attempts"] == 1
    assert job_id not in tagged_processes(orch.cluster_id).values()


def test_cancel_stops_a_running_job_and_leaves_no_process(orch):
    job_id = orch.submit("sleep 300 & sleep 300; wait", gpus=2)
    orch.wait_state(job_id, "running")
    assert job_id in wait_tagged(orch, job_id)
    orch.call("cancel", job_id)
    from tests.raycluster import wait_for

    wait_for(
        lambda: job_id not in tagged_processes(orch.cluster_id).values(),
        20,
        what="the job's processes to end",
    )
    wait_for(
        lambda: orch.call("resources")["nodes"][0]["free"] + orch.call("resources")["nodes"][1]["free"] == 16,
        20,
        what="its GPUs to come back",
    )
    assert orch.job(job_id)["state"] == "cancelled"


def test_preemption_stops_the_victim_which_requeues_and_runs_again(orch):
    victim = orch.submit("echo run $GPUQ_ATTEMPT; sleep 300", gpus=16, priority="LOW", run_id="victim")
    orch.wait_state(victim, "running")
    urgent = orch.submit("echo urgent", gpus=8, priority="CRITICAL", run_id="urgent")
    orch.wait_state(urgent, "completed", timeout=60)
    job = orch.wait_state(victim, "running", timeout=60)
    assert job["attempts"] == 2 and job["retries"] == 0
    assert [e["trigger"] for e in orch.job(victim)["events"]].count("preempt") == 1
    assert not attempt_processes(victim, "1")  # nothing of the preempted run is left
    orch.call("cancel", victim)


def test_logs_of_a_finished_job_stay_readable_after_its_runner_is_gone(orch):
    import ray

    from orchestrator.head.names import NAMESPACE

    job_id = orch.submit("for i in 1 2 3; do echo line $i; done")
    orch.wait_state(job_id, "completed")
    (slot,) = orch.job(job_id)["slots"]["1"]
    ray.kill(ray.get_actor(slot, namespace=NAMESPACE), no_restart=True)
    from tests.raycluster import wait_for

    wait_for(lambda: not _actor_exists(slot), 20, what="the runner to be gone")
    assert orch.log(job_id) == "line 1\nline 2\nline 3\n"
    tail = orch.call("logs", job_id, None, 0, 0, 100, 7)
    assert tail["data"] == "line 3\n"


def test_a_slot_is_reused_by_the_next_job_of_its_shape(orch):
    first = orch.submit("echo one", gpus=2, run_id="first")
    orch.wait_state(first, "completed")
    second = orch.submit("echo two", gpus=2, run_id="second")
    orch.wait_state(second, "completed")
    assert orch.job(first)["slots"]["1"] == orch.job(second)["slots"]["1"]
    assert orch.log(second) == "two\n"


def _actor_exists(name):
    import ray

    from orchestrator.head.names import NAMESPACE

    try:
        ray.get_actor(name, namespace=NAMESPACE)
        return True
    except ValueError:
        return False


def wait_tagged(orch, job_id):
    from tests.raycluster import wait_for

    return wait_for(
        lambda: [j for j in tagged_processes(orch.cluster_id).values() if j == job_id],
        20,
        what="the job's processes to appear",
    )


def test_a_job_ends_with_its_command_and_what_it_left_goes_with_it(orch):
    # setsid -f puts the sleep in a session of its own, holding the job's output pipe:
    # out of reach of a process-group kill. The job still ends when its command does, and
    # by the time it is COMPLETED (its GPUs back) nothing of it runs: no wait here.
    job_id = orch.submit("setsid -f sleep 600; echo started", time_limit=3600)
    job = orch.wait_state(job_id, "completed", timeout=60)
    assert job["exit_code"] == 0
    assert job_id not in tagged_processes(orch.cluster_id).values()


def test_sixteen_one_gpu_jobs_at_once_each_get_a_gpu_of_their_own(orch):
    # Ray binds GPU indices as placement groups commit, not in plan order: what each job
    # reports must follow what Ray bound, and no two jobs may hold one at the same time.
    # A GPU may serve two of them one after the other (a job left by an earlier test, or a
    # slow machine, can keep all sixteen from starting together), never both at once.
    ids = [orch.submit(SHOW_GPUS + "; sleep 3", run_id=f"burst{i}") for i in range(16)]
    jobs = [orch.wait_state(j, "completed", timeout=120) for j in ids]
    held: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for job_id, job in zip(ids, jobs, strict=True):
        ((node, gpus),) = job["allocation"].items()
        assert visible(orch.log(job_id)) == gpus
        held.setdefault((node, gpus[0]), []).append((job["started_at"], job["ended_at"]))
    for gpu, spans in held.items():
        spans.sort()
        for (_, ended), (started, _) in itertools.pairwise(spans):
            assert ended <= started, f"{gpu} held by two jobs at once: {spans}"
    assert sum(map(len, held.values())) == 16


def attempt_processes(job_id: str, attempt: str) -> list[int]:
    """Processes tagged with this job and attempt."""
    import os

    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
        except OSError:
            continue
        if f"GPUQ_JOB_ID={job_id}".encode() in env and f"GPUQ_ATTEMPT={attempt}".encode() in env:
            found.append(int(pid))
    return found


def test_a_job_past_its_memory_limit_fails_out_of_memory_once(orch):
    from orchestrator.node import cgroups

    if "memory" not in cgroups.find().limits:
        pytest.skip("no memory controller on this machine")
    job_id = orch.submit("python3 -c 'b = bytearray(400 * 2**20)'", memory="64M", max_retries=3)
    job = orch.wait_state(job_id, "failed", timeout=60)
    assert job["attempts"] == 1  # a retry would only repeat it
    assert job["failure_reason"].startswith(
        "out of memory: the job used more memory than its limit of 64 MiB"
    )
    assert job["spec"]["memory"] == 64 * 2**20


def test_status_says_how_each_node_contains_jobs(orch):
    from orchestrator.node import cgroups
    from tests.raycluster import wait_for

    said = cgroups.find().describe()  # the simulated nodes are this machine
    contained = wait_for(
        lambda: (c := orch.call("status")["details"]["containment"]) and len(c) == 2 and c,
        60,
        what="both nodes' reports",
    )
    assert set(contained.values()) == {said}
