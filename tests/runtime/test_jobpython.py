"""The jobs' Python (head/jobpython.py): a Ray job runs the cluster's Ray as its user,
so it is refused at submit, naming the fix, when its user could not run that Python.
Real files and modes; the orchestrator on a fake backend (no Ray)."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys

import pytest

from orchestrator.core.errors import InvalidSpec
from orchestrator.head.jobpython import resolve
from tests.runtime.test_service import World

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="whether others may run a file matters in a multi-user install (root) only"
)


@pytest.fixture
def hidden_python(tmp_path):
    """A Python in a folder only root may enter, as pyenv's under /root is."""
    folder = tmp_path / "private"
    folder.mkdir(mode=0o700)
    python = folder / "python3"
    python.symlink_to(shutil.which("python3") or sys.executable)
    return python


def test_a_python_other_accounts_cannot_reach_is_not_ray_ready_and_says_why(hidden_python):
    found = resolve(str(hidden_python), "/usr/bin:/bin")
    assert found.path == str(hidden_python) and not found.ray_ready
    assert "other accounts cannot enter" in found.why_not and "job_python" in found.why_not


def test_a_python_on_no_path_is_named_as_missing():
    found = resolve("no-such-python", "/usr/bin:/bin")
    assert found.path is None and not found.ray_ready and "not on the job's PATH" in found.why_not


def test_the_system_python_is_fine_for_every_account():
    found = resolve("/usr/bin/python3", "/usr/bin:/bin")
    assert found.ray_ready and found.why_not == ""


def test_a_ray_job_is_refused_at_submit_without_a_python_its_user_can_run(tmp_path, hidden_python):
    async def go():
        w = World(tmp_path, job_python=str(hidden_python))
        try:
            with pytest.raises(InvalidSpec) as refused:
                await w.submit(ray=True)
            assert refused.value.errors[0][0] == "ray"
            assert "scripts/up" in refused.value.errors[0][1]
            assert not list(w.svc.queue.jobs())  # nothing enqueued
            await w.submit()  # a plain job still goes
        finally:
            w.stop()

    asyncio.run(go())
