"""The store's disk fills up under a running orchestrator (issue #14): changes are
refused with an honest error, nothing is acknowledged that is not durable, running
jobs go on, and what happened meanwhile is written once space returns.

Real SQLite on a real full file system: a 2 MiB tmpfs under the store, filled to the
last block. Mounting needs root, as CI runs the suite; where it is refused the test
says so and skips (the behaviour is not simulated some other way)."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
from pathlib import Path

import pytest

from orchestrator.core.errors import GpuqError
from orchestrator.core.states import JobState
from tests.runtime.test_service import World, cycles, until


class TmpfsDisk:
    def __init__(self, where: Path):
        self.where = where
        where.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(where)], capture_output=True
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
        self.filler = where / "filler"

    def fill(self) -> None:
        with open(self.filler, "wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError:
                pass

    def free(self) -> None:
        self.filler.unlink()

    def close(self) -> None:
        subprocess.run(["umount", "-l", str(self.where)], check=False)


def stored_state(db_path: Path, job_id: str) -> str:
    with sqlite3.connect(db_path) as db:
        return db.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]


def test_a_full_disk_refuses_changes_loses_nothing_and_recovers_by_itself(tmp_path):
    fs = TmpfsDisk(tmp_path / "disk")
    db_path = fs.where / "gpuq.db"

    async def body(w):
        running = await w.submit(gpus=2, run_id="runs-through-it")
        await w.running(running)
        await until(lambda: stored_state(db_path, running) == "running")
        waiting = await w.submit(gpus=16, run_id="waits-for-the-gpus")
        fs.fill()
        with pytest.raises(GpuqError, match="cannot write"):  # the first commit that meets the full disk
            await w.submit(gpus=1, run_id="refused")
        assert [j.spec.run_id for j in w.svc.queue.jobs()] == ["runs-through-it", "waits-for-the-gpus"]
        assert w.svc.durable.failing is not None
        with pytest.raises(GpuqError, match="refuses changes"):  # later ones are refused up front
            await w.svc.requests.cancel(running)
        status = (await w.svc.cluster.status())["details"]["store"]
        assert status["writable"] is False and "full" in status["error"]

        w.clock.advance(30)
        w.backend.end(running, 1, exit_code=0)  # the job ends while nothing can be written
        await until(lambda: w.job(running).state is JobState.COMPLETED)
        assert stored_state(db_path, running) == "running"  # not durable yet, and not lost
        await cycles(w)  # the GPUs are free, but a start that cannot be stored does not happen
        assert w.job(waiting).state is JobState.QUEUED and (waiting, 1) not in w.backend.started

        fs.free()
        await until(lambda: w.svc.durable.failing is None, timeout=20)  # by itself
        await until(lambda: stored_state(db_path, running) == "completed")
        await w.running(waiting)
        assert "refused" not in open_ids(db_path, w)  # the refused submit never reached the store
        again = await w.submit(gpus=1, run_id="after")
        assert stored_state(db_path, again) in ("queued", "scheduled", "allocating", "running")

    async def run():
        w = World(tmp_path, store_path=str(db_path))
        try:
            await body(w)
        finally:
            w.stop()

    try:
        asyncio.run(run())
    finally:
        fs.close()


def open_ids(db_path: Path, w) -> set[str]:
    with sqlite3.connect(db_path) as db:
        runs = {
            w.svc.queue.get(i).spec.run_id for (i,) in db.execute("SELECT id FROM jobs") if i in w.svc.queue
        }
        audit = [t for (t,) in db.execute("SELECT target FROM audit WHERE action = 'submit'")]
    assert all(t in w.svc.queue for t in audit)  # no audit row for a submit that was refused
    return runs


def test_the_api_answers_a_store_that_cannot_write_with_503_and_retry_after():
    from orchestrator.head.store import StoreError
    from serve_app.gateway import _mapped

    answer = _mapped(
        StoreError("the job store at /x/gpuq.db cannot write (database or disk is full; its disk is full)")
    )
    assert answer.status == 503 and answer.headers["Retry-After"]
    assert "disk is full" in answer.detail and "nothing was changed" in answer.detail
