"""Readers of a job's output for the tests, each in a thread of its own: a REST
follower (`logs?follow=true`) and Ray's own client tailing the log WebSocket (what
`ray job logs --follow` does)."""

from __future__ import annotations

import threading

import httpx

ALICE = {"Authorization": "Bearer alice-token"}


class Reader(threading.Thread):
    """A reader of a job's output in the background; `result()` is what it got, or its error."""

    def __init__(self, api: str, job_id: str):
        super().__init__(daemon=True)
        self.api, self.job_id, self.got, self.error = api, job_id, b"", None
        self.start()

    def run(self) -> None:
        try:
            self.read()
        except Exception as e:  # noqa: BLE001 - raised in the test's own thread by result()
            self.error = e

    def result(self) -> bytes:
        self.join(120)
        assert not self.is_alive(), "the stream did not end with the job"
        if self.error is not None:
            raise self.error
        return self.got


class Follower(Reader):
    """A REST follower (`logs?follow=true`), from `offset`."""

    def __init__(self, api: str, job_id: str, offset: int = 0):
        self.offset = offset
        super().__init__(api, job_id)

    def read(self) -> None:
        with httpx.stream(
            "GET",
            f"{self.api}/jobs/{self.job_id}/logs",
            params={"follow": "true", "offset": self.offset},
            headers=ALICE,
            timeout=httpx.Timeout(30, read=None),
        ) as r:
            assert r.status_code == 200, r.read()
            for chunk in r.iter_bytes():
                self.got += chunk


class RayFollower(Reader):
    """What `ray job logs --follow` reads: Ray's own client tailing the log WebSocket."""

    def read(self) -> None:
        import asyncio

        from ray.job_submission import JobSubmissionClient

        async def tail():
            async for text in JobSubmissionClient(self.api, headers=ALICE).tail_job_logs(self.job_id):
                self.got += text.encode()

        asyncio.run(tail())
