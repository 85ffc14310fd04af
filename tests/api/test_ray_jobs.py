"""Unmodified `ray job` CLI against gpuq's Ray Jobs API."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

RAY = str(Path(sys.executable).with_name("ray"))
ALICE = json.dumps({"Authorization": "Bearer alice-token"})


@pytest.fixture
def ray_job(api, orch):
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}

    def run(*args, timeout=180):
        return subprocess.run([RAY, "job", *args], capture_output=True, text=True, env=env, timeout=timeout)

    return run, api


def test_ray_job_submit_queues_a_gpuq_job_streams_its_output_and_succeeds(ray_job, orch):
    run, api = ray_job
    # Not a Ray program (metadata "ray": "false"): a plain command, no cluster of its own.
    r = run(
        "submit",
        "--address",
        api,
        "--headers",
        ALICE,
        "--entrypoint-num-gpus",
        "2",
        "--metadata-json",
        '{"ray": "false"}',
        "--",
        "python3",
        "-c",
        "import os; print('gpus', os.environ['CUDA_VISIBLE_DEVICES'])",
    )
    assert r.returncode == 0, r.stdout + r.stderr
    line = next(x for x in r.stdout.splitlines() if x.startswith("gpus "))
    assert len(line.split()[1].split(",")) == 2
    jobs = orch.call("list_jobs", None, "alice", 10, 0)["jobs"]
    assert jobs[0]["state"] == "completed" and jobs[0]["gpu_count"] == 2
    assert orch.job(jobs[0]["id"])["spec"]["ray"] is False and "ray_cluster" not in jobs[0]


def test_ray_job_submit_exits_1_for_a_failed_job(ray_job):
    """A Ray program (the default) whose driver fails: its code, not its cluster's, decides."""
    run, api = ray_job
    r = run(
        "submit",
        "--address",
        api,
        "--headers",
        ALICE,
        "--metadata-json",
        '{"max_retries": "0"}',
        "--",
        "bash",
        "-c",
        "echo failing; exit 3",
    )
    assert r.returncode == 1
    assert "failing" in r.stdout


def test_ray_job_status_logs_stop_and_list(ray_job, orch):
    run, api = ray_job
    r = run(
        "submit",
        "--no-wait",
        "--address",
        api,
        "--headers",
        ALICE,
        "--entrypoint-num-gpus",
        "16",
        "--metadata-json",
        '{"ray": "false"}',
        "--",
        "bash",
        "-c",
        "echo started; sleep 120",
    )
    assert r.returncode == 0, r.stderr
    job_id = orch.call("list_jobs", None, "alice", 1, 0)["jobs"][0]["id"]
    from tests.raycluster import wait_for

    wait_for(
        lambda: "started" in run("logs", "--address", api, "--headers", ALICE, job_id).stdout,
        60,
        what="the job's output through ray job logs",
    )
    assert "RUNNING" in run("status", "--address", api, "--headers", ALICE, job_id).stdout
    assert run("stop", "--address", api, "--headers", ALICE, job_id).returncode == 0
    wait_for(lambda: orch.job(job_id)["state"] == "cancelled", 30, what="the job to stop")
    assert job_id in run("list", "--address", api, "--headers", ALICE).stdout


def test_ray_job_submit_without_a_token_is_refused(ray_job, orch):
    run, api = ray_job
    before = orch.call("list_jobs", None, None, 10, 0)["total"]
    r = run("submit", "--address", api, "--", "echo", "hi")
    # Ray's CLI reads our 401 as "token authentication is enabled".
    assert r.returncode != 0 and "authentication" in r.stderr
    assert orch.call("list_jobs", None, None, 10, 0)["total"] == before


def test_the_gpuq_ray_submit_wrapper_fills_in_address_and_token(api, orch):
    script = Path(__file__).resolve().parents[2] / "scripts" / "gpuq-ray-submit"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {
        "GPUQ_URL": api,
        "GPUQ_TOKEN": "alice-token",
    }
    r = subprocess.run(
        [str(script), "--", "echo", "wrapped"], capture_output=True, text=True, env=env, timeout=180
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "wrapped" in r.stdout
