"""A job's processes end with it (node/cgroups.py, node/command.py): whatever
they do to escape, at its end, its cancel and its time limit; its end is not held up by
what it left; its memory limit ends it with its own reason. Each case runs with the
rank's cgroup and without one (a node where none can be made). No Ray needed."""

import os
import signal
import uuid
from pathlib import Path

import pytest

from orchestrator.node import cgroups
from orchestrator.node.jobfiles import job_dir
from orchestrator.node.launcher import Launcher
from tests.raycluster import wait_for

BASE = {"PATH": "/usr/bin:/bin"}
FOUND = cgroups.find()
needs_cgroup = pytest.mark.skipif(not FOUND.usable, reason=f"this machine makes no cgroup: {FOUND.why_not}")
# Three ways out of a process group and a process tree, each writing its pid to a file:
# a new session, a double fork into a new group, and a cleared environment in a group
# of its own (invisible to the tag reaper).
ESCAPES = (
    "setsid -f sh -c 'echo $$ > {d}/setsid; exec sleep 600' < /dev/null > /dev/null 2>&1; "
    "( sh -c 'echo $$ > {d}/double; exec sleep 600' & ) ; "
    "env -i python3 -c 'import os, time; os.setpgid(0, 0); "
    'open("{d}/cleared", "w").write(str(os.getpid())); '
    "time.sleep(600)' & "
)


@pytest.fixture(scope="module")
def launcher():
    one = Launcher()
    yield one
    one.close()


def start(launcher, tmp_path, command, contained, time_limit=0, memory=None, cpus=None, lease=None):
    job_id = uuid.uuid4().hex[:8]
    directory = job_dir(str(tmp_path), "n1", job_id, 1, 0)
    argv = [
        "--dir",
        str(directory),
        "--time-limit",
        str(time_limit),
        "--grace",
        "1",
        "--",
        "/bin/bash",
        "-c",
        command,
    ]
    sent: dict = {"base": BASE, "env": {}}
    if lease:
        sent["lease"] = lease
    if contained:
        sent["cgroup"] = {
            "name": cgroups.rank_name(f"test-{os.getpid()}", job_id, 1, 0),
            "memory": memory,
            "cpus": cpus,
        }
    return launcher.launch(argv, sent, directory, []), job_id


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def escaped_pids(folder: Path) -> dict[str, int]:
    wait_for(
        lambda: all(
            (folder / n).exists() and (folder / n).read_text().strip()
            for n in ("setsid", "double", "cleared")
        ),
        30,
        what="every escape to have started",
    )
    return {n: int((folder / n).read_text()) for n in ("setsid", "double", "cleared")}


@pytest.mark.parametrize("contained", [pytest.param(True, marks=needs_cgroup), False], ids=["cgroup", "tree"])
@pytest.mark.parametrize("ending", ["exits", "cancel", "time_limit"])
def test_every_escaped_process_ends_with_the_job(launcher, tmp_path, contained, ending):
    folder = tmp_path / "pids"
    folder.mkdir()
    tail = {"exits": "exit 0", "cancel": "sleep 600", "time_limit": "sleep 600"}[ending]
    job, _ = start(
        launcher,
        tmp_path,
        ESCAPES.format(d=folder) + tail,
        contained,
        time_limit=3 if ending == "time_limit" else 0,
    )
    pids = escaped_pids(folder)
    if ending == "cancel":
        os.kill(job.pid, signal.SIGTERM)
    # The job's end is told though its escaped children held its output pipe, and by
    # then none of them runs: nothing outlives the record that frees the job's GPUs.
    record = job.result(timeout=60)
    assert record is not None
    assert record["reason"] == {"exits": "exited", "cancel": "stopped", "time_limit": "time_limit"}[ending]
    assert {name: pid for name, pid in pids.items() if alive(pid)} == {}


@needs_cgroup
def test_the_cgroup_goes_with_the_job(launcher, tmp_path):
    job, job_id = start(launcher, tmp_path, "sleep 0.2", True)
    assert job.result(timeout=60)["reason"] == "exited"
    assert not list(FOUND.v2.glob(f"*/{job_id}.*"))


@needs_cgroup
def test_a_job_past_its_memory_limit_ends_out_of_memory(launcher, tmp_path):
    if "memory" not in FOUND.limits:
        pytest.skip("no memory controller on this machine")
    job, _ = start(
        launcher, tmp_path, "python3 -c 'b = bytearray(400 * 2**20); print(len(b))'", True, memory=64 * 2**20
    )
    record = job.result(timeout=60)
    assert record["reason"] == "out_of_memory" and record["exit_code"] != 0
    assert "limit of 64 MiB" in record["message"]


@needs_cgroup
def test_a_job_below_its_memory_limit_is_not_touched(launcher, tmp_path):
    job, _ = start(
        launcher, tmp_path, "python3 -c 'b = bytearray(8 * 2**20); print(len(b))'", True, memory=256 * 2**20
    )
    assert job.result(timeout=60)["reason"] == "exited"


@needs_cgroup
def test_the_cpu_limit_is_the_cgroups_quota(launcher, tmp_path):
    if "cpu" not in FOUND.limits:
        pytest.skip("no cpu controller on this machine")
    base = FOUND.limits["cpu"]
    quota = "cpu.max" if base == FOUND.v2 else "cpu.cfs_quota_us"
    job, job_id = start(launcher, tmp_path, "sleep 30", True, cpus=0.5)
    folder = base / f"test-{os.getpid()}" / f"{job_id}.1.0"
    # The kernel makes the file, unlimited ("-1" or "max"), with the folder; the supervisor
    # writes the limit just after. Wait for the write, then check what was written.
    wait_for(
        lambda: (folder / quota).exists() and (folder / quota).read_text().split()[0] not in ("-1", "max"),
        30,
        what="the job's cgroup and its CPU limit",
    )
    assert (folder / quota).read_text().split()[0] == "50000"
    os.kill(job.pid, signal.SIGTERM)
    assert job.result(timeout=60)["reason"] == "stopped"


@needs_cgroup
def test_a_leftover_cgroup_of_a_job_no_longer_running_is_reaped(tmp_path):
    import subprocess

    cluster = f"test-reap-{os.getpid()}"
    group = cgroups.JobCgroup(FOUND, cgroups.rank_name(cluster, "gone-job", 1, 0))
    live = cgroups.JobCgroup(FOUND, cgroups.rank_name(cluster, "live-job", 1, 0))
    with group.entered():
        orphan = subprocess.Popen(["sleep", "600"])
    try:
        assert group.pids() == [orphan.pid]
        assert cgroups.leftover(FOUND, cluster, {"live-job"}) == ["gone-job.1.0"]
        assert orphan.wait(timeout=10) == -signal.SIGKILL
        assert live.path.exists() and not group.path.exists()
    finally:
        orphan.kill()
        live.remove()
