"""The job lifecycle, event by event, without Ray: what each event does to a job's state
and what the runtime is asked to do (orchestrator/core/lifecycle.py)."""

import pytest

from orchestrator.core import lifecycle
from orchestrator.core.decisions import Plan, Preempt, Start
from orchestrator.core.inventory import Inventory
from orchestrator.core.lifecycle import Exit, ExitKind
from orchestrator.core.queue import JobQueue
from orchestrator.core.states import JobState
from tests.support import make_spec

NODES = {"gmi-node-1": 8, "gmi-node-2": 8}


@pytest.fixture
def world():
    return JobQueue(), Inventory.of(NODES)


def running(world, now=10.0, gpus=2, **spec):
    queue, inventory = world
    job = queue.enqueue(make_spec(gpus=gpus, **spec), now=0.0)
    node, free = next((n, f) for n, f in inventory.free().items() if len(f) >= gpus)
    alloc = {node: list(free)[:gpus]}
    lifecycle.apply_plan(queue, inventory, Plan(starts=[Start(job.id, alloc)]), now)
    queue.allocate(job.id, now)
    queue.start(job.id, now)
    return job


def ok(code=0):
    return {"exit_code": code, "reason": "exited"}


# --- a plan --------------------------------------------------------------------------


def test_a_start_is_scheduled_on_its_gpus_and_must_be_launched(world):
    queue, inventory = world
    job = queue.enqueue(make_spec(gpus=3), now=0.0)
    effects = lifecycle.apply_plan(
        queue, inventory, Plan(starts=[Start(job.id, {"gmi-node-2": [0, 1, 2]})]), 5.0
    )
    assert job.state is JobState.SCHEDULED and inventory.allocation_of(job.id) == {"gmi-node-2": [0, 1, 2]}
    assert effects.launch == [job] and effects.save == [job] and not effects.stop


def test_a_victim_is_preempted_keeps_its_gpus_until_it_is_gone_and_must_be_stopped(world):
    queue, inventory = world
    victim = running(world)
    effects = lifecycle.apply_plan(
        queue, inventory, Plan(preemptions=[Preempt(victim.id, "x", "for x")]), 20.0
    )
    assert victim.state is JobState.PREEMPTED and inventory.allocation_of(victim.id) is not None
    assert effects.stop == [victim] and not effects.launch


def test_a_preempted_job_goes_back_in_line_in_its_place_when_its_processes_are_gone(world):
    queue, inventory = world
    victim = running(world)
    later = queue.enqueue(make_spec(run_id="later"), now=15.0)
    lifecycle.apply_plan(queue, inventory, Plan(preemptions=[Preempt(victim.id, "x", "for x")]), 20.0)
    inventory.give_back(victim.id)
    lifecycle.run_ended(queue, victim, lifecycle.classify([None], None, lambda r: None, "alice"), 21.0)
    assert victim.state is JobState.QUEUED and victim.retries == 0
    assert [j.id for j in queue.queued()] == [victim.id, later.id]  # its submission order, not its return


# --- how a run ended ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("results", "evicted", "kind", "code"),
    [
        ([ok(), ok()], None, ExitKind.COMPLETED, None),
        ([ok(), ok(3)], None, ExitKind.FAILED, 3),
        ([{"exit_code": -9, "reason": "time_limit"}], None, ExitKind.TIME_LIMIT, -9),
        ([ok(), None], None, ExitKind.NODE_LOST, None),
        ([], None, ExitKind.NODE_LOST, None),
        ([{"exit_code": -15, "reason": "stopped"}], None, ExitKind.STOPPED, None),
        ([{"exit_code": 1, "reason": "no_account"}], None, ExitKind.NO_ACCOUNT, None),
        ([ok(1)], "GPU gmi-node-1:0 unhealthy: XID 79", ExitKind.EVICTED, None),
        (
            [
                ok(),
                {
                    "exit_code": None,
                    "reason": "runtime_env_failed",
                    "message": "pip install failed:\nERROR: no x",
                },
            ],
            None,
            ExitKind.RUNTIME_ENV,
            None,
        ),
        (
            [{"exit_code": None, "reason": "launch_failed", "message": "the job folder exists already"}],
            None,
            ExitKind.LAUNCH_FAILED,
            None,
        ),
    ],
)
def test_what_the_runners_report_is_one_typed_exit(results, evicted, kind, code):
    ended = lifecycle.classify(results, evicted, lambda rank: "gmi-node-2", "alice")
    assert ended.kind is kind and ended.exit_code == code
    if kind is ExitKind.NO_ACCOUNT:
        assert ended.message == "no Unix account for alice on gmi-node-2"
    if kind is ExitKind.RUNTIME_ENV:  # the tool's last line, as the job's reason
        assert ended.message == "runtime env setup failed: ERROR: no x"
    if kind is ExitKind.LAUNCH_FAILED:
        assert ended.message == "launch failed: the job folder exists already"


def test_exit_zero_completes(world):
    queue, _ = world
    job = running(world)
    lifecycle.run_ended(queue, job, Exit(ExitKind.COMPLETED), 30.0)
    assert job.state is JobState.COMPLETED and job.exit_code == 0


def test_a_failed_command_is_retried_while_retries_last(world):
    queue, _ = world
    job = running(world, max_retries=1)
    lifecycle.run_ended(queue, job, Exit(ExitKind.FAILED, "command failed", 1), 30.0)
    assert job.state is JobState.QUEUED and job.retries == 1
    job2 = running(world, max_retries=0)
    lifecycle.run_ended(queue, job2, Exit(ExitKind.FAILED, "command failed", 1), 30.0)
    assert job2.state is JobState.FAILED and job2.failure_reason == "command failed" and job2.exit_code == 1


def test_only_the_exit_codes_a_job_names_are_retried(world):
    queue, _ = world
    other = running(world, max_retries=3, retry_on_exit_codes=[75])
    lifecycle.run_ended(queue, other, Exit(ExitKind.FAILED, "command failed", 1), 30.0)
    assert other.state is JobState.FAILED
    named = running(world, max_retries=3, retry_on_exit_codes=[75])
    lifecycle.run_ended(queue, named, Exit(ExitKind.FAILED, "command failed", 75), 30.0)
    assert named.state is JobState.QUEUED


@pytest.mark.parametrize("kind", [ExitKind.TIME_LIMIT, ExitKind.NO_ACCOUNT])
def test_a_failure_another_try_would_repeat_is_final_even_with_retries_left(world, kind):
    queue, _ = world
    job = running(world, max_retries=5)
    lifecycle.run_ended(
        queue, job, Exit(kind, "time limit" if kind is ExitKind.TIME_LIMIT else "no account"), 30.0
    )
    assert job.state is JobState.FAILED and not job.infrastructure_failure


@pytest.mark.parametrize("kind", [ExitKind.NODE_LOST, ExitKind.STOPPED, ExitKind.EVICTED])
def test_a_fault_that_is_not_the_jobs_is_retried_without_using_a_retry(world, kind):
    queue, _ = world
    job = running(world, max_retries=0)
    lifecycle.run_ended(queue, job, Exit(kind, "node lost"), 30.0)
    assert job.state is JobState.QUEUED and job.retries == 0
    assert job.events[-2].to_state is JobState.FAILED and job.events[-1].reason.startswith(
        "infrastructure failure"
    )


def test_a_cancelled_job_stays_cancelled_when_its_processes_are_gone(world):
    queue, _ = world
    job = running(world)
    queue.cancel(job.id, 20.0, "cancelled by alice")
    lifecycle.run_ended(queue, job, Exit(ExitKind.STOPPED), 21.0)
    assert job.state is JobState.CANCELLED


# --- GPUs leaving, placements, launches --------------------------------------------------


def test_eviction_requeues_a_job_not_yet_on_ray_and_stops_a_running_one(world):
    queue, inventory = world
    scheduled = queue.enqueue(make_spec(), now=0.0)
    lifecycle.apply_plan(queue, inventory, Plan(starts=[Start(scheduled.id, {"gmi-node-1": [7]})]), 1.0)
    effects, stopping = lifecycle.evict(queue, scheduled, "drained", 2.0)
    assert scheduled.state is JobState.QUEUED and not stopping and effects.save == [scheduled]
    job = running(world)
    effects, stopping = lifecycle.evict(queue, job, "GPU unhealthy", 3.0)
    assert stopping and effects.stop == [job] and job.state is JobState.RUNNING  # it ends as EVICTED later
    waiting = queue.enqueue(make_spec(), now=0.0)
    assert lifecycle.evict(queue, waiting, "drained", 4.0) == (lifecycle.Effects(), False)


def test_a_placement_that_timed_out_goes_back_in_line_and_is_not_a_failure(world):
    queue, inventory = world
    job = queue.enqueue(make_spec(max_retries=0), now=0.0)
    lifecycle.apply_plan(queue, inventory, Plan(starts=[Start(job.id, {"gmi-node-1": [0]})]), 1.0)
    queue.allocate(job.id, 1.0)
    lifecycle.placement_timed_out(queue, job, 60, 61.0)
    assert job.state is JobState.QUEUED and job.events[-1].reason == "placement timed out after 60 s"
    assert lifecycle.placement_timed_out(queue, job, 60, 62.0) == lifecycle.Effects()  # no longer placing


def test_a_failed_launch_is_an_infrastructure_failure_retried_for_free(world):
    queue, inventory = world
    job = queue.enqueue(make_spec(max_retries=0), now=0.0)
    lifecycle.apply_plan(queue, inventory, Plan(starts=[Start(job.id, {"gmi-node-1": [0]})]), 1.0)
    queue.allocate(job.id, 1.0)
    lifecycle.launch_failed(queue, job, "runner died", 2.0)
    assert job.state is JobState.QUEUED and job.retries == 0
    assert any(e.reason == "launch failed: runner died" for e in job.events)


def test_a_launch_a_restart_cut_short_goes_back_in_line_and_a_running_job_is_left_alone(world):
    queue, inventory = world
    job = queue.enqueue(make_spec(max_retries=0), now=0.0)
    lifecycle.apply_plan(queue, inventory, Plan(starts=[Start(job.id, {"gmi-node-1": [0]})]), 1.0)
    effects = lifecycle.not_started(queue, job, "orchestrator restarted before launch", 2.0)
    assert job.state is JobState.QUEUED and effects.save == [job] and job.retries == 0
    other = running(world)
    assert lifecycle.not_started(queue, other, "restart", 3.0) == lifecycle.Effects()
    assert other.state is JobState.RUNNING
