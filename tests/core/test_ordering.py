"""The order of the line within a priority level: short limits first, relative aging,
jobs holding reservations first. Pure: no cluster, no plan()."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.core.ordering import Line, OrderWeights, in_order
from orchestrator.core.ordering import WaitingJob as W
from orchestrator.core.policy import PolicyConfig
from tests.support import examples

HOUR = 3600.0
NOW = 10_000_000.0
DEFAULT = PolicyConfig().weights


def line_of(*jobs: W) -> Line:
    line = Line()
    for job in jobs:
        line.add(job)
    return line


def job(name: str, waited: float, limit: float, seq: int, priority: int = 2, user: str = "u") -> W:
    return W(name, name, user, 1, priority, seq, NOW - waited, limit)


def order(line: Line, weights: OrderWeights = DEFAULT, first=()) -> list[str]:
    return [j.id for j in in_order(line, NOW, weights, {}, first=first)]


def test_a_week_long_job_passes_hour_jobs_that_have_waited_under_a_third_as_long():
    # Classes: 1 h -> 0, 1 week -> 8 of 16, so the week job gives up 0.5 of 1.0 in size;
    # aging gives 0.75 x (wait / longest wait): it wins once the hour job's wait < 1/3 of its own.
    assert order(line_of(job("week", 3 * HOUR, 168 * HOUR, 1), job("hour", 0.9 * HOUR, HOUR, 2))) == [
        "week",
        "hour",
    ]
    assert order(line_of(job("week", 3 * HOUR, 168 * HOUR, 1), job("hour", 1.1 * HOUR, HOUR, 2))) == [
        "hour",
        "week",
    ]


@settings(max_examples=examples(200), deadline=None)
@given(
    jobs=st.lists(
        st.tuples(st.integers(1, 10**6), st.sampled_from([HOUR, 4 * HOUR, 86400.0, 7 * 86400.0])),
        min_size=1,
        max_size=12,
    ),
    scale=st.sampled_from([1 / 60, 24.0, 7 * 24.0]),
)
def test_the_order_does_not_depend_on_the_time_scale_of_the_waits(jobs, scale):
    """Waits of minutes or of weeks: the same jobs in the same proportions keep one
    order. A fixed aging horizon breaks this; it was fitted to one trace's waits."""

    def ranked(factor):
        return order(line_of(*(job(f"j{k}", w * factor, limit, k) for k, (w, limit) in enumerate(jobs))))

    assert ranked(1.0) == ranked(scale)


def test_the_longest_waiting_job_wins_against_an_equally_short_newcomer():
    line = line_of(job("old", 2 * HOUR, HOUR, 1, user="a"), job("new", 60, HOUR, 2, user="b"))
    assert order(line) == ["old", "new"]


def test_jobs_holding_reservations_lead_their_level_in_reservation_order():
    line = line_of(
        job("short", 5 * HOUR, HOUR, 1),
        job("held-2", HOUR, 86400.0, 2),
        job("held-1", 60, 7 * 86400.0, 3),
        job("high", 10, HOUR, 4, priority=3),
    )
    assert order(line, first=["held-1", "held-2", "gone"]) == ["high", "held-1", "held-2", "short"]


def test_plain_fifo_when_nothing_is_weighted():
    line = line_of(job("a", 10, 7 * 86400.0, 1), job("b", 5, HOUR, 2))
    assert order(line, OrderWeights()) == ["a", "b"]
    assert order(line, OrderWeights(), first=["b"]) == ["b", "a"]


def test_the_line_knows_the_work_waiting_by_time_limits():
    a, b = W("a", "a", "u", 4, 2, 1, NOW, 2 * HOUR), W("b", "b", "u", 1, 2, 2, NOW, 0.1)
    line = line_of(a, b)
    assert line.work == 4 * 2 * HOUR + 0.1
    line.remove(a)
    assert line.work == pytest.approx(0.1)
    line.remove(b)
    assert line.work == 0.0  # exactly: nothing left over from the sums
