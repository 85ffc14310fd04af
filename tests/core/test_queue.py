"""The line of queued jobs: priority first, then first come first served."""

import pytest

from orchestrator.core.errors import DuplicateJob, IllegalTransition, JobNotFound
from orchestrator.core.priority import Priority
from orchestrator.core.queue import JobQueue
from orchestrator.core.states import JobState
from tests.support import SEED_T0, make_spec


def submit_seed(queue: JobQueue, order=SEED_T0) -> dict[str, str]:
    ids = {}
    for t, (run_id, user, gpus, prio) in enumerate(order):
        ids[run_id] = queue.enqueue(make_spec(run_id, user, gpus, prio), now=float(t)).id
    return ids


def line(queue: JobQueue) -> list[str]:
    return [j.spec.run_id for j in queue.queued()]


def run(queue: JobQueue, job_id: str, now: float = 10.0) -> None:
    queue.schedule(job_id, now, {"gmi-node-1": [0]})
    queue.allocate(job_id, now)
    queue.start(job_id, now)


def test_seed_t0_queue_is_sorted_by_priority_then_fifo(queue):
    submit_seed(queue)
    assert line(queue) == ["job-101", "job-102", "job-103", "job-104", "job-105"]


def test_order_comes_from_priority_then_arrival_not_from_arrival_alone(queue):
    submit_seed(queue, list(reversed(SEED_T0)))
    # Within HIGH and NORMAL, the one that arrived first now leads.
    assert line(queue) == ["job-101", "job-103", "job-102", "job-105", "job-104"]


def test_seed_t0_positions_are_one_based(queue):
    ids = submit_seed(queue)
    assert [queue.position(ids[r]) for r, *_ in SEED_T0] == [1, 2, 3, 4, 5]


def test_seed_t1_remaining_queue_after_three_start(queue):
    ids = submit_seed(queue)
    for run_id in ("job-101", "job-102", "job-103"):
        run(queue, ids[run_id])
    assert line(queue) == ["job-104", "job-105"]
    assert [queue.position(ids[r]) for r in ("job-104", "job-105")] == [1, 2]
    assert queue.position(ids["job-101"]) is None
    assert queue.summary()["running"] == 3 and queue.summary()["queued"] == 2


def test_seed_submit_example_gets_position_three(queue):
    # The seed's /queue/submit answer shows queue_position 3 for a HIGH job behind two others.
    queue.enqueue(make_spec("a", priority=4), now=0)
    queue.enqueue(make_spec("b", priority=3), now=1)
    queue.enqueue(make_spec("c", priority=2), now=2)
    job = queue.enqueue(make_spec("experiment-1", gpus=4, priority=3), now=3)
    assert queue.position(job.id) == 3


def test_new_job_has_uuid4_id_and_a_submit_event(queue):
    import uuid

    job = queue.enqueue(make_spec(), now=5.0)
    assert uuid.UUID(job.id).version == 4
    assert job.state is JobState.QUEUED
    assert job.state_times == {JobState.QUEUED: 5.0}
    assert [(e.from_state, e.to_state, e.trigger) for e in job.events] == [(None, JobState.QUEUED, "submit")]


def test_full_lifecycle_records_every_state_and_event(queue):
    job = queue.enqueue(make_spec(), now=0)
    queue.schedule(job.id, 1, {"gmi-node-2": [3]})
    queue.allocate(job.id, 2)
    queue.start(job.id, 3, {"gmi-node-2": [5]})
    queue.complete(job.id, 4)
    assert job.state is JobState.COMPLETED and job.exit_code == 0 and job.attempts == 1
    assert job.allocation == {"gmi-node-2": [5]}  # what Ray really bound replaces the plan
    assert [e.to_state for e in job.events] == [
        JobState.QUEUED,
        JobState.SCHEDULED,
        JobState.ALLOCATING,
        JobState.RUNNING,
        JobState.COMPLETED,
    ]
    assert job.state_times[JobState.RUNNING] == 3 and job.state_times[JobState.COMPLETED] == 4
    assert queue.stats.jobs_scheduled == 1 and queue.stats.jobs_completed == 1


def test_retry_returns_the_job_to_its_original_place_with_its_priority(queue):
    first = queue.enqueue(make_spec("first", priority=2), now=0)
    later = [queue.enqueue(make_spec(f"later-{i}", priority=2), now=1 + i).id for i in range(3)]
    run(queue, first.id)
    queue.fail(first.id, 20, "command failed", exit_code=3)
    assert first.exit_code == 3 and first.failure_reason == "command failed"
    queue.retry(first.id, 21)
    assert line(queue) == ["first", "later-0", "later-1", "later-2"]
    assert first.priority is Priority.NORMAL and first.retries == 1
    assert queue.position(later[0]) == 2


def test_retries_stop_when_the_budget_is_spent(queue):
    job = queue.enqueue(make_spec(max_retries=2), now=0)
    for attempt in range(3):
        run(queue, job.id)
        queue.fail(job.id, 1, "command failed", exit_code=1)
        if attempt < 2:
            assert queue.can_retry(job.id)
            queue.retry(job.id, 2)
    assert not queue.can_retry(job.id)
    with pytest.raises(IllegalTransition, match="no retries left: 2 of 2 used"):
        queue.retry(job.id, 3)
    assert job.state is JobState.FAILED and job.attempts == 3


def test_infrastructure_failure_is_retried_without_using_a_retry(queue):
    job = queue.enqueue(make_spec(max_retries=0), now=0)
    run(queue, job.id)
    queue.fail(job.id, 1, "node lost", infrastructure=True)
    assert queue.can_retry(job.id)
    queue.retry(job.id, 2)
    assert job.state is JobState.QUEUED and job.retries == 0 and job.attempts == 1


def test_preempted_job_requeues_in_its_place_without_counting_a_retry(queue):
    victim = queue.enqueue(make_spec("victim", priority=1), now=0)
    queue.enqueue(make_spec("other", priority=1), now=1)
    run(queue, victim.id)
    queue.preempt(victim.id, 5, "preempted by job-9 (CRITICAL)")
    queue.requeue(victim.id, 5, "preempted")
    assert line(queue) == ["victim", "other"]
    assert victim.retries == 0 and queue.stats.jobs_preempted == 1 and queue.stats.jobs_failed == 0
    assert victim.allocation == {}


def test_placement_timeout_returns_an_allocating_job_to_the_queue(queue):
    job = queue.enqueue(make_spec(), now=0)
    queue.schedule(job.id, 1, {"gmi-node-1": [0]})
    queue.allocate(job.id, 1)
    queue.requeue(job.id, 31, "placement timed out after 30 s")
    assert job.state is JobState.QUEUED and queue.position(job.id) == 1
    assert job.events[-1].reason == "placement timed out after 30 s"


def test_held_job_leaves_the_line_and_release_restores_its_place(queue):
    ids = submit_seed(queue)
    queue.hold(ids["job-102"], 10)
    assert "job-102" not in line(queue) and queue.position(ids["job-102"]) is None
    assert queue.summary()["held"] == 1
    queue.release(ids["job-102"], 11)
    assert line(queue)[:3] == ["job-101", "job-102", "job-103"]


def test_cancel_works_from_every_unfinished_state(queue):
    queued = queue.enqueue(make_spec("q"), now=0)
    held = queue.enqueue(make_spec("h"), now=0)
    queue.hold(held.id, 1)
    running = queue.enqueue(make_spec("r"), now=0)
    run(queue, running.id)
    for job in (queued, held, running):
        queue.cancel(job.id, 2, "cancelled by alice")
        assert job.state is JobState.CANCELLED
    assert list(queue.queued()) == [] and queue.stats.jobs_cancelled == 3


def test_illegal_transition_changes_nothing(queue):
    job = queue.enqueue(make_spec(), now=0)
    run(queue, job.id)
    queue.complete(job.id, 1)
    before = job.model_copy(deep=True)
    summary, stats = queue.summary(), queue.stats.__dict__.copy()
    with pytest.raises(IllegalTransition, match=f"cannot cancel job {job.id} in state completed"):
        queue.cancel(job.id, 2)
    assert job == before and queue.summary() == summary and queue.stats.__dict__ == stats


def test_hold_is_only_for_queued_jobs(queue):
    job = queue.enqueue(make_spec(), now=0)
    run(queue, job.id)
    with pytest.raises(IllegalTransition, match="cannot hold"):
        queue.hold(job.id, 1)


def test_reprioritise_moves_the_job_and_keeps_its_fifo_order(queue):
    ids = submit_seed(queue)
    queue.set_priority(ids["job-105"], "CRITICAL", now=10)
    assert line(queue) == ["job-101", "job-105", "job-102", "job-103", "job-104"]
    queue.set_priority(ids["job-101"], 2, now=11)
    # job-101 was submitted first, so it now leads the NORMAL level.
    assert line(queue) == ["job-105", "job-102", "job-103", "job-101", "job-104"]
    assert queue.get(ids["job-101"]).events[-1].reason == "priority CRITICAL -> NORMAL"


def test_reprioritise_of_a_finished_job_is_refused(queue):
    job = queue.enqueue(make_spec(), now=0)
    queue.cancel(job.id, 1)
    with pytest.raises(IllegalTransition, match="change the priority of"):
        queue.set_priority(job.id, 4, now=2)
    assert job.priority is Priority.NORMAL


def test_unknown_job_is_a_named_error(queue):
    with pytest.raises(JobNotFound, match="no job with id 'nope'"):
        queue.cancel("nope", 0)


def test_duplicate_id_is_refused(queue):
    queue.enqueue(make_spec(), now=0, job_id="fixed")
    with pytest.raises(DuplicateJob):
        queue.enqueue(make_spec(), now=0, job_id="fixed")
    assert len(queue) == 1


def test_restore_rebuilds_order_and_continues_the_sequence(queue):
    ids = submit_seed(queue)
    run(queue, ids["job-101"])
    fresh = JobQueue()
    for job in queue.jobs():
        fresh.restore(job.model_copy(deep=True))
    assert line(fresh) == line(queue)
    assert fresh.summary() == queue.summary()
    assert fresh.enqueue(make_spec("next"), now=9).seq == 6


def test_status_summary_matches_the_seed_keys(queue):
    ids = submit_seed(queue)
    run(queue, ids["job-101"])
    queue.complete(ids["job-101"], 20)
    run(queue, ids["job-102"])
    queue.fail(ids["job-102"], 21, "command failed", exit_code=1)
    queue.record_cycle()
    s = queue.summary()
    assert {k: s[k] for k in ("total_jobs", "queued", "running", "completed", "failed")} == {
        "total_jobs": 5,
        "queued": 3,
        "running": 0,
        "completed": 1,
        "failed": 1,
    }
    assert queue.stats.jobs_scheduled == 2 and queue.stats.jobs_completed == 1
    assert queue.stats.jobs_failed == 1 and queue.stats.scheduling_cycles == 1
