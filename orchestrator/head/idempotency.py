"""One key, one job: the idempotency keys of submits (and Ray's submission_id).

A client that timed out retries with the same key and must get the first job back,
also when the retries race the first submit while it is being stored. So a key is
claimed before anything awaits: later callers wait for the first, then get its job, or
take the key over if the first failed (nothing was stored, nothing was accepted).
"""

from __future__ import annotations

import asyncio

from orchestrator.core.submission import check_key


class Keys:
    def __init__(self) -> None:
        self._made: dict[tuple[str, str], str] = {}  # (user, key) -> the job it made
        self._claims: dict[tuple[str, str], asyncio.Event] = {}  # keys whose first submit is being stored

    def known(self, user: str, key: str, job_id: str) -> None:
        """A stored job's key (at start-up)."""
        self._made[(user, key)] = job_id

    def forget(self, user: str, key: str) -> None:
        """Its job left memory (history.py): the key is free again after job_memory_s."""
        self._made.pop((user, key), None)

    async def claim(self, user: str, key: str | None) -> str | None:
        """The job this key already made, or None: the key is then the caller's until
        `settle`. No await comes between the look and the claim."""
        if key is None:
            return None
        check_key(key)
        while True:
            if (made := self._made.get((user, key))) is not None:
                return made
            pending = self._claims.get((user, key))
            if pending is None:
                self._claims[(user, key)] = asyncio.Event()
                return None
            await pending.wait()  # the first is being stored: it made the job, or failed

    def settle(self, user: str, key: str | None, job_id: str | None) -> None:
        """The claimed key made `job_id` (stored), or nothing (None: the next may try)."""
        if key is None:
            return
        if job_id is not None:
            self._made[(user, key)] = job_id
        self._claims.pop((user, key)).set()
