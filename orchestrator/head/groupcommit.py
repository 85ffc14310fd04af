"""Durable writes from an asyncio loop without stalling it on fsync (GroupCommit)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

from orchestrator.core.job import Job
from orchestrator.head.store import Store, StoreError, rows_of


class GroupCommit:
    """Durable writes from an asyncio loop without stalling it on fsync.

    `save()` serialises the jobs at once (their state as of the call) and returns a
    future that resolves when they are committed. One commit at a time runs in a
    thread; saves made meanwhile are written together by the next one, so a burst of
    submissions and job ends shares fsyncs. A caller that must not go on before its
    change is durable (acknowledging a submit, launching on Ray) awaits the future.

    When a commit fails (a full disk, a read-only file system) its waiters get the
    StoreError, and what it carried stays pending: the state changes of running jobs
    (an end, a requeue) are not lost, they are written by the next commit that works.
    Until one does, `failing` says why, the commit is retried every few seconds, and
    the orchestrator refuses new changes up front (requests.py). A caller that gives up
    its change (a refused submit) takes it back out with `drop()`.
    """

    RETRY_S = (0.5, 1.0, 2.0, 5.0)  # waits between attempts while the store fails

    def __init__(self, store: Store):
        self.store = store
        self._rows: dict[str, tuple[str, int, str, str]] = {}
        self._kv: dict[str, object] = {}
        self._usage: list[tuple] = []
        self._audit: list[tuple] = []
        self._waiters: list[asyncio.Future] = []
        self._task: asyncio.Task | None = None
        self.failing: StoreError | None = None
        self.failures = 0  # commits that failed, ever (a metric)

    def save(
        self,
        jobs: Iterable[Job],
        kv: dict[str, object] | None = None,
        usage: list[tuple] | None = None,
        audit: list[tuple] | None = None,
    ) -> asyncio.Future:
        loop = asyncio.get_event_loop()
        for row in rows_of(jobs):
            self._rows[row[0]] = row
        self._kv.update(kv or {})
        self._usage += usage or []
        self._audit += audit or []
        done = loop.create_future()
        self._waiters.append(done)
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._flush())
        return done

    def drop(self, job_ids: Iterable[str]) -> None:
        """Take back rows of jobs that were never accepted (and their audit rows)."""
        ids = set(job_ids)
        for job_id in ids:
            self._rows.pop(job_id, None)
        self._audit = [a for a in self._audit if a[3] not in ids]

    def _pending(self) -> bool:
        return bool(self._waiters or self._rows or self._kv or self._usage or self._audit)

    async def _flush(self) -> None:
        retry = 0
        while self._pending():
            rows, kv, usage, audit, waiters = (
                list(self._rows.values()),
                dict(self._kv),
                self._usage,
                self._audit,
                self._waiters,
            )
            self._rows, self._kv, self._usage, self._audit, self._waiters = {}, {}, [], [], []
            try:
                await asyncio.to_thread(self.store.write, rows, kv, usage, audit)
            except StoreError as e:
                self.failing, self.failures = e, self.failures + 1
                for w in waiters:
                    if not w.done():
                        w.set_exception(e)
                # Not written: keep it, under anything newer saved since.
                self._rows = {**{r[0]: r for r in rows}, **self._rows}
                self._kv = {**kv, **self._kv}
                self._usage, self._audit = usage + self._usage, audit + self._audit
                if not self._pending():
                    self._kv["store_checked_at"] = time.time()  # something to try, so recovery is noticed
                await asyncio.sleep(self.RETRY_S[min(retry, len(self.RETRY_S) - 1)])
                retry += 1
                continue
            self.failing, retry = None, 0
            for w in waiters:
                if not w.done():
                    w.set_result(None)
