"""Ended jobs out of the orchestrator's memory: kept in the store, read from it.

The orchestrator keeps live jobs and those that ended within `job_memory_s` (so that a
retried submit's idempotency key, a dependency on a job just finished, the web page's
recent list cost no read); older ones leave its memory (service.forget_history), and
a restart loads only live jobs and that recent history. Every read still finds them:
`gpuq show`, `logs` and `jobs`, the Ray Jobs routes and the web page ask here when a
job is not in memory. After `job_retention_days` they leave the store too (`prune`,
in batches), as Slurm's PurgeJobAfter does; what they used (the usage table behind
`gpuq usage`) and the audit trail stay.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter

from orchestrator.core.errors import AmbiguousJobId, IllegalTransition, JobNotFound
from orchestrator.core.job import Job
from orchestrator.core.queue import MIN_PREFIX, JobQueue
from orchestrator.core.states import JobState
from orchestrator.core.submission import ARRAY_PREFIX
from orchestrator.head.store import Store

PRUNE_BATCH = 1000


class History:
    def __init__(self, store: Store):
        self.store = store

    def job(self, job_id: str) -> Job | None:
        rows = self.store.read("SELECT doc FROM jobs WHERE id = ?", (job_id,))
        return Job.model_validate_json(rows[0][0]) if rows else None

    def ids_starting(self, prefix: str, limit: int = 6) -> list[str]:
        """Ids that start with `prefix` (a range on the primary key, not a scan)."""
        return [
            r[0]
            for r in self.store.read(
                "SELECT id FROM jobs WHERE id >= ? AND id < ? ORDER BY id LIMIT ?",
                (prefix, prefix + "\U0010ffff", limit),
            )
        ]

    def array(self, array_id: str) -> list[Job]:
        """An array's members in the store, by index (a scan: only for an array no
        longer in memory, which a new dependency names)."""
        rows = self.store.read("SELECT doc FROM jobs WHERE json_extract(doc, '$.array_id') = ?", (array_id,))
        return sorted((Job.model_validate_json(r[0]) for r in rows), key=lambda j: j.array_index or 0)

    def ended_before(self, cutoff: float, state: JobState | None, user: str | None, limit: int) -> list[Job]:
        """Jobs that ended before `cutoff` (the ones not in memory), newest first."""
        where, args = _ended_before(cutoff, state, user)
        rows = self.store.read(
            f"SELECT doc FROM jobs WHERE {where} ORDER BY seq DESC LIMIT ?", (*args, limit)
        )
        return [Job.model_validate_json(r[0]) for r in rows]

    def count_before(self, cutoff: float, state: JobState | None, user: str | None) -> int:
        where, args = _ended_before(cutoff, state, user)
        return self.store.read(f"SELECT count(*) FROM jobs WHERE {where}", args)[0][0]

    def counts_before(self, cutoff: float) -> Counter[JobState]:
        rows = self.store.read(
            "SELECT state, count(*) FROM jobs WHERE ended_at < ? GROUP BY state", (cutoff,)
        )
        return Counter({JobState(state): n for state, n in rows})

    def last_seq(self) -> int:
        return self.store.read("SELECT coalesce(max(seq), 0) FROM jobs")[0][0]

    def prune(self, before: float) -> int:
        """Remove jobs that ended before `before`, a batch per write so the store is never
        held long; how many went."""
        gone = 0
        while (n := self.store.delete_ended(before, PRUNE_BATCH)) > 0:
            gone += n
            if n < PRUNE_BATCH:
                break
        return gone


def _ended_before(cutoff: float, state: JobState | None, user: str | None) -> tuple[str, tuple]:
    """A WHERE clause and its parameters: ended before `cutoff`, in `state`, `user`'s.
    The clause is built from fixed strings only; the values are parameters."""
    where, args = ["ended_at < ?"], [cutoff]  # type: list[str], list[float | str]
    if state is not None:
        where.append("state = ?")
        args.append(state.value)
    if user is not None:
        where.append("user = ?")
        args.append(user)
    return " AND ".join(where), tuple(args)


class Records:
    """Where a job is: in memory (the queue: live jobs and recent history) or only in the
    store (History: ended before `cutoff`). Reads go through here, so a job that left
    memory is still found; changes to one are refused as to any ended job."""

    def __init__(self, queue: JobQueue, history: History, cutoff: float):
        self.queue, self.history, self.cutoff = queue, history, cutoff

    def find(self, ref: str) -> Job:
        """The job `ref` names (a whole id, a prefix, ARRAY_INDEX), wherever it is."""
        try:
            return self.queue.get(self.queue.resolve(ref))
        except JobNotFound:
            pass
        if (job := self.history.job(ref)) is not None:
            return job
        head, _, index = ref.rpartition("_")
        if head.startswith(ARRAY_PREFIX) and index.isdigit() and (members := self.history.array(head)):
            found = [m for m in members if m.array_index == int(index)]
            if found:
                return found[0]
        matches = self.history.ids_starting(ref) if len(ref) >= MIN_PREFIX else []
        if len(matches) > 1:
            raise AmbiguousJobId(ref, matches)
        if matches and (job := self.history.job(matches[0])) is not None:
            return job
        raise JobNotFound(ref)

    def live(self, ref: str, doing: str) -> str:
        """The id of the job in memory that `ref` names; a job only in the store ended
        long ago, and `doing` it is refused as for any ended job (409)."""
        try:
            return self.queue.resolve(ref)
        except JobNotFound:
            job = self.find(ref)
            raise IllegalTransition(job.state.value, doing, [], job.id) from None

    def members(self, ref: str) -> list[Job]:
        """The jobs a dependency target names: an array's members, or one job."""
        if self.queue.resolve_array(ref) == ref:
            return self.queue.array(ref)
        if ref in self.queue:
            return [self.queue.get(ref)]
        if ref.startswith(ARRAY_PREFIX):
            return self.history.array(ref)
        return [self.find(ref)]

    def page(
        self, state: JobState | None, user: str | None, limit: int, offset: int
    ) -> tuple[list[Job], int]:
        """Newest first, memory and store together: a page of them, and how many in all."""
        mine = [
            j
            for j in self.queue.jobs()
            if (state is None or j.state is state) and (user is None or j.user == user)
        ]
        mine.sort(key=lambda j: -j.seq)
        older = [
            j
            for j in self.history.ended_before(self.cutoff, state, user, offset + limit)
            if j.id not in self.queue
        ]
        merged = heapq.merge(mine, older, key=lambda j: -j.seq)
        return list(itertools.islice(merged, offset, offset + limit)), len(mine) + self.history.count_before(
            self.cutoff, state, user
        )

    def forget(self, now: float, window_s: float, keep: set[str]) -> list[Job]:
        """Ended jobs older than `window_s` leave memory (but those in `keep`); they are
        in the store already (the caller checks that it writes)."""
        cutoff = now - window_s
        old = [
            j
            for j in self.queue.jobs()
            if j.state.is_terminal and j.id not in keep and j.state_times.get(j.state, now) < cutoff
        ]
        for job in old:
            self.queue.evict(job.id)
        self.cutoff = max(self.cutoff, cutoff)
        return old
