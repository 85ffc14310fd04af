"""`gpuq run`, as `srun` is used: output on the terminal, the job's exit code as its
own, Ctrl-C cancels the job."""

import os
import signal
import subprocess
import sys

import pytest

from tests.noleaks import assert_clean
from tests.raycluster import wait_for

pytestmark = pytest.mark.ray


@pytest.fixture
def env(api, orch):
    return {**os.environ, "GPUQ_URL": api, "GPUQ_TOKEN": "alice-token"}


def test_run_prints_the_output_and_exits_with_the_jobs_exit_code(env, orch):
    r = subprocess.run([sys.executable, "-m", "orchestrator.cli", "run", "--retries", "0", "--",
                        "python3", "-c", "print(1); exit(3)"], capture_output=True, text=True, env=env, timeout=120)
    assert_clean(r.stdout + r.stderr, "gpuq run")
    assert r.stdout == "1\n" and r.returncode == 3, (r.stdout, r.stderr)
    ok = subprocess.run([sys.executable, "-m", "orchestrator.cli", "run", "--gpus", "2", "--", "bash", "-c",
                         "echo $CUDA_VISIBLE_DEVICES"], capture_output=True, text=True, env=env, timeout=120)
    assert ok.returncode == 0 and len(ok.stdout.strip().split(",")) == 2, (ok.stdout, ok.stderr)


def test_sigint_cancels_the_job_and_says_so(env, orch):
    p = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "run", "--", "bash", "-c",
                          "echo started; sleep 300"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert p.stdout.readline() == "started\n"
    job_id = orch.call("list_jobs", "running", "alice", 1, 0)["jobs"][0]["id"]
    p.send_signal(signal.SIGINT)
    out, errors = p.communicate(timeout=60)
    assert p.returncode == 130 and f"cancelling job {job_id}" in errors, errors
    wait_for(lambda: orch.job(job_id)["state"] == "cancelled", 30, what="the job to be cancelled")
