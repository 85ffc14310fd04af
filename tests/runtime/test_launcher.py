"""The slot's launcher (node/launcher.py): it forks a supervisor per job that works
as one started on its own would, keeps the service's environment from the job, is
started again when it died, and takes its jobs down with it. No Ray needed."""

import json
import os
import signal
import stat
import zipfile

import pytest

from orchestrator.node.jobfiles import job_dir
from orchestrator.node.launcher import Launcher
from tests.raycluster import wait_for

BASE = {"PATH": "/usr/bin:/bin"}


@pytest.fixture
def launcher():
    one = Launcher()
    yield one
    one.close()


def said(directory):
    try:
        return (directory / "output.log").read_text()
    except FileNotFoundError:
        return ""


def start(launcher, tmp_path, job_id, command, env=None, time_limit=0, grace=1.0, prepare=None, fds=()):
    directory = job_dir(str(tmp_path), "n1", job_id, 1, 0)
    argv = [
        "--dir",
        str(directory),
        "--time-limit",
        str(time_limit),
        "--grace",
        str(grace),
        "--",
        "/bin/bash",
        "-c",
        command,
    ]
    sent = {"base": BASE, "env": env or {}, **({"prepare": prepare} if prepare else {})}
    return launcher.launch(argv, sent, directory, list(fds)), directory


def test_each_job_gets_its_own_supervisor_with_the_jobs_exit_code_and_output(launcher, tmp_path):
    jobs = [start(launcher, tmp_path, f"j{i}", f"echo out {i}; exit {i}") for i in range(5)]
    assert len({job.pid for job, _ in jobs}) == 5
    for i, (job, directory) in enumerate(jobs):
        record = job.result(timeout=30)
        assert record["exit_code"] == i and record["reason"] == "exited"
        assert (directory / "output.log").read_text() == f"out {i}\n"


def test_the_job_sees_its_environment_and_not_the_services(launcher, tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")  # in the runner's environment, never the job's
    launcher.close()
    fresh = Launcher()
    try:
        job, directory = start(
            fresh, tmp_path, "env", 'echo "[$GPUQ_JOB_ID][$RAY_ADDRESS][$PATH]"', env={"GPUQ_JOB_ID": "env"}
        )
        assert job.result(timeout=30)["exit_code"] == 0
        assert (directory / "output.log").read_text() == "[env][][/usr/bin:/bin]\n"
    finally:
        fresh.close()


def test_a_launcher_that_died_is_started_again_at_the_next_job(launcher, tmp_path):
    first = launcher.proc.pid
    launcher.proc.kill()
    launcher.proc.wait()
    job, _ = start(launcher, tmp_path, "after", "exit 7")
    assert job.result(timeout=30)["exit_code"] == 7
    assert launcher.proc.pid != first


def test_a_stopped_supervisor_stops_its_job_within_the_grace(launcher, tmp_path):
    job, directory = start(launcher, tmp_path, "long", "echo started; exec sleep 300")
    wait_for(lambda: said(directory) == "started\n", 30, what="the job to start")
    os.kill(job.pid, signal.SIGTERM)
    record = job.result(timeout=30)
    assert record["reason"] == "stopped" and record["signal"] == signal.SIGTERM


def test_jobs_end_when_their_launcher_dies(launcher, tmp_path):
    """The runner's death takes its launcher down (parent-death signal); the jobs follow."""
    job, directory = start(launcher, tmp_path, "orphan", "echo started; exec sleep 300")
    wait_for(lambda: said(directory) == "started\n", 30, what="the job to start")
    launcher.proc.kill()
    record = job.result(timeout=30)
    assert record is not None and record["reason"] == "stopped"


def test_a_supervisor_that_dies_silent_is_reported_lost(launcher, tmp_path):
    job, directory = start(launcher, tmp_path, "silent", "echo started; exec sleep 300")
    wait_for(lambda: said(directory) == "started\n", 30, what="the job to start")
    os.kill(job.pid, signal.SIGKILL)
    assert job.result(timeout=30)["reason"] == "supervisor_lost"
    os.killpg(
        json.loads((directory / "start.json").read_text())["pid"], signal.SIGKILL
    )  # its orphaned command


def test_a_job_gets_a_private_tmpdir_that_goes_with_it(launcher, tmp_path):
    scratch = tmp_path / "scratch"
    job, directory = start(
        launcher,
        tmp_path,
        "tmp",
        'echo "$TMPDIR"; stat -c %a "$TMPDIR"; touch "$TMPDIR/x"',
        prepare={"scratch": str(scratch), "job": "tmp-1-0"},
    )
    assert job.result(timeout=30)["exit_code"] == 0
    tmpdir, mode = said(directory).split()
    assert tmpdir == f"{scratch}/{os.getuid()}/jobs/tmp-1-0/tmp" and mode == "700"
    assert oct(os.stat(scratch).st_mode & 0o777) == "0o711"  # others may pass, not look
    # Removed just after the record is out (the runner does not wait for it).
    wait_for(
        lambda: not (scratch / str(os.getuid()) / "jobs" / "tmp-1-0").exists(), 30, what="the folder to go"
    )


def test_a_package_handed_over_open_is_unpacked_before_the_command_and_the_runner_is_told(launcher, tmp_path):
    package = tmp_path / "pkg.zip"
    with zipfile.ZipFile(package, "w") as z:
        z.writestr("main.py", "print('from the package')\n")
    fd = os.open(package, os.O_RDONLY)
    plan = {
        "scratch": str(tmp_path / "scratch"),
        "job": "pkg-1-0",
        "announce": True,
        "packages": [{"kind": "working_dir", "uri": "gcs://_ray_pkg_0123456789abcdef.zip", "stored": "-"}],
    }
    try:
        job, directory = start(
            launcher, tmp_path, "pkg", 'cat main.py; echo "$PYTHONPATH"; pwd', prepare=plan, fds=[fd]
        )
    finally:
        os.close(fd)
    assert job.ready.wait(30) and job.prepared["setup_s"] >= 0
    assert job.result(timeout=30)["exit_code"] == 0
    code, pythonpath, cwd = said(directory).splitlines()
    assert code == "print('from the package')" and pythonpath == cwd and cwd.endswith("/jobs/pkg-1-0/work")


def test_a_job_folder_that_exists_is_refused_and_nothing_in_it_is_touched(launcher, tmp_path):
    directory = job_dir(str(tmp_path), "n1", "planted", 1, 0)
    directory.mkdir(parents=True)
    os.mkfifo(directory / "output.log")  # would block an open for writing forever
    victim = tmp_path / "victim"
    victim.write_text("someone's file")
    os.link(victim, directory / "exit.json")
    job, _ = start(launcher, tmp_path, "planted", "echo never")
    record = job.result(timeout=30)
    assert record["reason"] == "launch_failed" and "exists already" in record["message"]
    assert stat.S_ISFIFO(os.stat(directory / "output.log").st_mode) and victim.read_text() == "someone's file"
