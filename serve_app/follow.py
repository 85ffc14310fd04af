"""Following a job's output: many followers, few reads.

Each follower polls the orchestrator for what was written past its offset. Followers
of the same log at the same offset (everyone who started together, and anyone who has
caught up) share one read: a read in flight, or finished in the last POLL_S, is
answered to all who ask for it (a follower's first fast polls share only reads in flight). A hundred followers of one job cost one read per
poll instead of a hundred (measured in docs/BENCHMARKS.md, scripts/bench_abuse.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

POLL_S = 0.25
# A follower opened with its job (`gpuq run`) polls faster at first, so the first line
# shows within a tenth of a second of being written; then at POLL_S.
FIRST_POLLS_S = (0.05, 0.05, 0.1, 0.1, 0.2)
CHUNK = 1 << 20


class LogReader:
    def __init__(self, call: Callable[..., Awaitable[dict]]):
        self._call = call
        self._reads: dict[tuple, asyncio.Future] = {}
        self._done_at: dict[tuple, float] = {}

    async def read(self, job_id: str, attempt: int | None, rank: int, offset: int, fresh: bool = False) -> dict:
        """The orchestrator's `logs` answer from `offset`, shared with anyone asking the
        same; `fresh`: not one that has already finished."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        for key, at in list(self._done_at.items()):
            if now - at > POLL_S:
                del self._done_at[key], self._reads[key]
        key = (job_id, attempt, rank, offset)
        read = self._reads.get(key)
        if read is not None and fresh and read.done():
            read = None  # a newer read replaces it for everyone
        if read is None:
            read = self._reads[key] = asyncio.ensure_future(self._call("logs", job_id, attempt, rank, offset, CHUNK,
                                                                       None))
            read.add_done_callback(lambda _: self._done_at.__setitem__(key, loop.time()))
        return await asyncio.shield(read)

    async def follow(self, job_id: str, attempt: int | None, rank: int, offset: int,
                     current: int | None = None) -> AsyncIterator[str]:
        """The output from `offset` as it is written, until the job has ended and all of
        it was read. `attempt` None follows the latest attempt: a retry starts over from
        its first byte. `current`: the attempt `offset` is in, if known."""
        quiet = 0  # polls in a row that found nothing
        while True:
            early = not offset and quiet < len(FIRST_POLLS_S)
            out = await self.read(job_id, attempt, rank, offset, fresh=early)
            if attempt is None and current is not None and out["attempt"] != current:
                current, offset = out["attempt"], 0
                continue
            current = out["attempt"]
            if out["data"]:
                offset = out["offset"]
                yield out["data"]
            elif out["done"]:
                return
            else:
                await asyncio.sleep(FIRST_POLLS_S[quiet] if early else POLL_S)
                quiet += 1
