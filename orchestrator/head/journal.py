"""Every change on its way to the store: jobs, usage, audit rows and settings, in one
group commit (groupcommit.py), with the queue's counters beside them and the webhooks
told (notify.py). Parts that change jobs save through here and nowhere else."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from orchestrator.core.job import Job
from orchestrator.core.queue import JobQueue
from orchestrator.head.groupcommit import GroupCommit
from orchestrator.head.notify import Notifier
from orchestrator.head.store import StoreError

log = logging.getLogger("gpuq.orchestrator")


class Journal:
    def __init__(self, durable: GroupCommit, queue: JobQueue, notifier: Notifier, clock: Callable[[], float]):
        self.durable, self.queue, self.notifier, self.clock = durable, queue, notifier, clock

    def save(
        self,
        jobs: list[Job],
        kv: dict | None = None,
        usage: list[tuple] | None = None,
        audit: list[tuple] | None = None,
    ) -> asyncio.Future:
        """Write jobs through to the store; await the result where the next step must not
        happen before the change is durable. `audit` rows (at, who, action, target,
        detail) commit in the same transaction as the change they record."""
        done = self.durable.save(
            jobs, kv={"stats": dict(self.queue.stats.__dict__), **(kv or {})}, usage=usage, audit=audit
        )
        self.notifier.jobs_changed(jobs, self.clock())  # queued for delivery; never waits
        done.add_done_callback(_report_failure)
        return done

    def drop(self, job_ids: Iterable[str]) -> None:
        """Unsave jobs not yet committed (a submit refused before it was durable)."""
        self.durable.drop(job_ids)

    @property
    def failing(self) -> StoreError | None:
        return self.durable.failing

    @property
    def failures(self) -> int:
        return self.durable.failures

    def writable(self) -> None:
        """Refuse a change up front while the store cannot commit (a full disk): it would
        not be durable. Reads go on; running jobs go on; their ends wait in the group
        commit until the store writes again (groupcommit.GroupCommit)."""
        if self.durable.failing is not None:
            raise StoreError(f"{self.durable.failing}; gpuq refuses changes until it can write again")


def _report_failure(done: asyncio.Future) -> None:
    if not done.cancelled() and done.exception() is not None:
        log.error("job store write failed: %s", done.exception())
