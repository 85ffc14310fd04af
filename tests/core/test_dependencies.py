"""Job dependencies in Slurm's syntax (core/dependencies.py): parsing, and when each
kind is met, still waiting, or can never be met."""

import pytest

from orchestrator.core import dependencies
from orchestrator.core.errors import InvalidSpec
from orchestrator.core.job import JobSpec
from orchestrator.core.queue import JobQueue
from tests.support import make_spec


def test_slurms_syntax_parses_and_renders_back():
    conds = dependencies.parse("afterok:a1b2:c3d4, afterany:arr1234")
    assert conds == [("afterok", ["a1b2", "c3d4"]), ("afterany", ["arr1234"])]
    assert dependencies.render(conds) == "afterok:a1b2:c3d4,afterany:arr1234"


@pytest.mark.parametrize(
    "text", ["afterwards:1", "afterok", "afterok:", "afterok:a?b", "singleton", "afterok:a,"]
)
def test_anything_else_is_refused_naming_the_syntax(text):
    with pytest.raises(InvalidSpec) as e:
        JobSpec.parse({"run_id": "r", "user": "u", "command": "x", "gpu_count": 1, "dependency": text})
    assert dict(e.value.errors)["dependency"].endswith("(all must hold)")


def run_to(q: JobQueue, job, end: str):
    q.schedule(job.id, 1.0, {"gmi-node-1": [0]})
    q.allocate(job.id, 1.0)
    q.start(job.id, 1.0)
    if end == "completed":
        q.complete(job.id, 2.0)
    elif end == "failed":
        q.fail(job.id, 2.0, "command failed", exit_code=1)


@pytest.mark.parametrize(
    "kind, target, met, never",
    [
        ("afterok", "queued", False, False),
        ("afterok", "running", False, False),
        ("afterok", "completed", True, False),
        ("afterok", "failed", False, True),
        ("afterok", "cancelled", False, True),
        ("afternotok", "completed", False, True),
        ("afternotok", "failed", True, False),
        ("afternotok", "cancelled", True, False),
        ("afterany", "running", False, False),
        ("afterany", "failed", True, False),
        ("after", "queued", False, False),
        ("after", "running", True, False),
        ("after", "cancelled", True, False),
    ],
)
def test_each_kind_against_each_end(kind, target, met, never):
    q = JobQueue()
    job = q.enqueue(make_spec("target", "alice", 1, "NORMAL"), now=0.0)
    if target == "cancelled":
        q.cancel(job.id, 1.0)
    elif target != "queued":
        run_to(q, job, target)
    v = dependencies.verdict([(kind, [job.id])], lambda ref: [q.get(ref)])
    assert (v.met, v.never is not None) == (met, never)
    if not met and not never:
        assert v.waits_for.startswith(f"waits for target ({job.id[:8]}) to ")


def test_an_array_is_met_when_every_member_is():
    q = JobQueue()
    members = [q.enqueue(make_spec(f"a_{i}", "alice", 1, "NORMAL"), now=float(i)) for i in range(3)]
    for i, m in enumerate(members):
        q.join_array(m, "arr000000001", i)
    run_to(q, members[0], "completed")
    v = dependencies.verdict([("afterok", ["arr000000001"])], lambda ref: q.array(ref))
    assert not v.met and v.waits_for.endswith("(queued) and 1 more")
    for m in members[1:]:
        run_to(q, m, "completed")
    assert dependencies.verdict([("afterok", ["arr000000001"])], lambda ref: q.array(ref)).met
