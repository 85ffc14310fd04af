"""Acting on many jobs at once: cancel, hold, release or re-prioritise every job a
selector names (core/selection.py), like `scancel ARRAYID`, `scancel -u alice -t
PENDING` or `scontrol hold`. A part of the service: it is handed the queue, the site,
the clock, the journal, the loop's wake-up and the two stops it needs (JobStops: the
launches part), nothing else.

One call, one pass, one store commit for every job it changes, with one audit row:
cancelling a 10,000-job array is a single transaction, not 10,000. A user acts on
their own jobs only; an admin on anyone's. Filters without ids or an array mean the
caller's own jobs (an admin's: everyone's). Jobs the selector names that the action
cannot change (already ended, not waiting, someone else's) are left as they are and
counted, with why, in the answer.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Protocol

from pydantic import ValidationError

from orchestrator.core.config import Config
from orchestrator.core.errors import Forbidden, InvalidSpec
from orchestrator.core.job import Job, validation_messages
from orchestrator.core.priority import Priority
from orchestrator.core.queue import JobQueue
from orchestrator.core.rights import Caller, check_priority
from orchestrator.core.selection import ACTS_ON, Selector, require_criteria, select
from orchestrator.core.states import JobState
from orchestrator.head.audit import audit
from orchestrator.head.journal import Journal
from orchestrator.head.tasks import Tasks

SHOWN = 100  # job ids listed in the answer; the counts cover all


class JobStops(Protocol):
    """What cancelling asks of the launches part (launches.Launches): stop a running job,
    give a placed one's GPUs back."""

    def stop_job(self, job: Job) -> None: ...
    def give_back(self, job: Job) -> None: ...


class Bulk:
    def __init__(
        self,
        *,
        queue: JobQueue,
        site: Config,
        clock: Callable[[], float],
        journal: Journal,
        jobs: JobStops,
        tasks: Tasks,
    ):
        self.queue, self.site, self.clock, self.journal, self.jobs, self.tasks = (
            queue,
            site,
            clock,
            journal,
            jobs,
            tasks,
        )

    async def run(self, action: str, selector: dict, by: Caller | None = None, priority=None) -> dict:
        """Apply `action` (cancel, hold, release, priority) to the jobs `selector` names."""
        self.journal.writable()
        if action not in ACTS_ON:
            raise InvalidSpec([("action", f"must be one of {', '.join(ACTS_ON)}")])
        try:
            sel = Selector.model_validate(selector)
        except ValidationError as e:
            raise InvalidSpec(validation_messages(e)) from None
        require_criteria(sel)  # before the caller's own name is added to it: {} must not mean "all mine"
        if by is not None and not by.admin:
            if sel.user not in (None, by.user):
                raise Forbidden(
                    "admin",
                    f"you are {by.user}: you may act on your own jobs only (only an admin may "
                    f"select {sel.user}'s)",
                )
            if not (sel.ids or sel.array):  # filters alone mean "my jobs that match", as scancel's do
                sel = sel.model_copy(update={"user": by.user})
        level = None
        if action == "priority":
            try:
                level = Priority.parse(priority)
            except ValueError as e:
                raise InvalidSpec([("priority", str(e))]) from None
        now = self.clock()
        changed: list[Job] = []
        left: Counter[str] = Counter()
        for job in select(self.queue, sel):
            if by is not None and not by.may_act_for(job.user):
                left["belongs to another user"] += 1
            elif job.state not in ACTS_ON[action]:
                left[f"is {job.state.value}"] += 1
            else:
                if level is not None and by is not None:
                    check_priority(by, level, job.priority, self.site.max_priority, self.site.priority_grants)
                changed.append(self._act(action, job, now, level, by))
        if changed:
            await self.journal.save(changed, audit=[audit_row(now, by, action, changed, sel, level)])
            self.tasks.wake()
        return {
            "action": action,
            "matched": len(changed) + sum(left.values()),
            "changed": len(changed),
            "unchanged": dict(left),
            "job_ids": [j.id for j in changed[:SHOWN]],
        }

    def _act(self, action: str, job: Job, now: float, level: Priority | None, by: Caller | None) -> Job:
        who = f" by {by.user}" if by else ""
        if action == "cancel":
            was = job.state
            self.queue.cancel(job.id, now, f"cancelled{who} (bulk)")
            if was in (JobState.RUNNING, JobState.PREEMPTED):
                self.jobs.stop_job(job)
            elif was is JobState.SCHEDULED:
                self.jobs.give_back(job)  # its launch task sees CANCELLED and stops there
        elif action == "hold":
            self.queue.hold(job.id, now, f"held{who}")
        elif action == "release":
            self.queue.release(job.id, now, f"released{who}")
        elif level is not None:  # action is priority: its level was parsed above
            self.queue.set_priority(job.id, level, now)
        return job


def audit_row(
    at: float, by: Caller | None, action: str, jobs: list[Job], sel: Selector, level: Priority | None
) -> tuple:
    detail = {
        "count": len(jobs),
        "selector": sel.model_dump(exclude_defaults=True, mode="json"),
        "first": jobs[0].id,
        "last": jobs[-1].id,
        **({"priority": level.name} if level else {}),
    }
    return audit(at, by, f"{action} (bulk)", jobs[0].id, **detail)
