"""Which jobs a bulk action touches (core/selection.py), as `scancel` chooses them."""

import pytest

from orchestrator.core.errors import InvalidSpec, JobNotFound
from orchestrator.core.queue import JobQueue
from orchestrator.core.selection import Selector, select
from orchestrator.core.states import JobState
from tests.support import make_spec


def array(queue: JobQueue, run_id: str, user: str, n: int, array_id: str) -> list:
    jobs = []
    for i in range(n):
        job = queue.enqueue(make_spec(f"{run_id}_{i}", user, 1, "NORMAL"), now=float(i))
        queue.join_array(job, array_id, i)
        jobs.append(job)
    return jobs


@pytest.fixture
def lab():
    q = JobQueue()
    sweep = array(q, "sweep", "alice", 5, "arr0123456789")
    other = array(q, "other", "bob", 3, "arrfedcba9876")
    solo = q.enqueue(make_spec("solo", "alice", 2, "HIGH"), now=9.0)
    q.hold(sweep[4].id, 10.0)
    return q, sweep, other, solo


def ids(jobs):
    return [j.id for j in jobs]


def test_an_array_id_names_every_member_and_array_index_names_one(lab):
    q, sweep, _, _ = lab
    assert ids(select(q, Selector(ids=["arr0123456789"]))) == ids(sweep)
    assert ids(select(q, Selector(array="arr0123"))) == ids(sweep)  # a unique prefix, as job ids
    assert q.resolve("arr0123456789_3") == sweep[3].id and q.resolve("arr0123_3") == sweep[3].id
    with pytest.raises(JobNotFound):
        q.resolve("arr0123456789_9")


def test_filters_narrow_what_ids_name_and_apply_to_all_jobs_without_them(lab):
    q, sweep, other, solo = lab
    assert ids(select(q, Selector(ids=["arr0123456789"], states=[JobState.HELD]))) == [sweep[4].id]
    assert ids(select(q, Selector(user="alice", states=[JobState.QUEUED]))) == ids(sweep[:4]) + [solo.id]
    assert ids(select(q, Selector(name="other"))) == ids(other)
    assert ids(select(q, Selector(ids=[solo.id[:8], "arrfedcba9876_1"]))) == [
        other[1].id,
        solo.id,
    ]  # by submission


def test_nothing_named_is_refused_and_an_unknown_id_refuses_the_whole_call(lab):
    q, *_ = lab
    with pytest.raises(InvalidSpec):
        select(q, Selector())
    with pytest.raises(JobNotFound):
        select(q, Selector(ids=["arr0123456789", "ffffffff-no-such-job"]))


def test_a_restored_queue_knows_its_arrays_and_a_forgotten_member_leaves_it(lab):
    q, sweep, _, _ = lab
    again = JobQueue()
    for job in q.jobs():
        again.restore(job.model_copy(deep=True))
    assert ids(again.array("arr0123456789")) == ids(sweep)
    for job in sweep:
        q.forget(job.id)
    assert q.resolve_array("arr0123456789") is None
