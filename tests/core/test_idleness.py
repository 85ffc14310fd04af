"""GPUs idle while jobs wait, by cause (core/idleness.py): one hand-made instant per
cause, the causes summing to the idle GPUs whatever the instant, and the ledger's
arithmetic over time."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.core.idleness import Cause, Idle, IdleLedger, Shape, describe, idle_now

TWO = {"n1": 8, "n2": 8}


def test_nothing_waiting_is_not_counted_nor_a_job_that_could_never_run():
    assert idle_now(TWO, TWO, {"n1": 8, "n2": 8}, 0, []).waiting is False
    too_big = idle_now(TWO, TWO, {"n1": 8, "n2": 8}, 0, [Shape(17)])
    assert too_big.waiting is False and too_big.causes == {}


def test_free_gpus_where_no_waiting_job_fits_are_fragmentation():
    # 4 free on each node; a 8-GPU job waits: it fits on neither node.
    idle = idle_now(TWO, TWO, {"n1": 4, "n2": 4}, 8, [Shape(8)])
    assert idle == Idle(True, 16, 8, {Cause.FRAGMENTATION: 8})


def test_free_gpus_kept_for_a_reservation_are_draining():
    # n1 drains for a 8-GPU job (5 free of the 8 it needs); n2's 2 free fit nobody.
    idle = idle_now(TWO, TWO, {"n1": 5, "n2": 2}, 9, [Shape(8)], reservations=[{"n1": 8}])
    assert idle.causes == {Cause.RESERVATION: 5, Cause.FRAGMENTATION: 2}


def test_a_job_that_fits_but_whose_user_is_at_a_cap_is_limits():
    idle = idle_now(TWO, TWO, {"n1": 2, "n2": 0}, 14, [Shape(2, capped=True), Shape(4)])
    assert idle.causes == {Cause.LIMITS: 2}


def test_a_job_that_fits_and_waits_for_the_next_cycle_is_latency():
    idle = idle_now(TWO, TWO, {"n1": 3, "n2": 0}, 13, [Shape(2), Shape(8)])
    assert idle.causes == {Cause.LATENCY: 2, Cause.FRAGMENTATION: 1}


def test_stopped_starts_take_every_free_gpu_and_out_of_service_the_rest():
    # n2 is down (none of its GPUs in service); starts are stopped.
    idle = idle_now(TWO, {"n1": 8}, {"n1": 6}, 2, [Shape(1)], reservations=[{"n1": 4}], stopped=True)
    assert idle.causes == {Cause.OUT_OF_SERVICE: 8, Cause.STOPPED: 6}


def test_a_drained_gpu_that_still_holds_its_job_is_busy_not_out_of_service():
    # n1:0 drained (not in service) but its job runs on; 7 others of n1 busy, n2 all free.
    idle = idle_now(TWO, {"n1": 7, "n2": 8}, {"n1": 0, "n2": 8}, 8, [Shape(16)])
    assert idle.busy == 8 and idle.causes == {Cause.FRAGMENTATION: 8}


@given(
    free1=st.integers(0, 8),
    free2=st.integers(0, 8),
    out2=st.integers(0, 8),
    shapes=st.lists(st.tuples(st.integers(1, 16), st.booleans(), st.booleans()), max_size=6),
    reserve=st.lists(st.tuples(st.integers(0, 8), st.integers(0, 8)), max_size=3),
    stopped=st.booleans(),
)
def test_the_causes_sum_to_the_idle_gpus_whatever_the_instant(free1, free2, out2, shapes, reserve, stopped):
    in_service = {"n1": 8, "n2": 8 - out2}
    free = {"n1": free1, "n2": min(free2, in_service["n2"])}
    busy = sum(in_service.values()) - sum(free.values())
    idle = idle_now(
        TWO,
        in_service,
        free,
        busy,
        [Shape(g, m, c) for g, m, c in shapes],
        [{"n1": a, "n2": b} for a, b in reserve],
        stopped,
    )
    if idle.waiting:
        assert sum(idle.causes.values()) == 16 - busy
        assert all(n > 0 for n in idle.causes.values())
    else:
        assert idle.causes == {}


def test_the_ledger_counts_only_while_jobs_wait_and_says_it_in_words():
    ledger = IdleLedger()
    ledger.add(Idle(False, 16, 0), 100.0)  # nothing waits: not part of the figure
    ledger.add(Idle(True, 16, 14, {Cause.RESERVATION: 2}), 10.0)
    ledger.add(Idle(True, 16, 16), 30.0)
    assert ledger.waiting_s == 40.0
    assert ledger.utilization == pytest.approx((14 * 10 + 16 * 30) / (16 * 40))
    assert ledger.shares() == {"reservation": pytest.approx(20 / 640)}
    assert (
        describe(ledger, "last 24 h")
        == "last 24 h: 96.9% busy while jobs waited; 3.1% draining for reservations"
    )
    assert describe(IdleLedger(), "last 24 h") == "last 24 h: no job waited that could run"
