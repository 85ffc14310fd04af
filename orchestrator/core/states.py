"""The job state machine: every state, every legal move, in one table.

Code asks this table whether a move is legal; it never checks states by hand.

    QUEUED ──schedule──▶ SCHEDULED ──allocate──▶ ALLOCATING ──start──▶ RUNNING ──complete──▶ COMPLETED
      │  ▲                   │                       │                  │
      │  └──────requeue──────┴───────────────────────┘                  ├──fail──▶ FAILED ──retry──▶ QUEUED
      │  ▲                                                              │
      │  └──requeue── PREEMPTED ◀──────────────preempt──────────────────┘
      ├──hold──▶ HELD ──release──▶ QUEUED
      └── any state that is not terminal ──cancel──▶ CANCELLED

A job keeps its place in line (its submission sequence number) through every
return to QUEUED: a retry, a preemption and a placement time-out are not the
user's fault and must not send the job to the back of the queue.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Literal

from orchestrator.core.errors import IllegalTransition

# The states' names as a type, for the API's checks and its schema (the layout test holds
# it to JobState's values).
StateName = Literal[
    "queued", "held", "scheduled", "allocating", "running", "preempted", "completed", "failed", "cancelled"
]


class JobState(str, Enum):
    """Where a job is in its life. Values are the lower-case names the API shows."""

    QUEUED = "queued"  # waiting in line for GPUs; the only state the policy picks from
    HELD = "held"  # set aside by its owner or an admin; keeps its place, never scheduled
    SCHEDULED = "scheduled"  # picked by the policy, GPUs chosen, nothing reserved on Ray yet
    ALLOCATING = "allocating"  # placement group requested; waiting for Ray to bind the GPUs
    RUNNING = "running"  # the command runs on its GPUs
    PREEMPTED = "preempted"  # stopped to make room for a higher-priority job; goes back in line
    COMPLETED = "completed"  # exited 0 (terminal)
    FAILED = "failed"  # exited non-zero, hit its time limit or lost its node; may be retried
    CANCELLED = "cancelled"  # stopped by its owner or an admin (terminal)

    @property
    def is_terminal(self) -> bool:
        """True where the job is finished for good unless an auto-retry brings it back."""
        return self in TERMINAL_STATES

    @property
    def holds_gpus(self) -> bool:
        """True where the job owns GPUs in the inventory (chosen, being bound, or in use)."""
        return self in GPU_HOLDING_STATES


class Trigger(str, Enum):
    """What happens to a job: the names of the moves in the table below."""

    SCHEDULE = "schedule"
    ALLOCATE = "allocate"
    START = "start"
    COMPLETE = "complete"
    FAIL = "fail"
    RETRY = "retry"
    PREEMPT = "preempt"
    REQUEUE = "requeue"
    HOLD = "hold"
    RELEASE = "release"
    CANCEL = "cancel"


@dataclass(frozen=True)
class Move:
    trigger: Trigger
    sources: frozenset[JobState]
    target: JobState
    why: str


S = JobState
TERMINAL_STATES = frozenset({S.COMPLETED, S.FAILED, S.CANCELLED})
GPU_HOLDING_STATES = frozenset({S.SCHEDULED, S.ALLOCATING, S.RUNNING})
_CANCELLABLE = frozenset(s for s in S if s not in TERMINAL_STATES)

# The state machine. One row per trigger: from which states it is legal, and where it leads.
TABLE: tuple[Move, ...] = (
    Move(Trigger.SCHEDULE, frozenset({S.QUEUED}), S.SCHEDULED, "the policy chose GPUs for it"),
    Move(Trigger.ALLOCATE, frozenset({S.SCHEDULED}), S.ALLOCATING, "its placement group was requested"),
    Move(Trigger.START, frozenset({S.ALLOCATING}), S.RUNNING, "its command was launched on the GPUs"),
    Move(Trigger.COMPLETE, frozenset({S.RUNNING}), S.COMPLETED, "its command exited 0"),
    Move(
        Trigger.FAIL,
        frozenset({S.ALLOCATING, S.RUNNING}),
        S.FAILED,
        "it exited non-zero, hit its time limit, could not launch, or lost its node",
    ),
    Move(Trigger.RETRY, frozenset({S.FAILED}), S.QUEUED, "auto-retry: same priority, original place in line"),
    Move(Trigger.PREEMPT, frozenset({S.RUNNING}), S.PREEMPTED, "a higher-priority job needs its GPUs"),
    Move(
        Trigger.REQUEUE,
        frozenset({S.SCHEDULED, S.ALLOCATING, S.PREEMPTED}),
        S.QUEUED,
        "back in line without counting a retry (placement timed out, or preempted)",
    ),
    Move(Trigger.HOLD, frozenset({S.QUEUED}), S.HELD, "set aside; keeps its place but is not scheduled"),
    Move(Trigger.RELEASE, frozenset({S.HELD}), S.QUEUED, "a held job returns to line"),
    Move(Trigger.CANCEL, _CANCELLABLE, S.CANCELLED, "stopped by its owner or an admin"),
)

_NEXT: dict[tuple[JobState, Trigger], JobState] = {
    (source, move.trigger): move.target for move in TABLE for source in move.sources
}


def next_state(state: JobState, trigger: Trigger) -> JobState:
    """The state `trigger` leads to from `state`; raises IllegalTransition if there is none."""
    try:
        return _NEXT[(state, trigger)]
    except KeyError:
        allowed = sorted(t.value for (s, t) in _NEXT if s is state)
        raise IllegalTransition(state.value, trigger.value, allowed) from None


def allowed_triggers(state: JobState) -> list[Trigger]:
    return [t for (s, t) in _NEXT if s is state]
