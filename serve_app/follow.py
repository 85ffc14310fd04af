"""Following a job's output: many followers, few reads, every byte once.

A follower reads the job's whole text (every attempt in order, with a line between
them: orchestrator/core/joblog.py) as bytes, from its offset, until the orchestrator
says the job is done and nothing is left. Offsets are the same for every reader, so a
follower that reconnects at the offset it reached gets the rest and nothing twice.

Followers of the same log at the same offset (everyone who started together, and
anyone who has caught up) share one read: a read in flight, or finished in the last
POLL_S, is answered to all who ask for it (a follower's first fast polls share only
reads in flight). A hundred followers of one job cost one read per poll instead of a
hundred (measured in docs/BENCHMARKS.md, scripts/bench_abuse.py).

A shared read belongs to the request that started it, and Ray cancels a request's
calls when its client goes away. So a read that failed is never handed on: whoever
shares it reads again on their own (measured: the reconnect that `gpuq run` makes
after Ctrl-C shared the read its first stream had started, and died with it: "lost
gpuq", exit 3, 3 times in 21). An orchestrator that is briefly unavailable (a restart)
is waited for; a follower gives up only after FOLLOW_PATIENCE_S of that, and then
fails the stream (its client sees the stream cut, and may resume from its offset).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

from serve_app.errors import ApiError

POLL_S = 0.25
# A follower opened with its job (`gpuq run`) polls faster at first, so the first line
# shows within a tenth of a second of being written; then at POLL_S.
FIRST_POLLS_S = (0.05, 0.05, 0.1, 0.1, 0.2)
CHUNK = 1 << 20
FOLLOW_PATIENCE_S = 60.0


class LogReader:
    def __init__(self, call: Callable[..., Awaitable[dict]]):
        self._call = call
        self._reads: dict[tuple, asyncio.Future] = {}
        self._done_at: dict[tuple, float] = {}

    async def read(
        self, job_id: str, attempt: int | None, rank: int, offset: int, fresh: bool = False
    ) -> dict:
        """The orchestrator's `logs` answer (bytes) from `offset`, shared with anyone
        asking the same; `fresh`: not one that has already finished."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        for key, at in list(self._done_at.items()):
            if now - at > POLL_S:
                del self._done_at[key]
                self._reads.pop(key, None)
        key = (job_id, attempt, rank, offset)
        read = self._reads.get(key)
        if read is not None and fresh and read.done():
            read = None  # a newer read replaces it for everyone
        mine = read is None
        if read is None:
            read = self._reads[key] = asyncio.ensure_future(
                self._call("logs", job_id, attempt, rank, offset, CHUNK, None, True)
            )
            read.add_done_callback(lambda done: self._finished(key, done, loop.time()))
        try:
            return await asyncio.shield(read)
        except Exception:
            if self._reads.get(key) is read:
                del self._reads[key]
                self._done_at.pop(key, None)
            if mine:
                raise
        return await self.read(job_id, attempt, rank, offset)  # someone else's read failed: one of our own

    def _finished(self, key: tuple, read: asyncio.Future, at: float) -> None:
        if self._reads.get(key) is read:  # still the read others are handed (not one that failed)
            self._done_at[key] = at

    async def follow(self, job_id: str, attempt: int | None, rank: int, offset: int) -> AsyncIterator[bytes]:
        """The output from `offset` as it is written, until the job has ended and all of
        it was read. `attempt` None: the job's whole text; a number: that attempt's log."""
        loop = asyncio.get_running_loop()
        quiet = 0  # polls in a row that found nothing
        waiting_since = None  # since when the orchestrator has been unavailable
        while True:
            early = not offset and quiet < len(FIRST_POLLS_S)
            try:
                out = await self.read(job_id, attempt, rank, offset, fresh=early)
            except ApiError as e:
                if e.status != 503:
                    raise
                waiting_since = waiting_since or loop.time()
                if loop.time() - waiting_since > FOLLOW_PATIENCE_S:
                    raise
                await asyncio.sleep(1.0)
                continue
            waiting_since = None
            if out["data"]:
                offset = out["offset"]
                yield out["data"]
            elif out["done"]:
                return
            else:
                await asyncio.sleep(FIRST_POLLS_S[quiet] if early else POLL_S)
                quiet += 1
