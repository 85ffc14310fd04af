"""Ray programs as jobs (issue #27): `ray.init()` in a job joins a private Ray cluster
on exactly the job's GPUs, run as the job's user.

Real everything: the session's two simulated 8-GPU nodes, real throwaway accounts (the
suite runs as root in CI), Ray's own `ray job submit`, Ray Train and Tune without torch.
The private clusters are real Ray clusters started by the job's user with the venv's
Ray, so each test costs a cluster start: they are few, and each asserts much.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.accounts import UNIX_USERS
from tests.orchestration import SCRATCH, Harness, Shared
from tests.raycluster import wait_for

pytestmark = [pytest.mark.ray,
              pytest.mark.skipif(os.geteuid() != 0, reason="jobs run as their users only in a multi-user install")]

RAY = str(Path(sys.executable).with_name("ray"))
ALICE = {"Authorization": "Bearer alice-token"}
CLEAN = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}

# What a Ray user's program prints: the cluster it sees, and per task where it ran.
APP = """
import json, os, sys, ray
ray.init()
print("resources", json.dumps(ray.cluster_resources()), flush=True)

@ray.remote(num_gpus=1)
def where():
    import time; time.sleep(0.5)  # so that the tasks overlap and need a GPU each
    return {"uid": os.getuid(), "gpus": os.environ["CUDA_VISIBLE_DEVICES"], "node": ray.get_runtime_context().get_node_id()}

n = int(sys.argv[1])
print("tasks", json.dumps(ray.get([where.remote() for _ in range(n)])), flush=True)
sys.exit(int(sys.argv[2]) if len(sys.argv) > 2 else 0)
"""


@pytest.fixture(scope="module")
def open_dir():
    """Job folders every account may reach (Ray's logs are copied there as the user)."""
    path = Path(tempfile.mkdtemp(prefix="gpuq-rayjobs-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def shared(ray_cluster, open_dir):
    s = Shared(lambda: Harness(open_dir))
    yield s
    s.close()


@pytest.fixture
def lab(shared):
    return shared.get()


@pytest.fixture
def project(open_dir):
    d = Path(tempfile.mkdtemp(prefix="project-", dir=open_dir))
    (d / "app.py").write_text(APP)
    os.chmod(d, 0o755)
    return d


def said(log: str, word: str):
    return json.loads(next(line for line in log.splitlines() if line.startswith(word + " ")).split(" ", 1)[1])


def allocated(job: dict) -> dict[str, list[int]]:
    return {node: gpus for node, gpus in job["allocation"].items()}


def alice_processes() -> list[str]:
    uid = pwd.getpwnam(UNIX_USERS["alice"]).pw_uid
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    out.append(Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:120])
            except OSError:
                pass
    return out


def test_ray_job_submit_of_a_ray_program_gets_its_own_cluster_on_its_gpus_as_its_user(api, lab, project):
    r = subprocess.run([RAY, "job", "submit", "--address", api, "--headers", json.dumps(ALICE),
                        "--entrypoint-num-gpus", "4", "--working-dir", str(project), "--", "python", "app.py", "4", "3"],
                       capture_output=True, text=True, env=CLEAN, timeout=300)
    assert r.returncode == 1, r.stdout + r.stderr  # the driver's exit 3: Ray's CLI says FAILED
    job = lab.call("list_jobs", None, "alice", 1, 0)["jobs"][0]
    job = lab.job(job["id"])
    log = lab.log(job["id"])
    assert job["spec"]["ray"] is True and job["exit_code"] == 3, (job["events"], log)
    assert said(log, "resources")["GPU"] == 4
    tasks = said(log, "tasks")
    (node, gpus), = allocated(job).items()
    assert sorted(int(t["gpus"]) for t in tasks) == sorted(gpus)  # four distinct GPUs, all the job's
    assert {t["uid"] for t in tasks} == {pwd.getpwnam(UNIX_USERS["alice"]).pw_uid}
    # Ray's logs are the owner's, in the job's folder; nothing of the cluster is left.
    wait_for(lambda: not alice_processes(), 30, what="every process of the job's Ray cluster to be gone")
    assert not any(Path(SCRATCH).glob(f"{pwd.getpwnam(UNIX_USERS['alice']).pw_uid}/ray/*"))


def test_a_twelve_gpu_ray_job_is_a_two_node_cluster_with_tasks_on_both(lab, project):
    job_id = lab.submit("python app.py 12", gpus=12, ray=True, working_dir=str(project), user="alice",
                        max_retries=0)
    job = lab.wait_state(job_id, "completed", "failed", timeout=240)
    log = lab.log(job_id)
    assert job["state"] == "completed", (job["events"], log)
    assert said(log, "resources")["GPU"] == 12
    tasks = said(log, "tasks")
    per_node = sorted(sum(1 for t in tasks if t["node"] == n) for n in {t["node"] for t in tasks})
    assert per_node == [4, 8]
    assert sorted(len(g) for g in allocated(job).values()) == [4, 8]
    wait_for(lambda: not alice_processes(), 30, what="every process of both nodes to be gone")
