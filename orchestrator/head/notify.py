"""Notifications: job and node events POSTed to the webhooks the site configured
(Slurm's --mail-type, for a lab that lives in chat).

    webhooks = [{ name = "lab-chat", url = "https://chat.example/hook", events = ["failed", "completed",
                  "preempted", "node_down"], secret_env = "GPUQ_CHAT_SECRET" }]

Events: started, completed, failed (for good: a failure that will be retried is
`requeued`), cancelled, preempted, requeued, node_down. A webhook with `opt_in = true`
hears only about jobs whose owner asked (`gpuq submit --notify END,FAIL`, Slurm's
words); the others hear about every job. Users never name a URL: only the site's
webhooks are ever called, so no one can make gpuq reach into the network for them.

Each delivery is a JSON POST of the job's fields and the transition, with
`X-Gpuq-Event`, `X-Gpuq-Delivery` (an id: deliveries are at least once, a receiver
dedupes by it) and, when the webhook has a secret, `X-Gpuq-Signature: sha256=<HMAC of
the body>`. The scheduling loop only appends to a queue per webhook; one task per
webhook delivers in order, retrying with backoff (tenacity) for up to
`webhook_retry_for_s`. A webhook that is down keeps up to `webhook_buffer` events per
job owner, and as many site events (node_down) apart: one user's burst never pushes
out another's notices nor a node's, and the owners take turns (Outbox). Past that the
oldest of that owner are dropped, counted in `gpuq_webhook_dropped_total` and listed
among the deliveries. Admins read the recent deliveries at GET /webhooks/deliveries.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import time
import uuid
from collections import deque
from collections.abc import Callable

import aiohttp
from tenacity import AsyncRetrying, RetryError, retry_if_exception_type, stop_after_delay, wait_exponential

from orchestrator.core.config import Webhook
from orchestrator.core.job import Job
from orchestrator.core.states import JobState

log = logging.getLogger("gpuq.notify")
RECENT = 200  # deliveries kept for admins to read
# Slurm's --mail-type words, and the events each covers.
SLURM_TYPES = {
    "BEGIN": {"started"},
    "END": {"completed", "failed", "cancelled"},
    "FAIL": {"failed"},
    "REQUEUE": {"requeued", "preempted"},
}
SLURM_TYPES["ALL"] = set().union(*SLURM_TYPES.values())
BY_STATE = {
    JobState.RUNNING: "started",
    JobState.COMPLETED: "completed",
    JobState.FAILED: "failed",
    JobState.CANCELLED: "cancelled",
    JobState.PREEMPTED: "preempted",
}


class Refused(Exception):
    """The receiver answered, but not 2xx (or did not answer): try again later."""


def event_of(before: JobState | None, job: Job) -> str | None:
    """The notification a state change makes, if any."""
    if before is None or before is job.state:
        return None
    if job.state is JobState.QUEUED and before in (JobState.RUNNING, JobState.PREEMPTED, JobState.ALLOCATING):
        return "requeued"
    return BY_STATE.get(job.state)


def wants(hook: Webhook, event: str, job: Job | None) -> bool:
    if event not in hook.events:
        return False
    if not hook.opt_in or job is None:  # a node's events have no owner to opt in
        return True
    return any(event in SLURM_TYPES.get(t, set()) for t in job.spec.notify or [])


class Outbox:
    """One webhook's waiting events: a bounded queue per job owner and one for the site's
    own events, delivered site first, then the owners in turn."""

    SITE = ""  # the owner of events with no job (node_down)

    def __init__(self, per_owner: int):
        self.per_owner = per_owner
        self.queues: dict[str, deque] = {}
        self.turns: deque[str] = deque()  # owners with events waiting, next first

    def __len__(self) -> int:
        return sum(len(q) for q in self.queues.values())

    def put(self, owner: str, body: dict) -> dict | None:
        """Queue `body`; the event dropped to make room (that owner's oldest), if any."""
        q = self.queues.get(owner)
        if q is None:
            q = self.queues[owner] = deque()
            if owner != self.SITE:
                self.turns.append(owner)
        dropped = q.popleft() if len(q) >= self.per_owner else None
        q.append(body)
        return dropped

    def next(self) -> dict | None:
        if self.queues.get(self.SITE):
            return self.queues[self.SITE][0]
        return self.queues[self.turns[0]][0] if self.turns else None

    def done(self, body: dict) -> None:
        """`body` was delivered (or given up on): off its queue, unless dropped meanwhile;
        its owner goes to the back of the turns."""
        for owner, q in list(self.queues.items()):
            if q and q[0] is body:
                q.popleft()
                if owner != self.SITE:
                    self.turns.remove(owner)
                    if q:
                        self.turns.append(owner)
                if not q:
                    del self.queues[owner]
                return


class Notifier:
    def __init__(
        self,
        hooks: list[Webhook],
        buffer: int,
        retry_for_s: float,
        on_drop=None,
        max_wait_s: float = 30.0,
        clock: Callable[[], float] = time.time,
    ):
        self.hooks = hooks  # each named (Config)
        self.clock = clock  # the service's: when each delivery was made or dropped
        self.retry_for_s, self.max_wait_s = retry_for_s, max_wait_s
        self.queues = {h.name: Outbox(buffer) for h in self.hooks}
        self.ready = {h.name: asyncio.Event() for h in self.hooks}
        self.recent: deque[dict] = deque(maxlen=RECENT)
        self.on_drop = on_drop or (lambda hook: None)
        self.states: dict[str, JobState] = {}  # the state each job was last seen in

    @classmethod
    def for_site(cls, site, on_drop, jobs, clock: Callable[[], float] = time.time) -> Notifier:
        """The site's webhooks; `jobs` as loaded (their states are not news)."""
        notifier = cls(
            site.webhooks,
            site.webhook_buffer,
            site.webhook_retry_for_s,
            on_drop,
            site.webhook_retry_max_wait_s,
            clock,
        )
        notifier.seen(jobs)
        return notifier

    def start(self) -> list[asyncio.Task]:
        """One delivering task per webhook (the service cancels them when it closes)."""
        return [asyncio.get_event_loop().create_task(self._deliver_all(h)) for h in self.hooks]

    def seen(self, jobs) -> None:
        """Jobs as loaded: their current states are not news."""
        if not self.hooks:
            return
        for job in jobs:
            self.states[job.id] = job.state

    def jobs_changed(self, jobs: list[Job], now: float) -> None:
        """Called with every batch of jobs written to the store: queue what changed.
        Without webhooks it does nothing, not even remember states (it is on every save)."""
        if not self.hooks:
            return
        for job in jobs:
            before = self.states.get(job.id)
            self.states[job.id] = job.state
            event = event_of(before, job) if before is not None else None
            if event and before is not None:
                self._queue(event, now, job, {"from": before.value, "to": job.state.value})

    def node_down(self, node: str, why: str, now: float) -> None:
        self._queue("node_down", now, None, {"node": node, "why": why})

    def _queue(self, event: str, now: float, job: Job | None, change: dict) -> None:
        for hook in self.hooks:
            if not wants(hook, event, job):
                continue
            body = {
                "event": event,
                "time": now,
                "delivery": str(uuid.uuid4()),
                **change,
                **({"job": _job_fields(job)} if job else {}),
            }
            dropped = self.queues[hook.name].put(job.user if job else Outbox.SITE, body)
            if dropped is not None:  # that owner's oldest went, and that is said
                self.on_drop(hook.name)
                self.recent.append(
                    {
                        "webhook": hook.name,
                        "event": dropped["event"],
                        "delivery": dropped["delivery"],
                        "result": "dropped: the webhook's buffer was full",
                        "at": self.clock(),
                    }
                )
            self.ready[hook.name].set()

    async def _deliver_all(self, hook: Webhook) -> None:
        q, ready = self.queues[hook.name], self.ready[hook.name]
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            while True:
                body = q.next()
                if body is None:
                    ready.clear()
                    await ready.wait()
                    continue
                result = await self._deliver(session, hook, body)
                q.done(body)
                self.recent.append(
                    {
                        "webhook": hook.name,
                        "event": body["event"],
                        "delivery": body["delivery"],
                        "result": result,
                        "at": self.clock(),
                    }
                )

    async def _deliver(self, session: aiohttp.ClientSession, hook: Webhook, body: dict) -> str:
        data = json.dumps(body).encode()
        headers = {
            "Content-Type": "application/json",
            "X-Gpuq-Event": body["event"],
            "X-Gpuq-Delivery": body["delivery"],
        }
        secret = os.environ.get(hook.secret_env, "") if hook.secret_env else ""
        if secret:
            headers["X-Gpuq-Signature"] = (
                "sha256=" + hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()
            )
        tries = 0
        try:
            async for attempt in AsyncRetrying(
                wait=wait_exponential(multiplier=0.2, max=self.max_wait_s),
                stop=stop_after_delay(self.retry_for_s),
                retry=retry_if_exception_type(Refused),
            ):
                with attempt:
                    tries += 1
                    try:
                        async with session.post(hook.url, data=data, headers=headers) as r:
                            if not 200 <= r.status < 300:
                                raise Refused(f"HTTP {r.status}")
                    except (TimeoutError, aiohttp.ClientError, OSError) as e:
                        raise Refused(type(e).__name__) from None
        except RetryError as e:
            log.warning("webhook %s: gave up on %s after %d tries", hook.name, body["delivery"], tries)
            return f"failed after {tries} tries over {self.retry_for_s:.0f} s: {e.last_attempt.exception()}"
        return f"delivered (try {tries})"


def _job_fields(job: Job) -> dict:
    """What a notice says of a job: its shape and outcome, never its command or env."""
    return {
        "id": job.id,
        "run_id": job.spec.run_id,
        "name": job.spec.name,
        "user": job.user,
        "state": job.state.value,
        "gpu_count": job.gpus,
        "priority": job.priority.name,
        "attempts": job.attempts,
        "exit_code": job.exit_code,
        "failure_reason": job.failure_reason,
        "array_id": job.array_id,
    }
