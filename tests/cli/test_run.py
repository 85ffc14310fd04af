"""`gpuq run`, as `srun` is used: output on the terminal, byte for byte once, the job's
exit code as its own, Ctrl-C cancels the job and exits 130, and a connection that drops
mid-run is resumed where it stopped."""

import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pytest

from orchestrator.core import joblog
from tests.noleaks import assert_clean
from tests.raycluster import wait_for
from tests.support import Proxy

RUN = [sys.executable, "-m", "orchestrator.cli", "run"]
FAILING = ["bash", "-c", "echo line-a; echo line-b >&2; exit 3"]


@pytest.fixture
def env(api, orch):
    return {**os.environ, "GPUQ_URL": api, "GPUQ_TOKEN": "alice-token"}


def run(env, *args, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([*RUN, *args], capture_output=True, env=env, timeout=timeout)


def test_run_prints_the_output_and_exits_with_the_jobs_exit_code(env, orch):
    r = run(env, "--retries", "0", "--", "python3", "-c", "print(1); exit(3)")
    assert_clean((r.stdout + r.stderr).decode(), "gpuq run")
    assert r.stdout == b"1\n" and r.returncode == 3, (r.stdout, r.stderr)
    ok = run(env, "--gpus", "2", "--", "bash", "-c", "echo $CUDA_VISIBLE_DEVICES")
    assert ok.returncode == 0 and len(ok.stdout.strip().split(b",")) == 2, (ok.stdout, ok.stderr)


def test_a_retried_job_prints_each_attempt_once_with_gpuqs_line_between(env, orch):
    r = run(env, "--retries", "1", "--", *FAILING)
    assert r.stdout == b"line-a\nline-b\n" + joblog.boundary(2) + b"line-a\nline-b\n" and r.returncode == 3


def test_sigint_cancels_the_job_and_says_so(env, orch):
    assert interrupted(env, orch) == 130


def interrupted(env, orch) -> int:
    p = subprocess.Popen(
        [*RUN, "--", "bash", "-c", "echo started; sleep 300"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert p.stdout.readline() == "started\n"
    p.send_signal(signal.SIGINT)  # at once after the first line: the moment that used to lose the stream
    out, errors = p.communicate(timeout=60)
    job_id = errors.split("cancelling job ")[1].split()[0] if "cancelling job " in errors else None
    assert job_id and "lost gpuq" not in errors, errors
    wait_for(lambda: orch.job(job_id)["state"] == "cancelled", 30, what="the job to be cancelled")
    return p.returncode


def test_a_connection_cut_mid_run_is_resumed_without_a_repeated_byte(env, api):
    where = urlsplit(api)
    proxy = Proxy((where.hostname, where.port))
    try:
        p = subprocess.Popen(
            [
                *RUN,
                "--retries",
                "0",
                "--",
                "bash",
                "-c",
                "for i in $(seq 1 40); do echo line $i; sleep 0.05; done",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**env, "GPUQ_URL": proxy.url},
        )
        seen = p.stdout.readline() + p.stdout.readline()
        proxy.cut()  # the stream dies mid-run; later connections go through
        rest = p.stdout.read()  # not communicate(): it would skip what readline() has buffered
        errors = p.stderr.read()
        p.wait(120)
    finally:
        proxy.close()
    assert p.returncode == 0, errors
    assert seen + rest == b"".join(b"line %d\n" % i for i in range(1, 41))


@pytest.mark.slow
def test_twenty_times_ctrl_c_gives_130_and_a_failing_job_its_code_and_output(env, orch):
    with ThreadPoolExecutor(4) as pool:
        codes = list(pool.map(lambda _: interrupted(env, orch), range(20)))
        failing = list(pool.map(lambda _: run(env, "--retries", "0", "--", *FAILING), range(20)))
    assert codes == [130] * 20
    wrong = [r.stderr for r in failing if (r.returncode, r.stdout) != (3, b"line-a\nline-b\n")]
    assert not wrong, wrong
