"""The state machine, checked move by move against the table written out independently here."""

import pytest

from orchestrator.core.errors import IllegalTransition
from orchestrator.core.states import TABLE, JobState, Trigger, allowed_triggers, next_state

S, T = JobState, Trigger

# The specification, spelled out pair by pair (the seed's lifecycle plus hold, preempt,
# cancel and placement time-out). Any pair missing here must be illegal.
LEGAL = {
    (S.QUEUED, T.SCHEDULE): S.SCHEDULED,
    (S.QUEUED, T.HOLD): S.HELD,
    (S.QUEUED, T.CANCEL): S.CANCELLED,
    (S.HELD, T.RELEASE): S.QUEUED,
    (S.HELD, T.CANCEL): S.CANCELLED,
    (S.SCHEDULED, T.ALLOCATE): S.ALLOCATING,
    (S.SCHEDULED, T.REQUEUE): S.QUEUED,
    (S.SCHEDULED, T.CANCEL): S.CANCELLED,
    (S.ALLOCATING, T.START): S.RUNNING,
    (S.ALLOCATING, T.REQUEUE): S.QUEUED,  # placement timed out
    (S.ALLOCATING, T.FAIL): S.FAILED,  # could not launch
    (S.ALLOCATING, T.CANCEL): S.CANCELLED,
    (S.RUNNING, T.COMPLETE): S.COMPLETED,
    (S.RUNNING, T.FAIL): S.FAILED,
    (S.RUNNING, T.PREEMPT): S.PREEMPTED,
    (S.RUNNING, T.CANCEL): S.CANCELLED,
    (S.PREEMPTED, T.REQUEUE): S.QUEUED,
    (S.PREEMPTED, T.CANCEL): S.CANCELLED,
    (S.FAILED, T.RETRY): S.QUEUED,
}

ALL_PAIRS = [(s, t) for s in JobState for t in Trigger]


@pytest.mark.parametrize(("state", "trigger"), [p for p in ALL_PAIRS if p in LEGAL], ids=lambda x: x.value)
def test_legal_move_leads_where_the_specification_says(state, trigger):
    assert next_state(state, trigger) is LEGAL[(state, trigger)]


@pytest.mark.parametrize(
    ("state", "trigger"), [p for p in ALL_PAIRS if p not in LEGAL], ids=lambda x: x.value
)
def test_illegal_move_raises_a_named_error_listing_what_is_allowed(state, trigger):
    with pytest.raises(IllegalTransition) as exc:
        next_state(state, trigger)
    assert exc.value.state == state.value
    assert exc.value.trigger == trigger.value
    assert sorted(exc.value.allowed) == sorted(t.value for (s, t) in LEGAL if s is state)
    assert f"cannot {trigger.value}" in str(exc.value)


def test_completed_and_cancelled_lead_nowhere():
    assert allowed_triggers(S.COMPLETED) == []
    assert allowed_triggers(S.CANCELLED) == []


def test_every_non_terminal_state_can_be_cancelled():
    for state in JobState:
        assert (T.CANCEL in allowed_triggers(state)) == (not state.is_terminal)


def test_table_has_one_row_per_trigger():
    assert sorted(m.trigger.value for m in TABLE) == sorted(t.value for t in Trigger)


def test_gpu_holding_states_are_those_between_scheduling_and_the_end_of_running():
    assert {s for s in JobState if s.holds_gpus} == {S.SCHEDULED, S.ALLOCATING, S.RUNNING}
