"""Job dependencies in Slurm's words: `afterok:ID[:ID…]`, `afternotok:`, `afterany:`,
`after:` (started), several conditions joined with `,` (all must hold).

A target is a job or an array (an array is met when every member is). The service
resolves the ids at submit (so a dependency names whole ids only) and asks `verdict`
each cycle: met (the job joins the line), waiting (it stays out of the line: no
start, no reservation), or never (a target ended the wrong way: the job is cancelled,
or held if the site says so). Pure.

A cycle cannot be written: a dependency names jobs that exist when it is submitted,
and it cannot be changed afterwards.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from orchestrator.core.states import JobState

if TYPE_CHECKING:  # job.py checks a dependency's syntax with parse(): no import back
    from orchestrator.core.job import Job

KINDS = {"after": "start", "afterok": "complete", "afternotok": "fail", "afterany": "end"}
HELP = (
    "must be Slurm's syntax: afterok:ID[:ID...], afternotok:, afterany: or after:, several joined with ',' "
    "(all must hold)"
)
MAX_TARGETS = 1000  # references in the text; the site's max_dependency_jobs bounds the jobs they stand for
_REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,79}")

Conditions = list[tuple[str, list[str]]]


def parse(text: str) -> Conditions:
    """`afterok:a:b,afterany:c` -> [("afterok", ["a", "b"]), ("afterany", ["c"])];
    raises ValueError saying what is allowed."""
    out: Conditions = []
    for part in text.split(","):
        kind, _, rest = part.strip().partition(":")
        refs = rest.split(":") if rest else []
        if kind not in KINDS or not refs or not all(_REF.fullmatch(r) for r in refs):
            raise ValueError(f"{part.strip()!r}: {HELP}")
        out.append((kind, refs))
    if sum(len(r) for _, r in out) > MAX_TARGETS:
        raise ValueError(f"names more than {MAX_TARGETS} jobs")
    return out


def render(conds: Conditions) -> str:
    return ",".join(f"{kind}:{':'.join(refs)}" for kind, refs in conds)


@dataclass(frozen=True)
class Verdict:
    met: bool
    never: str | None = None  # why it can never be met
    waits_for: str = ""  # what it waits for, in words
    targets: tuple[Job, ...] = ()  # the jobs it still waits on


def _ok(kind: str, job: Job) -> bool | None:
    """True: this target satisfies `kind`; False: it never will; None: not yet."""
    s = job.state
    if kind == "after":
        return True if JobState.RUNNING in job.state_times or s.is_terminal else None
    if kind == "afterany":
        return True if s.is_terminal else None
    if kind == "afterok":
        return True if s is JobState.COMPLETED else (False if s.is_terminal else None)
    return (s is not JobState.COMPLETED) if s.is_terminal else None  # afternotok: failed or cancelled


def verdict(conds: Conditions, members: Callable[[str], list[Job]]) -> Verdict:
    """Whether the conditions hold now. `members(ref)` is the jobs a target names (one
    job, or an array's members)."""
    waiting: list[tuple[str, Job]] = []
    for kind, refs in conds:
        for ref in refs:
            for job in members(ref):
                ok = _ok(kind, job)
                if ok is False:
                    return Verdict(
                        False, never=f"{label(job)} {job.state.value}, and {kind} needed it to {KINDS[kind]}"
                    )
                if ok is None:
                    waiting.append((kind, job))
    if not waiting:
        return Verdict(True)
    kind, first = waiting[0]
    more = f" and {len(waiting) - 1} more" if len(waiting) > 1 else ""
    return Verdict(
        False,
        waits_for=f"waits for {label(first)} to {KINDS[kind]} ({first.state.value}){more}",
        targets=tuple(j for _, j in waiting),
    )


def label(job: Job) -> str:
    return f"{job.spec.run_id} ({job.id[:8]})"


class Index:
    """Which dependents each target's moves may decide: a cycle judges only those
    (the dependents whose targets, or who themselves, moved since the last cycle), so
    its cost follows what changed, not how many jobs wait nor how large their arrays are."""

    def __init__(self) -> None:
        self._watchers: dict[str, set[str]] = {}  # target job id -> dependents
        self._targets: dict[str, set[str]] = {}  # dependent -> its target job ids
        self._due: set[str] = set()

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._targets

    def __len__(self) -> int:
        return len(self._targets)

    def add(self, job_id: str, targets: Iterable[str]) -> None:
        """A dependent and the jobs it names (array members included); judged next cycle."""
        self._targets[job_id] = set(targets)
        for t in self._targets[job_id]:
            self._watchers.setdefault(t, set()).add(job_id)
        self._due.add(job_id)

    def drop(self, job_id: str) -> None:
        for t in self._targets.pop(job_id, ()):
            watchers = self._watchers.get(t)
            if watchers is not None:
                watchers.discard(job_id)
                if not watchers:
                    del self._watchers[t]
        self._due.discard(job_id)

    def moved(self, job_ids: Iterable[str]) -> None:
        """These jobs changed state: their dependents, and they if dependents, are due."""
        for job_id in job_ids:
            self._due.update(self._watchers.get(job_id, ()))
            if job_id in self._targets:
                self._due.add(job_id)

    def due(self) -> set[str]:
        """The dependents to judge now (and no longer due)."""
        out, self._due = self._due, set()
        return out
