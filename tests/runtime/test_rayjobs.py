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

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="jobs run as their users only in a multi-user install")
]

RAY = str(Path(sys.executable).with_name("ray"))
GPUQ = str(Path(sys.executable).with_name("gpuq"))
ALICE = {"Authorization": "Bearer alice-token"}
BOB = {"Authorization": "Bearer bob-token"}
CLEAN = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}

# What a Ray user's program prints: the cluster it sees, and per task where it ran.
APP = """
import json, os, sys, time, ray
ray.init()
print("resources", json.dumps(ray.cluster_resources()), flush=True)

@ray.remote(num_gpus=1)
def where():
    import time; time.sleep(0.5)  # so that the tasks overlap and need a GPU each
    node = ray.get_runtime_context().get_node_id()
    return {"uid": os.getuid(), "gpus": os.environ["CUDA_VISIBLE_DEVICES"], "node": node}

n = int(sys.argv[1])
print("tasks", json.dumps(ray.get([where.remote() for _ in range(n)])), flush=True)
if sys.argv[2:] == ["hold"]:  # keep the cluster up, for whatever ends it
    print("ready", flush=True)
    time.sleep(600)
sys.exit(int(sys.argv[2]) if len(sys.argv) > 2 else 0)
"""

# Ray's libraries without torch: a data-parallel trainer of four GPU workers, and a Tune
# run of four one-GPU trials, in one 4-GPU job. Results go to the job's TMPDIR.
LIBRARIES = """
import json, os, pathlib, ray
from ray import train, tune
from ray.train import RunConfig, ScalingConfig
from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

storage = pathlib.Path(os.environ["TMPDIR"])

def loop(config):
    rank = train.get_context().get_world_rank()
    seen = [rank, os.environ["CUDA_VISIBLE_DEVICES"], os.getuid()]
    (storage / f"rank-{rank}.json").write_text(json.dumps(seen))
    train.report({"rank": rank})

DataParallelTrainer(loop, scaling_config=ScalingConfig(num_workers=4, use_gpu=True),
                    run_config=RunConfig(storage_path=str(storage), name="train")).fit()
print("train", json.dumps(sorted(json.loads(p.read_text()) for p in storage.glob("rank-*.json"))), flush=True)

def trial(config):
    tune.report({"x": config["x"], "gpus": os.environ["CUDA_VISIBLE_DEVICES"]})

grid = tune.Tuner(tune.with_resources(trial, {"cpu": 1, "gpu": 1}),
                  param_space={"x": tune.grid_search([1, 2, 3, 4])},
                  run_config=tune.RunConfig(storage_path=str(storage), name="tune")).fit()
print("tune", json.dumps(sorted([r.metrics["x"], r.metrics["gpus"]] for r in grid)), flush=True)
"""

# A Ray program that holds its GPUs: a task keeps a worker busy, the driver waits.
HOLD = """
import time, ray
ray.init()

@ray.remote(num_gpus=1)
def busy():
    time.sleep(600)

running = busy.remote()
ray.get(ray.remote(lambda: 1).remote())
time.sleep(1)
print("ready", flush=True)
time.sleep(600)
"""

# From inside a Ray job: whether each address answers Ray's GcsClient and ray.init()
# (each try in a process of its own, with this job's token, as the job's user).
REACH = """
import json, os, subprocess, sys
TRIES = {"gcs": "from ray._raylet import GcsClient; "
                "print(len(GcsClient(address=A).get_all_node_info(timeout=20)))",
         "init": "import ray; ray.init(address=A); print(ray.cluster_resources())"}
tries = {f"{kind} {address}": subprocess.Popen([sys.executable, "-c", "A = %r; " % address + code],
                                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
         for address in [os.environ["RAY_ADDRESS"], *sys.argv[1:]] for kind, code in TRIES.items()}
out = {}
for name, proc in tries.items():
    try:
        out[name] = proc.wait(timeout=60) == 0
    except subprocess.TimeoutExpired:  # still trying after a minute: it got nowhere
        proc.kill()
        out[name] = False
print("reach", json.dumps(out), flush=True)
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
    (d / "libraries.py").write_text(LIBRARIES)
    (d / "hold.py").write_text(HOLD)
    (d / "reach.py").write_text(REACH)
    os.chmod(d, 0o755)
    return d


def said(log: str, word: str):
    return json.loads(next(line for line in log.splitlines() if line.startswith(word + " ")).split(" ", 1)[1])


def allocated(job: dict) -> dict[str, list[int]]:
    return {node: gpus for node, gpus in job["allocation"].items()}


def processes_of(user: str) -> list[str]:
    uid = pwd.getpwnam(UNIX_USERS[user]).pw_uid
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    out.append(
                        Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:120]
                    )
            except OSError:
                pass
    return out


def nothing_left_of(user: str) -> None:
    """No process of the user's, and no Ray temp dir of theirs on the node. The supervisor
    removes the temp dir as the user after the exit record is out (jobenv.remove_as_user),
    so a reader that saw the job end may still find it for a moment: wait for it to go."""
    wait_for(lambda: not processes_of(user), 30, what=f"every process of {user}'s Ray clusters to be gone")
    uid = pwd.getpwnam(UNIX_USERS[user]).pw_uid
    wait_for(
        lambda: not list(Path(SCRATCH).glob(f"{uid}/r/*")), 30, what=f"{user}'s Ray temp dirs to be removed"
    )


def test_ray_job_submit_of_a_ray_program_gets_its_own_cluster_on_its_gpus_as_its_user(api, lab, project):
    r = subprocess.run(
        [
            RAY,
            "job",
            "submit",
            "--address",
            api,
            "--headers",
            json.dumps(ALICE),
            "--entrypoint-num-gpus",
            "4",
            "--working-dir",
            str(project),
            "--",
            "python",
            "app.py",
            "4",
            "3",
        ],
        capture_output=True,
        text=True,
        env=CLEAN,
        timeout=300,
    )
    assert r.returncode == 1, r.stdout + r.stderr  # the driver's exit 3: Ray's CLI says FAILED
    job = lab.call("list_jobs", None, "alice", 1, 0)["jobs"][0]
    job = lab.job(job["id"])
    log = lab.log(job["id"])
    assert job["spec"]["ray"] is True and job["exit_code"] == 3, (job["events"], log)
    assert said(log, "resources")["GPU"] == 4
    tasks = said(log, "tasks")
    ((node, gpus),) = allocated(job).items()
    assert sorted(int(t["gpus"]) for t in tasks) == sorted(gpus)  # four distinct GPUs, all the job's
    assert {t["uid"] for t in tasks} == {pwd.getpwnam(UNIX_USERS["alice"]).pw_uid}
    nothing_left_of("alice")  # the driver's end ended its cluster


def test_a_twelve_gpu_ray_job_is_a_two_node_cluster_and_preemption_ends_all_of_it(lab, project):
    victim = lab.submit(
        "python app.py 12 hold",
        gpus=12,
        ray=True,
        priority="LOW",
        working_dir=str(project),
        user="alice",
        max_retries=1,
    )
    wait_for(lambda: "ready" in lab.log(victim), 240, what="the 12-GPU Ray program to run")
    log = lab.log(victim)
    assert said(log, "resources")["GPU"] == 12
    tasks = said(log, "tasks")
    per_node = sorted(sum(1 for t in tasks if t["node"] == n) for n in {t["node"] for t in tasks})
    assert per_node == [4, 8]
    assert sorted(len(g) for g in allocated(lab.job(victim)).values()) == [4, 8]
    assert lab.job(victim)["ray_cluster"]["nodes"] == 2
    # A CRITICAL job needs 8 GPUs, 4 are free: the LOW cluster gives way, both of its nodes.
    urgent = lab.submit("sleep 60", gpus=8, priority="CRITICAL", user="bob")
    lab.wait_state(urgent, "running", timeout=120)
    assert lab.job(victim)["state"] in ("queued", "preempted")
    nothing_left_of("alice")
    for job_id in (victim, urgent):
        lab.call("cancel", job_id, "tests")


def test_ray_train_and_tune_run_in_a_four_gpu_job_without_torch(api, lab, project):
    """Through `gpuq run --ray`, as a user would: its output here, its exit code gpuq run's."""
    run = subprocess.run(
        [
            GPUQ,
            "run",
            "--ray",
            "--gpus",
            "4",
            "--retries",
            "0",
            "--workdir",
            str(project),
            "--",
            "python",
            "libraries.py",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**CLEAN, "GPUQ_URL": api, "GPUQ_TOKEN": "alice-token"},
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    job_id = lab.call("list_jobs", None, "alice", 1, 0)["jobs"][0]["id"]
    job, log = lab.job(job_id), lab.log(job_id)
    assert job["spec"]["ray"] is True and job["state"] == "completed"
    assert said(run.stdout, "tune") == said(log, "tune")  # what gpuq run printed is the job's output
    (gpus,) = allocated(job).values()
    workers = said(log, "train")  # every worker of the trainer reported, each on a GPU of its own
    assert [rank for rank, _, _ in workers] == [0, 1, 2, 3]
    assert sorted(int(g) for _, g, _ in workers) == sorted(gpus)
    assert {uid for _, _, uid in workers} == {pwd.getpwnam(UNIX_USERS["alice"]).pw_uid}
    trials = said(log, "tune")
    assert [x for x, _ in trials] == [1, 2, 3, 4]
    assert {int(g) for _, g in trials} <= set(gpus)


def test_a_ray_job_reaches_its_own_cluster_only_and_stops_leave_nothing(api, lab, project):
    """Not gpuq's cluster, nor another user's running job's cluster: each has a token of
    its own, and a job holds only its own. gpuq show and ray job status say where it is.
    A time limit and a cancel end every process of a cluster and its temp dir."""
    import ray

    theirs = lab.submit(
        "python hold.py", gpus=2, ray=True, working_dir=str(project), user="bob", max_retries=0
    )
    wait_for(lambda: "ready" in lab.log(theirs), 120, what="bob's Ray program to run")
    bob_head = lab.job(theirs)["ray_cluster"]["head"]
    assert f"head {bob_head}" in lab.log(theirs)
    gpuq_gcs = ray.get_runtime_context().gcs_address
    # Up before its limit, whatever the machine's load: the limit counts from the start of
    # the command, the cluster's start included.
    timed = lab.submit(
        "python hold.py",
        gpus=2,
        ray=True,
        working_dir=str(project),
        user="alice",
        max_retries=0,
        time_limit=25,
    )
    wait_for(lambda: "ready" in lab.log(timed), 25, what="the time-limited Ray program to hold its GPUs")
    job_id = lab.submit(
        f"python reach.py {gpuq_gcs} {bob_head}",
        gpus=1,
        ray=True,
        working_dir=str(project),
        user="alice",
        max_retries=0,
    )
    status = subprocess.run(
        [RAY, "job", "status", "--address", api, "--headers", json.dumps(BOB), theirs],
        capture_output=True,
        text=True,
        env=CLEAN,
        timeout=60,
    )
    assert f"a Ray program on its own Ray cluster (head {bob_head})" in status.stdout, (
        status.stdout + status.stderr
    )
    show = subprocess.run(
        [GPUQ, "show", theirs],
        capture_output=True,
        text=True,
        timeout=60,
        env={**CLEAN, "GPUQ_URL": api, "GPUQ_TOKEN": "bob-token", "COLUMNS": "200"},
    )
    assert f"Ray program: its own Ray cluster, head {bob_head}, no dashboard" in show.stdout, show.stdout
    job = lab.wait_state(job_id, "completed", "failed", timeout=300)
    log = lab.log(job_id)
    assert job["state"] == "completed", (job["events"], log)
    reach = said(log, "reach")
    own = next(k.split(" ", 1)[1] for k in reach if k.split(" ", 1)[1] not in (gpuq_gcs, bob_head))
    assert reach == {
        f"gcs {own}": True,
        f"init {own}": True,
        f"gcs {gpuq_gcs}": False,
        f"init {gpuq_gcs}": False,
        f"gcs {bob_head}": False,
        f"init {bob_head}": False,
    }
    assert "time limit" in lab.wait_state(timed, "failed", "completed", timeout=120)["failure_reason"]
    nothing_left_of("alice")
    lab.call("cancel", theirs, "tests")
    assert lab.wait_state(theirs, "cancelled")["state"] == "cancelled"
    nothing_left_of("bob")
