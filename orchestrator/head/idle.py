"""GPUs idle while jobs wait, live: what the lab feels, and why (core/idleness.py judges
each instant, the same code the simulator uses).

After each scheduling cycle the loop hands over the instant it leaves behind; it holds
until the next cycle, which wakes on every submit and job end and at least every
`loop_interval_s`. Each interval goes into Prometheus counters (GPU-seconds of the
cluster while jobs waited, busy and idle by cause: a dashboard divides their rates)
and into per-minute buckets that answer "the last 24 h" for `gpuq status` and the web
page. Memory only: a restarted orchestrator counts afresh, as Prometheus's counters
do.
"""

from __future__ import annotations

from collections import deque

from orchestrator.core.idleness import Idle, IdleLedger, describe
from orchestrator.head.metrics import Metrics

WINDOW_S = 86400  # what `gpuq status` and the web page sum


class IdleWatch:
    def __init__(self, metrics: Metrics):
        self.metrics = metrics
        self.minutes: deque[tuple[int, IdleLedger]] = deque(maxlen=WINDOW_S // 60 + 1)
        self.last: Idle | None = None
        self.since = 0.0

    def note(self, idle: Idle, now: float) -> None:
        """The instant a cycle leaves behind; the one before it held until `now`."""
        if self.last is not None and now > self.since:
            self._add(self.last, now - self.since, now)
        self.last, self.since = idle, now

    def _add(self, idle: Idle, seconds: float, now: float) -> None:
        if not idle.waiting:
            return
        m = self.metrics
        m.while_waiting.inc(idle.total * seconds)
        m.busy_while_waiting.inc(idle.busy * seconds)
        for cause, n in idle.causes.items():
            m.idle_while_waiting.labels(cause.value).inc(n * seconds)
        minute = int(now // 60)
        if not self.minutes or self.minutes[-1][0] != minute:
            self.minutes.append((minute, IdleLedger()))
        self.minutes[-1][1].add(idle, seconds)

    def window(self, now: float, seconds: float = WINDOW_S) -> IdleLedger:
        """The last `seconds`, to the minute."""
        total, first = IdleLedger(), int((now - seconds) // 60)
        for minute, ledger in self.minutes:
            if minute >= first:
                total.merge(ledger)
        return total

    def summary(self, now: float) -> dict:
        """For `gpuq status` and the web page: the last 24 h, and the line people read."""
        ledger = self.window(now)
        return {"window_s": WINDOW_S, **ledger.summary(), "text": describe(ledger, "last 24 h")}
