"""What a scheduling cycle reads and what it answers: the Snapshot it decides on, and
the Plan it returns (starts, preemptions, reservations, and why each other job
waits). Plain data, shared by the policy, the live orchestrator, the simulator and
the views."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

from orchestrator.core.inventory import Allocation
from orchestrator.core.ordering import Line
from orchestrator.core.placement import Counts
from orchestrator.core.preemption import Running


class Reason(str, Enum):
    """Why a job is still waiting (Slurm's pending reasons, in gpuq's words)."""

    RESOURCES = "Resources"  # not enough GPUs free in the shape it needs
    RESERVED = "Reserved"  # holds a reservation: GPUs are kept for it from a known time
    PRIORITY = "Priority"  # GPUs go to jobs ahead of it (or would delay their reservation)
    USER_CAP = "UserCap"  # its user already holds their GPU cap
    PREEMPTING = "Preempting"  # lower-priority jobs are being stopped to make room
    UNPLACEABLE = "Unplaceable"  # larger than every GPU now in service put together
    HELD = "Held"  # set aside by its owner or an admin (never in the plan; the queue says so)
    STOPPED = "Stopped"  # the site stopped all starts (Slurm: PartitionDown)
    DEPENDENCY = "Dependency"  # waits for other jobs (--dependency): out of the line until they are done


@dataclass
class Snapshot:
    """The cluster as the policy sees it at one instant."""

    sizes: Mapping[str, int]  # GPUs in service per node
    free: Mapping[str, Sequence[int]]  # free GPU indices per node
    line: Line  # queued jobs
    running: Sequence[Running]
    usage: Mapping[str, float] = field(default_factory=dict)  # decayed GPU-seconds per user
    # Jobs that held reservations after the last cycle, in order (Plan.reservations): the
    # policy keeps them unless their job starts, leaves the line or is outranked by level.
    reserved: Sequence[str] = ()


@dataclass(frozen=True)
class Start:
    job_id: str
    allocation: Allocation
    backfilled: bool = False  # started ahead of a job that could not start


@dataclass(frozen=True)
class Preempt:
    job_id: str  # the victim
    for_job_id: str
    reason: str


@dataclass(frozen=True)
class Reservation:
    job_id: str
    start_at: float
    counts: Counts


@dataclass(frozen=True)
class Pending:
    code: Reason
    message: str
    estimated_start: float | None = None

    def __str__(self) -> str:
        return f"{self.code.value}: {self.message}"


@dataclass
class Plan:
    starts: list[Start] = field(default_factory=list)
    preemptions: list[Preempt] = field(default_factory=list)
    reservations: dict[str, Reservation] = field(default_factory=dict)
    pending: dict[str, Pending] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)  # the head of the line as the policy sees it

    def stopped(self, why: str) -> Plan:
        """This plan with no action taken: every job waits, and says why."""
        pending = {
            jid: Pending(Reason.STOPPED, why) for jid in [*self.pending, *(s.job_id for s in self.starts)]
        }
        return Plan(pending=pending, order=self.order)
