"""The store is used from two threads: GroupCommit writes on a worker thread while the
actor's loop reads, and closes it on shutdown. Python's sqlite3 leaves one connection
used by two threads at once to the caller; CI once died of SIGSEGV in store.write when
a test closed a service mid-commit. Real SQLite, real threads, no Ray."""

from __future__ import annotations

import threading

import pytest

from orchestrator.runtime.store import Store, StoreError


def test_close_during_writes_waits_for_them_and_later_writes_are_refused(tmp_path):
    store = Store(tmp_path / "gpuq.db")
    began, errors, written = threading.Event(), [], []

    def writer(n: int) -> None:
        for i in range(400):
            began.set()
            try:
                store.write([(f"j{n}-{i}", i, "QUEUED", "{}")], kv={"k": i})
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

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)] + [threading.Thread(target=reader)]
    for t in threads:
        t.start()
    began.wait()
    store.close()
    for t in threads:
        t.join()
    assert all("closed" in e for e in errors)
    with pytest.raises(StoreError, match="closed"):
        store.write([("late", 0, "QUEUED", "{}")])
    again = Store(tmp_path / "gpuq.db")
    # Every write that returned is there: close() waited for the one in progress.
    assert again._db.execute("SELECT count(*) FROM jobs").fetchone()[0] == len(written)
    again.close()
