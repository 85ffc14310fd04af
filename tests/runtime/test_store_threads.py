"""The store is used from two threads: GroupCommit writes on a worker thread while the
actor's loop reads, and closes it on shutdown. Python's sqlite3 leaves one connection
used by two threads at once to the caller; CI once died of SIGSEGV in store.write when
a test closed a service mid-commit. Real SQLite, real threads, no Ray."""

from __future__ import annotations

import threading

import pytest

from orchestrator.head.store import Store, StoreError


def test_close_during_writes_waits_for_them_and_later_writes_are_refused(tmp_path):
    store = Store(tmp_path / "gpuq.db")
    began, errors, written = threading.Event(), [], []

    def writer(n: int) -> None:
        for i in range(400):
            began.set()
            try:
                store.write([(f"j{n}-{i}", i, "queued", "u", None, "{}")], kv={"k": i})
                written.append(i)
            except StoreError as e:
                errors.append(str(e))
                return

    def reader() -> None:
        for _ in range(400):
            try:
                store.get("k")
            except StoreError:
                return

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)] + [
        threading.Thread(target=reader)
    ]
    for t in threads:
        t.start()
    began.wait()
    store.close()
    for t in threads:
        t.join()
    assert all("closed" in e for e in errors)
    with pytest.raises(StoreError, match="closed"):
        store.write([("late", 0, "queued", "u", None, "{}")])
    again = Store(tmp_path / "gpuq.db")
    # Every write that returned is there: close() waited for the one in progress.
    assert again._db.execute("SELECT count(*) FROM jobs").fetchone()[0] == len(written)
    again.close()


def reloaded(tmp_path, job):
    """`job` saved to a store, and what a new store on the same file loads: a restart."""
    store = Store(tmp_path / "gpuq.db")
    store.save([job])
    store.close()
    again = Store(tmp_path / "gpuq.db")
    try:
        return again.load(now=1.0)
    finally:
        again.close()


def test_a_job_accepted_on_a_bigger_site_reloads_whole(tmp_path):
    """What a site accepted stays valid in the store: a 24-GPU, 14-day job with 20
    retries, accepted under raised limits, reloads after a restart (nothing set aside)."""
    from orchestrator.core.config import Config
    from orchestrator.core.job import Job, JobSpec

    site = Config(nodes={"a": 8, "b": 8, "c": 8}, max_time_limit_s=30 * 86400, max_retries_limit=50)
    spec = JobSpec.parse(
        {
            "run_id": "big",
            "user": "alice",
            "command": "train",
            "gpu_count": 24,
            "time_limit": "14d",
            "max_retries": 20,
        },
        site,
    )
    jobs, set_aside = reloaded(tmp_path, Job.new(spec, seq=1, now=0.0))
    assert set_aside == []
    assert [(j.spec.gpu_count, j.spec.time_limit, j.spec.max_retries) for j in jobs] == [(24, 14 * 86400, 20)]


def test_an_array_member_reloads_with_its_index(tmp_path):
    """GPUQ_* variables are refused from users, but gpuq sets GPUQ_ARRAY_INDEX in each
    member's env itself: a stored member reloads (it was set aside before)."""
    from orchestrator.core.job import Job, JobSpec

    spec = JobSpec.parse({"run_id": "a_3", "user": "alice", "command": "true", "gpu_count": 1})
    member = Job.new(spec.model_copy(update={"env": {"GPUQ_ARRAY_INDEX": "3"}}), seq=1, now=0.0)
    jobs, set_aside = reloaded(tmp_path, member)
    assert set_aside == [] and jobs[0].spec.env == {"GPUQ_ARRAY_INDEX": "3"}
