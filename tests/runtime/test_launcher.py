"""The slot's launcher (runtime/launcher.py): it forks a supervisor per job that works
as one started on its own would, keeps the service's environment from the job, is
started again when it died, and takes its jobs down with it. No Ray needed."""

import json
import os
import signal

import pytest

from orchestrator.runtime.jobfiles import job_dir
from orchestrator.runtime.launcher import Launcher
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


def start(launcher, tmp_path, job_id, command, env=None, time_limit=0, grace=1.0):
    directory = job_dir(str(tmp_path), "n1", job_id, 1, 0)
    argv = ["--dir", str(directory), "--time-limit", str(time_limit), "--grace", str(grace), "--",
            "/bin/bash", "-c", command]
    return launcher.launch(argv, {"base": BASE, "env": env or {}}, directory), directory


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
        job, directory = start(fresh, tmp_path, "env", "echo \"[$GPUQ_JOB_ID][$RAY_ADDRESS][$PATH]\"",
                               env={"GPUQ_JOB_ID": "env"})
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
    os.killpg(json.loads((directory / "start.json").read_text())["pid"], signal.SIGKILL)  # its orphaned command
