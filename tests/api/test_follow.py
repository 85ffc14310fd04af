"""Following a job's output, as a state machine, without Ray: Hypothesis writes the
interleavings (appends, a retry, the job's end judged before or after a read, followers
joining at any offset, reconnects) and every follower must receive exactly the text
the job left, from where it started (serve_app/follow.py over head/output.py)."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.core import joblog
from orchestrator.core.job import JobSpec
from orchestrator.core.queue import JobQueue
from orchestrator.head.output import Output
from serve_app import follow
from serve_app.follow import LogReader
from tests.support import examples


class Job:
    """One job on a one-node cluster: its attempts' logs as the node holds them, and the
    orchestrator's record of it."""

    def __init__(self):
        self.queue = JobQueue()
        spec = JobSpec.parse(
            {"run_id": "r", "user": "alice", "command": "x", "gpu_count": 1, "max_retries": 10}
        )
        self.id = self.queue.enqueue(spec, 0.0).id
        self.files: dict[int, bytearray] = {}
        self.output = Output(self)
        self.start()

    @property
    def record(self):
        return self.queue.get(self.id)

    def start(self) -> None:
        self.queue.schedule(self.id, 0.0, {"n": [0]})
        self.queue.allocate(self.id, 0.0)
        self.queue.start(self.id, 0.0)
        self.files[self.record.attempts] = bytearray()

    def write(self, data: bytes) -> None:
        self.files[self.record.attempts] += data

    def retry(self) -> None:
        if self.record.retries >= 10:
            return
        self.queue.fail(self.id, 0.0, "command failed", exit_code=1)
        self.queue.retry(self.id, 0.0)
        self.start()

    def end(self) -> None:  # the supervisor has written everything before the end is known
        self.queue.complete(self.id, 0.0)

    def text(self) -> bytes:
        return b"".join(
            (joblog.boundary(a) if a > 1 else b"") + bytes(d) for a, d in sorted(self.files.items())
        )

    # --- what the orchestrator calls: the node agent, and the API's call -----------------

    async def call_agent(self, node, method, job_id, attempt, rank, offset, limit, tail, raw):
        data = bytes(self.files.get(attempt, b""))
        await asyncio.sleep(0)  # the world moves on while the answer travels
        return {
            "data": data[offset : offset + limit],
            "offset": offset + len(data[offset : offset + limit]),
            "size": len(data),
            "exists": True,
        }

    async def call(self, method, job_id, attempt, rank, offset, limit, tail, raw):
        await asyncio.sleep(0)
        return await self.output.read(self.record, attempt, rank, offset, limit, tail, raw)


ACTIONS = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.binary(min_size=1, max_size=12)),
        st.tuples(st.just("retry"), st.none()),
        st.tuples(st.just("join"), st.floats(0, 1)),
        st.tuples(st.just("reconnect"), st.integers(0, 5)),
        st.tuples(st.just("wait"), st.integers(1, 6)),
    ),
    max_size=30,
)


@pytest.fixture(autouse=True)
def quick_polls(monkeypatch):
    monkeypatch.setattr(follow, "POLL_S", 0.0)
    monkeypatch.setattr(follow, "FIRST_POLLS_S", (0.0,) * 5)


@settings(max_examples=examples(150), deadline=None, suppress_health_check=list(HealthCheck))
@given(ACTIONS)
def test_every_follower_receives_exactly_the_jobs_text_from_where_it_started(actions):
    asyncio.run(_play(actions))


async def _play(actions) -> None:
    job = Job()
    reader = LogReader(job.call)
    followers: list[dict] = []  # each: where it started, what it got, its task

    def join(offset: int) -> None:
        got = bytearray()

        async def run(at: int) -> None:
            async for chunk in reader.follow(job.id, None, 0, at):
                got.extend(chunk)

        followers.append(
            {"start": offset, "got": got, "task": asyncio.ensure_future(run(offset)), "run": run}
        )

    join(0)
    for kind, arg in actions:
        if kind == "write":
            job.write(arg)
        elif kind == "retry":
            job.retry()
        elif kind == "join":
            join(int(arg * len(job.text())))
        elif kind == "reconnect" and followers:
            f = followers[arg % len(followers)]
            f["task"].cancel()  # the connection drops; the client asks again from what it has
            f["task"] = asyncio.ensure_future(f["run"](f["start"] + len(f["got"])))
        for _ in range(arg if kind == "wait" else 1):
            await asyncio.sleep(0)
    job.end()
    ended = await asyncio.wait_for(
        asyncio.gather(*(f["task"] for f in followers), return_exceptions=True), 10
    )
    assert ended == [None] * len(followers), ended  # every stream ended as streams end, none failed
    text = job.text()
    for f in followers:
        assert bytes(f["got"]) == text[f["start"] :], (f["start"], bytes(f["got"]), text)


def test_a_failed_shared_read_is_read_again_by_whoever_shared_it():
    """The read a cancelled request started dies with it; the follower that shared it
    reads on its own instead of failing its stream (#26: gpuq run after Ctrl-C)."""
    calls = []

    async def call(method, job_id, attempt, rank, offset, limit, tail, raw):
        calls.append(offset)
        if len(calls) == 1:
            await asyncio.sleep(0.01)
            raise RuntimeError("cancelled with the request that started it")
        return {"data": b"", "offset": offset, "done": True}

    async def scenario():
        reader = LogReader(call)
        first = asyncio.ensure_future(reader.read("j", None, 0, 7))
        await asyncio.sleep(0)
        second = await reader.read("j", None, 0, 7)  # shares the first, which fails
        with pytest.raises(RuntimeError):
            await first
        return second

    assert asyncio.run(scenario())["done"] and calls == [7, 7]
