"""Every byte of a job's output once, for every reader, however the job ends (#26): a
REST follower that starts before the job runs and one that starts after it ended,
`ray job logs --follow`, and one that reconnects at an offset all get exactly what
`gpuq logs` prints, byte for byte. One orchestrator for the module."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import pytest

from orchestrator.core import joblog
from tests.orchestration import Harness, Shared
from tests.raycluster import wait_for
from tests.readers import Follower, RayFollower
from tests.support import write_index

ALICE = {"Authorization": "Bearer alice-token"}
ADMIN = {"Authorization": "Bearer admin-token"}
RAY = str(Path(sys.executable).with_name("ray"))
GPUQ = [sys.executable, "-m", "orchestrator.cli"]
QUIET = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}


@pytest.fixture(scope="module")
def shared(ray_cluster, tmp_path_factory):
    # An index with nothing in it: a pip env fails at once, with pip's own words.
    index = write_index(Path(tempfile.mkdtemp(prefix="gpuq-empty-index-")), [])
    made = Shared(lambda: Harness(tmp_path_factory.mktemp("output"), pip_index_url=index, stop_grace_s=1.0))
    yield made
    made.close()


@pytest.fixture
def out(shared):
    return shared.get()


def submit(api: str, **spec) -> str:
    r = httpx.post(
        f"{api}/queue/submit", json={"run_id": "out", "gpu_count": 1, **spec}, headers=ALICE, timeout=30
    )
    assert r.status_code == 200, r.text
    return r.json()["job_id"]


def gpuq_logs(api: str, job_id: str) -> bytes:
    done = subprocess.run(
        [*GPUQ, "logs", job_id],
        capture_output=True,
        env={**QUIET, "GPUQ_URL": api, "GPUQ_TOKEN": "alice-token"},
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


ENDINGS = {
    "completed": dict(command="printf 'one\\ntwo\\n'; printf 'caf\\303\\251 \\342\\234\\223\\n'"),
    "failed and retried": dict(command="echo line-a; echo line-b >&2; exit 3", max_retries=1),
    "time limit": dict(command="echo tick; sleep 30", time_limit=2, max_retries=0),
    "runtime env failed": dict(
        command="echo never", runtime_env={"pip": ["gpuq-missing==1.0"]}, max_retries=0
    ),
    "cancelled": dict(command="echo started; sleep 300"),
}


@pytest.mark.parametrize("ending", ENDINGS)
def test_every_reader_gets_the_whole_output_once_however_the_job_ends(out, api, ending):
    job_id = submit(api, **ENDINGS[ending])
    early, ray = Follower(api, job_id), RayFollower(api, job_id)  # both before the job runs
    if ending == "cancelled":
        wait_for(lambda: b"started" in early.got, 60, what="the job to start")
        httpx.post(f"{api}/jobs/{job_id}/cancel", headers=ALICE, timeout=30)
    job = out.wait_state(job_id, "completed", "failed", "cancelled", timeout=120)
    printed = gpuq_logs(api, job_id)
    assert early.result() == printed
    assert Follower(api, job_id).result() == printed  # after the end
    assert ray.result() == printed
    if ending == "failed and retried":
        assert job["attempts"] == 2
        assert printed == b"line-a\nline-b\n" + joblog.boundary(2) + b"line-a\nline-b\n"
    elif ending == "runtime env failed":
        assert b"No matching distribution found for gpuq-missing==1.0" in printed
    elif ending == "time limit":
        assert printed.startswith(b"tick\n") and b"time limit of 2 s reached" in printed


def test_a_follower_that_reconnects_at_its_offset_gets_the_rest_once(out, api):
    job_id = submit(api, command="for i in $(seq 1 30); do echo line $i; sleep 0.05; done", max_retries=0)
    first = Follower(api, job_id)
    wait_for(lambda: first.got.count(b"\n") >= 5, 60, what="some lines")
    got = first.got  # the connection drops here; the client keeps what it has
    rest = Follower(api, job_id, offset=len(got)).result()
    assert got + rest == gpuq_logs(api, job_id) == b"".join(b"line %d\n" % i for i in range(1, 31))


def test_a_preempted_job_shows_both_runs_with_the_line_between(out, api):
    low = submit(api, command="echo low run; sleep 300", gpu_count=16, priority="LOW")
    follower = Follower(api, low)
    wait_for(lambda: b"low run" in follower.got, 60, what="the low job to run")
    urgent = httpx.post(
        f"{api}/queue/submit",
        json={
            "run_id": "urgent",
            "command": "echo urgent",
            "gpu_count": 16,
            "priority": "CRITICAL",
            "user": "bob",
        },
        headers=ADMIN,
        timeout=30,
    ).json()["job_id"]
    out.wait_state(urgent, "completed", timeout=120)
    wait_for(lambda: follower.got.count(b"low run") == 2, 60, what="the low job to run again")
    httpx.post(f"{api}/jobs/{low}/cancel", headers=ALICE, timeout=30)
    assert follower.result() == gpuq_logs(api, low) == b"low run\n" + joblog.boundary(2) + b"low run\n"


def test_events_name_only_the_gpus_the_job_runs_on(out, api):
    job_id = submit(api, command="echo $CUDA_VISIBLE_DEVICES", gpu_count=2, max_retries=0)
    job = out.wait_state(job_id, "completed", timeout=60)
    ((node, gpus),) = job["allocation"].items()
    assert sorted(map(int, out.log(job_id).split(","))) == sorted(gpus)  # the job saw what gpuq says it has
    named = [e["reason"] for e in job["events"] if "[" in e["reason"]]
    assert named == [f"running on {job['placement']}"]  # one set of indices in the whole history: Ray's


@pytest.mark.slow
def test_twenty_failing_jobs_each_followed_from_before_it_ran_match_gpuq_logs(out, api):
    for _wave in range(4):  # five jobs and ten streams at a time: a user may hold 16 streams open
        jobs = [submit(api, **ENDINGS["failed and retried"]) for _ in range(5)]
        followers = [(job_id, Follower(api, job_id), RayFollower(api, job_id)) for job_id in jobs]
        for job_id, rest, ray in followers:
            out.wait_state(job_id, "failed", timeout=180)
            printed = gpuq_logs(api, job_id)
            assert printed == b"line-a\nline-b\n" + joblog.boundary(2) + b"line-a\nline-b\n"
            assert rest.result() == printed and ray.result() == printed
