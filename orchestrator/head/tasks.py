"""The service's asyncio tasks, and the scheduling loop's wake-up.

Every part runs on the actor's one event loop. What a part starts in the background
is spawned here, so that closing the service cancels all of it; what should make the
loop plan again soon (a submit, a job's end, a node back) calls `wake`."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


class Wakeup:
    """Something to sleep on that a call can cut short: the loop's wake-up, the watch's
    asked-for look."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def set(self) -> None:
        self._event.set()

    async def wait(self, timeout: float) -> None:
        """Sleep up to `timeout`, less if set meanwhile; either way, unset after."""
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            pass
        self._event.clear()


class Tasks:
    def __init__(self) -> None:
        self._wake = Wakeup()
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
        await self._wake.wait(timeout)

    def cancel(self) -> None:
        for task in list(self._tasks):
            task.cancel()
