"""Upgrading gpuq in place (issue #14): `gpuq up` from a changed checkout replaces the
orchestrator on the running cluster; a job running meanwhile keeps running, keeps
logging and completes with one start."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import ray

from orchestrator.version import code_version
from tests.raycluster import wait_for

ROOT = Path(__file__).resolve().parents[2]

UP = """
import json, sys
from orchestrator.deploy.localcluster import connect
from orchestrator.deploy.rollout import ensure_orchestrator
from orchestrator.version import code_version
connect(sys.argv[1])
print(json.dumps({"result": ensure_orchestrator(json.loads(sys.argv[2])), "code": code_version()}))
"""


def newer_checkout(tmp_path: Path) -> Path:
    """A copy of this checkout with one change, as `git pull` would leave it."""
    copy = tmp_path / "checkout"
    for top in ("orchestrator", "serve_app"):
        shutil.copytree(ROOT / top, copy / top, ignore=shutil.ignore_patterns("__pycache__"))
    names = copy / "orchestrator" / "head" / "names.py"
    names.write_text(names.read_text() + "\n# a newer release\n")
    return copy


def up_from(copy: Path, config: dict) -> dict:
    env = {**os.environ, "PYTHONPATH": str(copy)}
    done = subprocess.run(
        [sys.executable, "-c", UP, ray.get_runtime_context().gcs_address, json.dumps(config)],
        cwd=copy,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_an_upgrade_replaces_the_orchestrator_and_a_running_job_completes_with_one_start(orch, tmp_path):
    job_id = orch.submit(
        "for i in $(seq 1 40); do echo tick $i; sleep 0.5; done",
        gpus=4,
        max_retries=0,
        run_id="across-an-upgrade",
    )
    orch.wait_state(job_id, "running")
    wait_for(lambda: "tick 2\n" in orch.log(job_id), 30, what="the job to log")
    old_pid = orch.pid_or_none()
    assert orch.call("status")["details"]["version"]["code"] == code_version()

    copy = newer_checkout(tmp_path)
    out = up_from(copy, orch.config)
    assert out["code"] != code_version() and out["result"].startswith("replaced: new code")
    new = wait_for(
        lambda: orch.call("status", timeout=10)["details"]["version"], 60, what="the new orchestrator"
    )
    assert new["code"] == out["code"]  # it runs the newer checkout's code
    assert orch.pid_or_none() not in (None, old_pid)
    assert orch.job(job_id)["state"] == "running"

    done = orch.wait_state(job_id, "completed", "failed", timeout=120)
    assert done["state"] == "completed" and done["attempts"] == 1
    assert orch.log(job_id).splitlines() == [f"tick {i}" for i in range(1, 41)]  # not a line lost
    assert up_from(copy, orch.config)["result"].startswith("kept")  # again: nothing to replace
