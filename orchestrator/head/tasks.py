"""The service's asyncio tasks, and the scheduling loop's wake-up.

Every part runs on the actor's one event loop. What a part starts in the background
is spawned here, so that closing the service cancels all of it; what should make the
loop plan again soon (a submit, a job's end, a node back) calls `wake`."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


class Tasks:
    def __init__(self) -> None:
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task:
        task = asyncio.get_event_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def track(self, task: asyncio.Task) -> None:
        """A task started elsewhere (the notifier's senders) that closing must cancel too."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def wake(self) -> None:
        self._wake.set()

    async def until_woken(self, timeout: float) -> None:
        """Sleep up to `timeout`, less if something woke the loop meanwhile."""
        try:
            await asyncio.wait_for(self._wake.wait(), timeout)
        except TimeoutError:
            pass
        self._wake.clear()

    def cancel(self) -> None:
        for task in list(self._tasks):
            task.cancel()
