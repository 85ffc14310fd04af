"""Who may ask for what priority: Slurm's QOS idea, as one pure function per question.

Each role has a highest priority it may submit or raise a job to (by default users
HIGH, admins CRITICAL); `priority_grants` lifts named users above their role. Marking
a job non-preemptible shields it from CRITICAL jobs, so it is a right too: admins and
users with a grant. Lowering a priority is always allowed. The orchestrator checks
these for every submit and priority change, whichever door they came in by (REST,
CLI, web page, `ray job submit`): the rules live here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.core.errors import Forbidden
from orchestrator.core.priority import Priority


@dataclass(frozen=True)
class Caller:
    """Who asks, as the API authenticated them."""

    user: str
    role: str

    @property
    def admin(self) -> bool:
        return self.role == "admin"

    def may_act_for(self, user: str) -> bool:
        """A user acts on their own jobs; an admin on anyone's."""
        return self.admin or user == self.user


def highest_priority(caller: Caller, max_priority: dict[str, str], grants: dict[str, str]) -> Priority:
    levels = [Priority.parse(max_priority.get(caller.role, "NORMAL"))]
    if caller.user in grants:
        levels.append(Priority.parse(grants[caller.user]))
    return max(levels)


def check_priority(
    caller: Caller,
    wanted: Priority,
    current: Priority | None,
    max_priority: dict[str, str],
    grants: dict[str, str],
) -> None:
    """Raise Forbidden unless `caller` may put a job at `wanted` (from `current`, if any)."""
    if current is not None and wanted <= current:
        return  # lowering, or leaving it, is always allowed
    top = highest_priority(caller, max_priority, grants)
    if wanted > top:
        raise Forbidden(
            "priority",
            f"you are {caller.user} ({caller.role}): you may use priorities up to "
            f"{top.name}; {wanted.name} needs a grant (priority_grants in the site "
            "config; ask an admin)",
        )


def check_preemptible(caller: Caller, preemptible: bool, grants: dict[str, str]) -> None:
    if not preemptible and not (caller.admin or caller.user in grants):
        raise Forbidden(
            "non-preemptible",
            f"you are {caller.user}: only admins and users with a priority "
            "grant may mark a job preemptible=false",
        )
