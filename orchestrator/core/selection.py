"""Which jobs a bulk action touches, chosen as `scancel` chooses: by id (a job, an
array member `ARRAY_INDEX`, or a whole array), and by user, state and name prefix.

Ids and `array` name a set; the other criteria filter it (all must hold). Without ids
or an array, the filters apply to every job: `--user alice --state queued` is
"alice's waiting jobs". A selector with no criterion at all is refused: nobody means
"every job" by leaving everything out. Pure: the orchestrator applies the action
(head/bulk.py), the rights are checked there.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from orchestrator.core.errors import InvalidSpec
from orchestrator.core.job import Job
from orchestrator.core.queue import JobQueue
from orchestrator.core.states import JobState

MAX_IDS = 10_000
# The states an action can change; a selected job in another state is left as it is.
ACTS_ON = {
    "cancel": frozenset(s for s in JobState if not s.is_terminal),
    "hold": frozenset({JobState.QUEUED}),
    "release": frozenset({JobState.HELD}),
    "priority": frozenset({JobState.QUEUED, JobState.HELD}),
}


class Selector(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: list[str] = Field(
        default_factory=list,
        max_length=MAX_IDS,
        description="job ids (or unique prefixes), ARRAY_INDEX members, or array ids",
    )
    array: str | None = Field(default=None, description="every member of this array")
    user: str | None = Field(default=None, description="only this user's jobs")
    states: list[JobState] = Field(default_factory=list, description="only jobs in these states")
    name: str | None = Field(
        default=None, min_length=1, description="only jobs whose run id or name starts with this"
    )

    def is_empty(self) -> bool:
        return not (self.ids or self.array or self.user or self.states or self.name)


def require_criteria(sel: Selector) -> None:
    """Refuse a selector that names nothing: nobody means "every job" by it."""
    if sel.is_empty():
        raise InvalidSpec(
            [
                (
                    "selector",
                    "name jobs: ids, array, user, states or name (nothing means no job, not every job)",
                )
            ]
        )


def select(queue: JobQueue, sel: Selector) -> list[Job]:
    """The jobs `sel` names, each once, in submission order. Raises JobNotFound (or
    AmbiguousJobId) for an id that names nothing (or several): nothing is done then."""
    require_criteria(sel)
    if sel.ids or sel.array:
        picked: dict[str, Job] = {}
        for ref in [*sel.ids, *([sel.array] if sel.array else [])]:
            array = queue.resolve_array(ref)
            members = queue.array(array) if array else [queue.get(queue.resolve(ref))]
            picked.update((j.id, j) for j in members)
        jobs = sorted(picked.values(), key=lambda j: j.seq)
    else:
        jobs = list(queue.jobs())
    states = set(sel.states)
    return [
        j
        for j in jobs
        if (sel.user is None or j.user == sel.user)
        and (not states or j.state in states)
        and (
            sel.name is None or j.spec.run_id.startswith(sel.name) or (j.spec.name or "").startswith(sel.name)
        )
    ]
