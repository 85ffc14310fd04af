"""A job's output, read from its nodes: one attempt's log, or the job's whole text
(every attempt in order, core/joblog.py), from an offset.

Two rules make every byte reach every reader once:
- `done` is judged before the bytes are read: a job that had ended before the read
  has all its output on disk, so a reader told "done" has been given the last byte (a
  job that ends between the read and the judgement is "not done" this time, and the
  next read, which finds nothing more, says so);
- offsets are bytes of the logs, whatever their encoding. Text answers stop short of a
  UTF-8 character a read cut in two (the next read starts with it); raw answers (the
  follow streams) carry the bytes as they are.

The sizes of attempts that have ended are fixed and kept here, so following a retried
job costs one node read per poll.
"""

from __future__ import annotations

from orchestrator.core import joblog
from orchestrator.core.errors import GpuqError, InvalidSpec
from orchestrator.core.job import Job
from orchestrator.core.submission import MAX_LOG_OFFSET
from orchestrator.node.packagestore import SETUP_FAILED


class LogUnreachable(GpuqError):
    """An attempt's log is on a node that does not answer (it is down): the job's whole
    text cannot be placed past it until the node is back (503: try again)."""


class Output:
    def __init__(self, backend):
        self.backend = backend
        self._sizes: dict[tuple[str, int, int], int] = {}  # (job, attempt, rank) -> size of an ended attempt

    async def read(
        self, job: Job, attempt: int | None, rank: int, offset: int, limit: int, tail: int | None, raw: bool
    ) -> dict:
        """{data, offset, size, exists, attempt, done}. `attempt` None: the job's whole
        text; a number: that attempt's log alone."""
        done = job.state.is_terminal  # before anything is read (see the module's doc)
        if not 0 <= offset <= MAX_LOG_OFFSET:
            raise InvalidSpec([("offset", f"must be between 0 and {MAX_LOG_OFFSET}")])
        if attempt is not None:
            return await self._one(job, attempt, rank, offset, limit, tail, raw, done)
        ranks = max([1, *(len(p) for p in job.placements.values())])
        if not 0 <= rank < ranks:
            raise InvalidSpec([("rank", f"must be between 0 and {ranks - 1} (the job's bundles)")])
        parts = await self._parts(job, rank, done)
        size = joblog.total(parts)
        if tail is not None:
            last = parts[-1].attempt
            if size is None and last is not None:  # the last attempt grows: its size now
                parts = parts[:-1] + [parts[-1]._replace(size=await self._size(job, last, rank))]
                size = joblog.total(parts)
            offset = max(0, (size or 0) - tail)
        data = b""
        for part, local, most in joblog.ranges(parts, offset, max(0, limit)):
            if part.attempt is None:
                chunk = part.text[local : local + most]
            else:
                chunk = await self._bytes(job, part.attempt, rank, local, most)
            data += chunk
            if len(chunk) < most:
                break
        known = size if size is not None else offset + len(data)
        return self._answer(
            data,
            offset,
            known,
            raw,
            done and (size is None or offset + len(data) >= size),
            max(p.attempt or 0 for p in parts) if parts else 0,
            exists=bool(parts),
        )

    async def _one(
        self,
        job: Job,
        attempt: int,
        rank: int,
        offset: int,
        limit: int,
        tail: int | None,
        raw: bool,
        done: bool,
    ) -> dict:
        if not 1 <= attempt <= max(1, job.attempts):
            raise InvalidSpec(
                [
                    (
                        "attempt",
                        f"must be between 1 and {job.attempts} (the job's attempts so far)"
                        if job.attempts
                        else "the job has not started yet",
                    )
                ]
            )
        self._check_rank(job, attempt, rank)
        node = job.node_of_rank(attempt, rank)
        if node is None:
            return self._answer(b"", offset, 0, raw, done, attempt, exists=False)
        out = await self._agent(node, job, attempt, rank, offset, limit, tail)
        ended = done or attempt < job.attempts
        return self._answer(
            out["data"],
            out["offset"] - len(out["data"]),
            out["size"],
            raw,
            ended and out["offset"] >= out["size"],
            attempt,
            exists=out["exists"],
        )

    async def _parts(self, job: Job, rank: int, done: bool) -> list[joblog.Segment]:
        # One count of attempts for the whole answer: a retry may start while sizes are asked.
        attempts = job.attempts
        said = "".join(e.reason for e in job.events if e.trigger == SETUP_FAILED).encode() if done else b""
        sizes = {a: await self._size(job, a, rank) for a in range(1, attempts)}
        last = await self._size(job, attempts, rank) if done and attempts else None
        return joblog.segments(attempts, sizes, last, said)

    async def _size(self, job: Job, attempt: int, rank: int) -> int:
        """An attempt's log size; kept once the attempt has ended (a later one started)."""
        key = (job.id, attempt, rank)
        if key in self._sizes:
            return self._sizes[key]
        # Judged before the read, as `done` is: an attempt that ended while its size was
        # being read may have grown after the read saw it.
        ended = attempt < job.attempts or job.state.is_terminal
        node = job.node_of_rank(attempt, rank)
        size = 0
        if node is not None:
            size = (await self._agent(node, job, attempt, rank, 0, 0, None))["size"]
        if ended:
            self._sizes[key] = size
        return size

    async def _bytes(self, job: Job, attempt: int, rank: int, offset: int, limit: int) -> bytes:
        node = job.node_of_rank(attempt, rank)
        if node is None:
            return b""
        return (await self._agent(node, job, attempt, rank, offset, limit, None))["data"]

    async def _agent(
        self, node: str, job: Job, attempt: int, rank: int, offset: int, limit: int, tail: int | None
    ) -> dict:
        try:
            return await self.backend.call_agent(
                node, "read_log", job.id, attempt, rank, offset, limit, tail, True
            )
        except GpuqError:
            raise
        except Exception as e:  # its agent is gone with its node, or does not answer in time
            raise LogUnreachable(
                f"the log of attempt {attempt} is on {node}, which does not answer now "
                f"({type(e).__name__}); try again when it is back"
            ) from None

    @staticmethod
    def _check_rank(job: Job, attempt: int, rank: int) -> None:
        ranks = max(1, len(job.placements.get(attempt, {})))
        if not 0 <= rank < ranks:
            raise InvalidSpec([("rank", f"must be between 0 and {ranks - 1} (the attempt's bundles)")])

    @staticmethod
    def _answer(
        data: bytes, offset: int, size: int, raw: bool, done: bool, attempt: int, exists: bool
    ) -> dict:
        if not raw and not done:
            data = data[: joblog.complete_utf8(data)]  # the rest comes with the next read
        return {
            "data": data if raw else data.decode("utf-8", "replace"),
            "offset": offset + len(data),
            "size": size,
            "exists": exists,
            "attempt": attempt,
            "done": done,
        }
