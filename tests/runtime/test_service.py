"""The orchestrator service without Ray: a fake backend (tests/runtime/fakes.py) and a
fake clock. Each test drives one event through the live service's code (the loop,
launch, monitor, finish, recovery) and checks what it did to the job and asked of the
backend. The same paths run on a real cluster in test_runtime.py and test_recovery.py."""

from __future__ import annotations

import asyncio
import getpass

import pytest

from orchestrator.core.errors import InvalidSpec
from orchestrator.core.lease import requeue_delay
from orchestrator.core.states import JobState
from orchestrator.head.service import OrchestratorService
from tests.runtime.fakes import FakeBackend

T0 = 1_800_000_000.0
# An account that exists, single- or multi-user. Nothing runs as it here (the backend is
# a fake), so the site allows it even where it is root (host/accounts.py).
USER = getpass.getuser()


class Clock:
    def __init__(self, t: float = T0):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


async def until(what, timeout: float = 10.0):
    """Wait for the service to get there (it works on its own tasks)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not (result := what()):
        assert asyncio.get_running_loop().time() < deadline, "the service did not get there"
        await asyncio.sleep(0.01)
    return result


async def cycles(w, n: int = 3):
    """Wait until the loop has run `n` more scheduling cycles: time enough for anything
    that was going to happen to have happened."""
    start = w.svc.queue.stats.scheduling_cycles
    await until(lambda: w.svc.queue.stats.scheduling_cycles >= start + n)


class World:
    def __init__(self, tmp_path, **config):
        self.clock = Clock()
        self.backend = FakeBackend(self.clock)
        self.config = {
            "store_path": str(tmp_path / "gpuq.db"),
            "data_dir": str(tmp_path / "data"),
            "loop_interval_s": 0.05,
            "warm_slots_per_node": 0,
            "telemetry_interval_s": 3600,
            "allowed_system_accounts": [USER],
            **config,
        }
        self.svc = self.start()

    def start(self) -> OrchestratorService:
        return OrchestratorService.open(self.config, backend=self.backend, clock=self.clock)

    async def submit(self, gpus: int = 1, **fields) -> str:
        spec = {"run_id": "t", "user": USER, "command": "true", "gpu_count": gpus, **fields}
        return (await self.svc.requests.submit(spec))["job_id"]

    def job(self, job_id: str):
        return self.svc.queue.get(job_id)

    async def running(self, job_id: str, attempt: int = 1):
        await until(
            lambda: self.job(job_id).state is JobState.RUNNING and self.job(job_id).attempts == attempt
        )
        return self.job(job_id)

    def stop(self) -> None:
        self.svc.close()


def scenario(tmp_path, body, **config):
    async def run():
        world = World(tmp_path, **config)
        try:
            await body(world)
        finally:
            world.stop()

    asyncio.run(run())


def test_a_job_runs_and_completes_at_the_clocks_times(tmp_path):
    async def body(w):
        job_id = await w.submit(gpus=2)
        job = await w.running(job_id)
        assert w.backend.started == [(job_id, 1)] and job.state_times[JobState.RUNNING] == T0
        w.clock.advance(30)
        w.backend.end(job_id, 1, exit_code=0)
        await until(lambda: job.state is JobState.COMPLETED)
        assert job.state_times[JobState.COMPLETED] == T0 + 30 and job.exit_code == 0
        assert [(r.job_id, r.gpu_seconds) for r in w.svc.accounting.runs] == [(job_id, 60.0)]
        assert w.svc.inventory.free_count() == 16

    scenario(tmp_path, body)


def test_a_failed_command_is_retried_then_fails_for_good(tmp_path):
    async def body(w):
        job_id = await w.submit(max_retries=1)
        await w.running(job_id)
        w.backend.end(job_id, 1, exit_code=3)
        job = await w.running(job_id, attempt=2)
        assert job.retries == 1
        w.backend.end(job_id, 2, exit_code=3)
        await until(lambda: job.state is JobState.FAILED)
        assert job.exit_code == 3 and job.failure_reason == "command failed"

    scenario(tmp_path, body)


def test_a_time_limit_is_final_even_with_retries_left(tmp_path):
    async def body(w):
        job_id = await w.submit(max_retries=3)
        job = await w.running(job_id)
        w.backend.end(job_id, 1, exit_code=-9, reason="time_limit")
        await until(lambda: job.state is JobState.FAILED)
        await cycles(w)  # nothing starts it again
        assert w.backend.started == [(job_id, 1)] and job.failure_reason == "time limit"

    scenario(tmp_path, body)


def test_a_lost_runner_puts_the_job_back_without_a_retry_once_its_supervisor_could_have_stopped_it(tmp_path):
    """Its node is up, but its supervisor may still be giving the job its grace: the job
    moves only when the stop has certainly happened."""

    async def body(w):
        job_id = await w.submit(max_retries=0)
        await w.running(job_id)
        w.backend.lose(job_id, 1)
        await cycles(w)
        assert w.job(job_id).state is JobState.RUNNING and w.job(job_id).attempts == 1
        w.clock.advance(w.svc.site.stop_grace_s + 20)
        job = await w.running(job_id, attempt=2)
        assert job.retries == 0
        assert any(e.reason.startswith("node lost") for e in job.events)

    scenario(tmp_path, body)


def test_a_lost_runners_job_ends_by_the_record_its_supervisor_left_on_the_node(tmp_path):
    async def body(w):
        job_id = await w.submit(max_retries=0)
        await w.running(job_id)
        w.backend.lose(job_id, 1)
        await cycles(w)
        w.backend.on_disk[(job_id, 1, 0)] = {"exit_code": 0, "signal": None, "reason": "exited"}
        await until(lambda: w.job(job_id).state is JobState.COMPLETED)
        assert w.job(job_id).attempts == 1

    scenario(tmp_path, body)


def test_a_placement_that_times_out_goes_back_in_line_and_starts_later(tmp_path):
    async def body(w):
        w.backend.placeable = False
        job_id = await w.submit()
        job = w.job(job_id)
        await until(lambda: any(e.reason.startswith("placement timed out") for e in job.events))
        assert job.attempts == 0 and job.retries == 0
        w.backend.placeable = True
        await w.running(job_id)

    scenario(tmp_path, body)


def test_a_critical_job_preempts_a_low_one_which_goes_back_in_line(tmp_path):
    async def body(w):
        low = await w.submit(gpus=16, priority="LOW")
        await w.running(low)
        critical = await w.submit(gpus=16, priority="CRITICAL")
        await until(lambda: (low, 1) in w.backend.stopped)
        await w.running(critical)
        assert w.job(low).state is JobState.QUEUED and w.job(low).retries == 0
        w.backend.end(critical, 1)
        await w.running(low, attempt=2)

    scenario(tmp_path, body)


def test_a_job_whose_gpus_leave_service_is_stopped_and_requeued_as_not_its_fault(tmp_path):
    async def body(w):
        job_id = await w.submit(max_retries=0)
        job = await w.running(job_id)
        w.svc.launches.evict(job, "GPU gmi-node-1:0 unhealthy: XID 79")
        await until(lambda: (job_id, 1) in w.backend.stopped)
        await w.running(job_id, attempt=2)
        assert job.retries == 0 and any("XID 79" in e.reason for e in job.events)

    scenario(tmp_path, body)


def test_after_a_restart_a_running_job_is_adopted_not_started_again(tmp_path):
    async def body(w):
        job_id = await w.submit()
        await w.running(job_id)
        w.svc.close()
        w.svc = w.start()  # the same store, the same runners
        job = w.job(job_id)
        assert job.state is JobState.RUNNING
        w.clock.advance(5)
        w.backend.end(job_id, 1)
        await until(lambda: job.state is JobState.COMPLETED)
        assert w.backend.started == [(job_id, 1)]

    scenario(tmp_path, body)


def test_a_job_cancelled_while_it_is_being_placed_never_starts(tmp_path):
    async def body(w):
        w.backend.placeable = False  # hold it in placement
        job_id = await w.submit()
        await until(lambda: w.job(job_id).state is JobState.ALLOCATING)
        await w.svc.requests.cancel(job_id)
        w.backend.placeable = True
        await cycles(w)
        assert w.job(job_id).state is JobState.CANCELLED and w.backend.started == []
        assert w.svc.inventory.free_count() == 16

    scenario(tmp_path, body)


def test_a_reservation_stays_with_its_job_from_cycle_to_cycle(tmp_path):
    async def body(w):
        running = await w.submit(gpus=4, time_limit="10h")
        await w.running(running)
        big_day = await w.submit(gpus=16, time_limit="24h")
        await until(lambda: w.svc.loop.reserved == (big_day,))
        big_hour = await w.submit(gpus=16, time_limit="1h")
        w.clock.advance(5 * 3600)  # long enough for the order alone to prefer the shorter job
        await cycles(w)
        assert w.svc.loop.reserved == (big_day,)
        w.backend.end(running, 1)
        await w.running(big_day)
        assert w.job(big_hour).state is JobState.QUEUED

    scenario(tmp_path, body)


def test_a_held_job_waits_until_its_owner_releases_it(tmp_path):
    async def body(w):
        blocker = await w.submit(gpus=16)
        await w.running(blocker)
        job_id = await w.submit()
        assert (await w.svc.requests.hold(job_id))["state"] == "held"
        w.backend.end(blocker, 1)
        await until(lambda: w.job(blocker).state is JobState.COMPLETED)
        await cycles(w)  # cycles with 16 GPUs free: it stays held
        assert w.job(job_id).state is JobState.HELD and w.backend.started == [(blocker, 1)]
        assert (await w.svc.requests.release(job_id))["state"] == "queued"
        await w.running(job_id)

    scenario(tmp_path, body)


# --- nodes: down, back ----------------------------------------------------------------


def test_a_node_ray_declares_dead_is_down_and_its_job_runs_on_the_other_node(tmp_path):
    async def body(w):
        job_id = await w.submit(gpus=8, max_retries=0)
        job = await w.running(job_id)
        lost = next(iter(job.allocation))
        del w.backend.node_sizes[lost]  # Ray lists it dead
        w.backend.lose(job_id, 1)  # and its runner is gone with it
        await until(lambda: lost in w.svc.fleet.down)
        await cycles(w)
        # It may still run there, out of reach: not requeued before the node's fence ends.
        down = w.svc.fleet.down[lost]
        assert down.fencing and w.job(job_id).state is JobState.RUNNING and w.job(job_id).attempts == 1
        assert down.requeue_at == w.clock() + requeue_delay(
            w.svc.site.node_lease_s, w.svc.site.node_fence_margin_s
        )
        assert any(e.trigger == "fencing" for e in w.job(job_id).events)
        w.clock.advance(down.requeue_at - w.clock())
        job = await w.running(job_id, attempt=2)
        assert list(job.allocation) != [lost] and job.retries == 0
        assert any(f"node {lost} down" in e.reason for e in job.events)
        assert {s.shown for s in w.svc.inventory.nodes[lost]} == {"down"}
        assert w.backend.lost_nodes == [lost] and lost in w.svc.fleet.down
        another = await w.submit(gpus=8)
        await cycles(w)
        assert w.job(another).state is JobState.QUEUED  # nothing is planned on a down node

    scenario(tmp_path, body)


def test_a_node_cut_off_is_fenced_by_its_lease_and_its_job_requeued_only_at_the_fences_end(tmp_path):
    """Ray still lists the node (a partition Ray has not judged yet), but its lease is not
    renewed: after node_lease_s it is down and fencing; its job moves at the fence's end."""

    async def body(w):
        job_id = await w.submit(gpus=8, max_retries=0)
        job = await w.running(job_id)
        (node,) = job.allocation
        await cycles(w)
        w.backend.silent.add(node)
        w.clock.advance(w.svc.site.node_lease_s - 1)
        await cycles(w)
        assert node not in w.svc.fleet.down  # a lease not yet run out: nothing happens
        w.clock.advance(2)
        await until(lambda: node in w.svc.fleet.down)
        down = w.svc.fleet.down[node]
        assert down.fencing and "lease was not renewed" in down.reason
        assert w.job(job_id).state is JobState.RUNNING and w.backend.stopped == []
        assert (await w.svc.cluster.status())["details"]["fencing"] == {node: down.requeue_at}
        w.clock.advance(down.requeue_at - w.clock())
        job = await w.running(job_id, attempt=2)
        assert list(job.allocation) != [node] and job.retries == 0
        await cycles(w)  # Ray still lists it, but it is not back until its lease is renewed
        assert w.svc.fleet.down[node].fenced
        w.backend.silent.discard(node)
        await cycles(w)  # renewed, but Ray could still declare its raylet dead: not yet
        assert node in w.svc.fleet.down
        w.clock.advance(60)
        await until(lambda: node not in w.svc.fleet.down)

    scenario(tmp_path, body)


def test_a_flapping_lease_shorter_than_the_lease_stops_nothing(tmp_path):
    async def body(w):
        job_id = await w.submit(gpus=8)
        (node,) = (await w.running(job_id)).allocation
        for _ in range(5):  # cut for most of a lease, five times
            await cycles(w)
            w.backend.silent.add(node)
            w.clock.advance(w.svc.site.node_lease_s - 2)
            await cycles(w)
            w.backend.silent.discard(node)
            await until(lambda: w.svc.watch.contacts.late(node, w.clock()) == 0)
        assert node not in w.svc.fleet.down
        assert w.job(job_id).state is JobState.RUNNING and w.job(job_id).attempts == 1

    scenario(tmp_path, body)


def test_a_node_that_registers_again_returns_to_service_but_a_drained_gpu_stays_drained(tmp_path):
    async def body(w):
        await w.svc.cluster.drain("gmi-node-1", [3], "fan noise", "admin", requeue=False)
        w.backend.node_sizes.pop("gmi-node-1")
        await until(lambda: "gmi-node-1" in w.svc.fleet.down)
        w.backend.node_sizes["gmi-node-1"] = 8
        w.backend.node_ids["gmi-node-1"] = "id-new-raylet"
        await cycles(w)
        assert w.svc.fleet.down["gmi-node-1"].fencing  # back in Ray, but not before its fence ends
        w.clock.advance(60)
        await until(lambda: "gmi-node-1" not in w.svc.fleet.down)
        shown = [s.shown for s in w.svc.inventory.nodes["gmi-node-1"]]
        assert shown == ["free"] * 3 + ["drained"] + ["free"] * 4
        assert [e["action"] for e in w.svc.fleet.events if e["node"] == "gmi-node-1"][-3:] == [
            "down",
            "fenced",
            "returned",
        ]

    scenario(tmp_path, body)


def test_with_return_to_service_off_a_node_comes_back_drained(tmp_path):
    async def body(w):
        w.backend.node_sizes.pop("gmi-node-2")
        await until(lambda: "gmi-node-2" in w.svc.fleet.down)
        w.backend.node_sizes["gmi-node-2"] = 8
        w.clock.advance(60)
        await until(lambda: "gmi-node-2" not in w.svc.fleet.down)
        assert {s.shown for s in w.svc.inventory.nodes["gmi-node-2"]} == {"drained"}
        assert await w.svc.cluster.undrain("gmi-node-2", None, "admin", "checked") is not None
        assert {s.shown for s in w.svc.inventory.nodes["gmi-node-2"]} == {"free"}

    scenario(tmp_path, body, node_return_to_service=False)


def test_a_placement_waiting_on_a_node_that_dies_goes_back_in_line_at_once(tmp_path):
    async def body(w):
        w.backend.placeable, w.backend.placement_wait_s = False, 3600  # Ray would wait for ever
        job_id = await w.submit(gpus=8)
        await until(lambda: w.job(job_id).state is JobState.ALLOCATING)
        node = next(iter(w.job(job_id).allocation))
        del w.backend.node_sizes[node]
        await until(
            lambda: any(
                f"node {node} down" in e.reason and e.to_state is JobState.QUEUED
                for e in w.job(job_id).events
            )
        )
        w.backend.placeable = True
        job = await w.running(job_id)
        assert node not in job.allocation and job.attempts == 1

    scenario(tmp_path, body)


def test_a_node_dead_across_an_orchestrator_restart_is_still_shown_down(tmp_path):
    async def body(w):
        w.backend.node_sizes.pop("gmi-node-2")
        await until(lambda: "gmi-node-2" in (w.svc.store.get("fleet") or {}).get("down", {}))  # durable
        w.svc.close()
        w.svc = w.start()
        assert {s.shown for s in w.svc.inventory.nodes["gmi-node-2"]} == {"down"}
        assert w.svc.inventory.free_count() == 8

    scenario(tmp_path, body)


PACKAGE = "gcs://_ray_pkg_0123456789abcdef.zip"
MODULE = "gcs://_ray_pkg_fedcba9876543210.zip"


def test_a_runtime_env_is_made_on_the_node_with_the_owners_packages_and_its_time_is_in_the_history(tmp_path):
    from orchestrator.core.packages import stored_uri

    async def body(w):
        w.backend.packages[stored_uri(USER, PACKAGE)] = b"PK"
        renv = {"working_dir": PACKAGE, "pip": ["tiny==1.0"], "env_vars": {"A": "1"}}
        job_id = await w.submit(runtime_env=renv)
        plain = await w.submit()
        job = await w.running(job_id)
        await w.running(plain)
        made = next(e for e in w.backend.envs if e)
        # The package as alice stored it; pip's list; env_vars go to the job's env instead.
        assert made["packages"] == [
            {"kind": "working_dir", "uri": PACKAGE, "stored": stored_uri(USER, PACKAGE)}
        ]
        assert made["pip"] == {"packages": ["tiny==1.0"], "pip_check": False}
        assert None in w.backend.envs and job.spec.env == {"A": "1"}
        assert any(e.trigger == "runtime_env" and "2.5 s" in e.reason for e in job.events)

    scenario(tmp_path, body)


def test_a_job_naming_a_package_its_user_did_not_upload_is_refused_at_submit(tmp_path):
    from orchestrator.core.errors import InvalidSpec
    from orchestrator.core.packages import stored_uri

    async def body(w):
        w.backend.packages[stored_uri("bob", PACKAGE)] = b"PK"  # bob's, under the same name
        with pytest.raises(InvalidSpec) as refused:
            await w.submit(runtime_env={"working_dir": PACKAGE})  # as USER
        assert refused.value.errors[0][0] == "runtime_env.working_dir"
        assert f"not on this cluster for {USER}" in refused.value.errors[0][1]
        assert not list(w.svc.queue.jobs())

    scenario(tmp_path, body)


def test_a_runtime_env_that_fails_to_set_up_fails_the_job_once_with_the_tools_words_in_its_log(tmp_path):
    async def body(w):
        w.backend.env_failure = "ERROR: No matching distribution found for tiny==9.9"
        job_id = await w.submit(runtime_env={"pip": ["tiny==9.9"]}, max_retries=3)
        job = await until(lambda: w.job(job_id).state is JobState.FAILED and w.job(job_id))
        await cycles(w)  # not retried: the same spec fails the same way
        assert job.state is JobState.FAILED and job.retries == 0 and w.backend.started == []
        assert (
            job.failure_reason
            == "runtime env setup failed: ERROR: No matching distribution found for tiny==9.9"
        )
        assert w.svc.inventory.free_count() == 16 and not w.backend.slots  # its runners are gone
        log = await w.svc.requests.logs(job_id)
        assert "No matching distribution found for tiny==9.9" in log["data"] and log["done"]

    scenario(tmp_path, body)


def test_packages_named_by_unfinished_jobs_are_kept_under_their_owners_names(tmp_path):
    from orchestrator.core.packages import stored_uri

    async def body(w):
        for uri in (PACKAGE, MODULE):
            w.backend.packages[stored_uri(USER, uri)] = b"PK"
        w.backend.placeable = False  # both stay in line
        await w.submit(runtime_env={"working_dir": PACKAGE})
        await w.submit(runtime_env={"py_modules": [MODULE]})
        w.svc.uploads.keep()
        both = {stored_uri(USER, PACKAGE), stored_uri(USER, MODULE)}
        await until(lambda: both in w.backend.kept)

    scenario(tmp_path, body)


def test_one_bulk_call_cancels_a_1000_job_array_in_one_audited_commit(tmp_path):
    from orchestrator.core.errors import Forbidden, InvalidSpec
    from orchestrator.core.rights import Caller

    async def body(w):
        w.backend.placeable = False  # nothing starts: all wait
        spec = {"run_id": "sweep", "user": "alice", "command": "true", "gpu_count": 1, "array": 1000}
        out = await w.svc.requests.submit(spec, by=Caller("alice", "user"))
        mine_too = await w.svc.requests.submit(
            {**spec, "array": None, "run_id": "solo"}, by=Caller("alice", "user")
        )
        theirs = await w.svc.requests.submit(
            {**spec, "array": None, "user": "bob", "run_id": "bobs"}, by=Caller("bob", "user")
        )
        array_id = out["array"]["id"]
        assert len(w.svc.queue.array(array_id)) == 1000
        alice = Caller("alice", "user")
        try:
            await w.svc.requests.bulk("cancel", {"user": "bob"}, by=alice)
            raise AssertionError("alice cancelled bob's jobs")
        except Forbidden:
            pass
        try:
            await w.svc.requests.bulk("cancel", {}, by=alice)
            raise AssertionError("an empty selector cancelled something")
        except InvalidSpec:
            pass
        done = await w.svc.requests.bulk("cancel", {"ids": [array_id]}, by=alice)
        assert done["changed"] == 1000 and done["matched"] == 1000 and len(done["job_ids"]) == 100
        assert all(j.state is JobState.CANCELLED for j in w.svc.queue.array(array_id))
        again = await w.svc.requests.bulk("cancel", {"array": array_id}, by=alice)
        assert again["changed"] == 0 and again["unchanged"] == {"is cancelled": 1000}
        held = await w.svc.requests.bulk(
            "hold", {"states": ["queued"]}, by=alice
        )  # alice's waiting jobs: only her solo job
        assert held["job_ids"] == [mine_too["job_id"]] and held["matched"] == 1
        named = await w.svc.requests.bulk(
            "release", {"ids": [theirs["job_id"], mine_too["job_id"]]}, by=alice
        )
        assert named["changed"] == 1 and named["unchanged"] == {"belongs to another user": 1}
        assert w.job(theirs["job_id"]).state is JobState.QUEUED
        trail = await w.svc.cluster.audit_trail(limit=10, action="cancel (bulk)")
        assert len(trail) == 1 and trail[0]["detail"]["count"] == 1000, trail

    scenario(tmp_path, body, unix_users={"alice": USER, "bob": USER})


def test_a_three_step_pipeline_runs_in_order_and_survives_a_restart(tmp_path):
    async def body(w):
        pre = await w.submit(run_id="preprocess")
        train = await w.submit(
            gpus=8, run_id="train", dependency=f"afterok:{pre[:8]}"
        )  # a prefix, as printed
        evaluate = await w.submit(run_id="evaluate", dependency=f"afterok:{train}")
        assert w.job(train).spec.dependency == f"afterok:{pre}"  # stored with the whole id
        await w.running(pre)
        await cycles(w)
        assert w.backend.started == [(pre, 1)]  # GPUs are free, but the others wait for theirs
        line = (await w.svc.requests.queue_view())["jobs"]
        waiting = {j["id"]: j for j in line}
        assert waiting[train]["reason"] == "Dependency"
        assert waiting[train]["message"] == f"waits for preprocess ({pre[:8]}) to complete (running)"
        assert waiting[train]["estimated_start"] == T0 + w.job(pre).time_limit  # when its target should end
        w.svc.close()
        w.svc = w.start()  # the dependencies are in the store
        await cycles(w)
        assert w.job(train).state is JobState.QUEUED and w.backend.started == [(pre, 1)]
        w.backend.end(pre, 1)
        await w.running(train)
        assert w.job(evaluate).state is JobState.QUEUED
        w.backend.end(train, 1)
        await w.running(evaluate)
        assert [s[0] for s in w.backend.started] == [pre, train, evaluate]

    scenario(tmp_path, body)


def test_a_failed_first_step_cancels_the_rest_as_never_satisfiable(tmp_path):
    async def body(w):
        first = await w.submit(run_id="first", max_retries=0)
        second = await w.submit(run_id="second", dependency=f"afterok:{first}")
        third = await w.submit(run_id="third", dependency=f"afterok:{second}")
        cleanup = await w.submit(run_id="cleanup", dependency=f"afternotok:{first}")
        await w.running(first)
        w.backend.end(first, 1, exit_code=2)
        await until(lambda: w.job(third).state is JobState.CANCELLED)
        assert w.job(second).failure_reason.startswith("DependencyNeverSatisfied: first (")
        assert "failed, and afterok needed it to complete" in w.job(second).failure_reason
        assert w.job(third).failure_reason.startswith("DependencyNeverSatisfied: second (")
        await w.running(cleanup)  # afternotok: runs because the first failed

    scenario(tmp_path, body)


def test_a_site_may_hold_never_satisfiable_jobs_and_unknown_targets_are_refused(tmp_path):
    async def body(w):
        first = await w.submit(run_id="first", max_retries=0)
        second = await w.submit(run_id="second", dependency=f"afterok:{first}")
        await w.running(first)
        w.backend.end(first, 1, exit_code=2)
        await until(lambda: w.job(second).state is JobState.HELD)
        try:
            await w.submit(dependency="afterok:ffffffff")
            raise AssertionError("a dependency on no job was accepted")
        except InvalidSpec as e:
            assert e.errors[0][0] == "dependency" and "ffffffff" in e.errors[0][1]
        answer = await w.svc.requests.submit(
            {
                "run_id": "t",
                "user": USER,
                "command": "true",
                "gpu_count": 1,
                "dependency": f"afterany:{second}",
                "test_only": True,
            }
        )
        assert answer["would_start"] is False and answer["reason"] == "Dependency"

    scenario(tmp_path, body, dependency_never_satisfied="hold")


def test_the_10001st_live_job_of_one_user_is_refused_while_another_user_submits(tmp_path):
    from orchestrator.core.errors import OverLimit

    async def body(w):
        await w.submit(array=10_000)  # array members count, as Slurm's MaxSubmitJobs counts them
        with pytest.raises(OverLimit) as refused:
            await w.submit()
        assert refused.value.limit == "max_jobs_per_user" and "10000 per user" in str(refused.value)
        assert w.svc.queue.live_of(USER) == 10_000  # nothing was enqueued
        assert await w.submit(user="bob")  # another user is not held back
        await w.svc.requests.cancel(next(j.id for j in w.svc.queue.jobs() if j.spec.user == USER))
        assert await w.submit()  # one ended: one more fits

    scenario(tmp_path, body, start_jobs=False, unix_users={"bob": USER})


def test_a_dependency_may_stand_for_at_most_max_dependency_jobs(tmp_path):
    from orchestrator.core.errors import InvalidSpec

    async def body(w):
        big = (
            await w.svc.requests.submit(
                {"run_id": "big", "user": USER, "command": "true", "gpu_count": 1, "array": 1001}
            )
        )["array"]["id"]
        with pytest.raises(InvalidSpec) as refused:
            await w.submit(dependency="afterok:" + ":".join([big] * 500))
        assert refused.value.errors[0][0] == "dependency" and "1001 jobs" in refused.value.errors[0][1]
        small = (
            await w.svc.requests.submit(
                {"run_id": "small", "user": USER, "command": "true", "gpu_count": 1, "array": 1000}
            )
        )["array"]["id"]
        ok = await w.submit(dependency="afterok:" + ":".join([small] * 500))  # named 500 times, 1000 jobs
        assert w.job(ok).spec.dependency == f"afterok:{small}"

    scenario(tmp_path, body, start_jobs=False)


def test_cycles_judge_only_dependents_whose_targets_moved(tmp_path, monkeypatch):
    """The work of a cycle follows what changed: a dependent on a 10,000-job array is
    judged once, then not again until a member moves."""
    from orchestrator.core import dependencies

    judged = []
    real = dependencies.verdict
    monkeypatch.setattr(
        dependencies, "verdict", lambda conds, members: judged.append(1) or real(conds, members)
    )

    async def body(w):
        array = (
            await w.svc.requests.submit(
                {"run_id": "a", "user": USER, "command": "true", "gpu_count": 1, "array": 10_000}
            )
        )["array"]["id"]
        waiting = [await w.submit(run_id=f"after{i}", dependency=f"afterok:{array}") for i in range(5)]
        await cycles(w, 2)
        assert len(judged) == 5
        await cycles(w, 5)
        assert len(judged) == 5  # nothing moved: nothing judged
        await w.svc.requests.cancel(w.svc.queue.array(array)[0].id)
        await until(lambda: all(w.job(j).state is JobState.CANCELLED for j in waiting))  # afterok never met
        assert len(judged) == 10

    scenario(tmp_path, body, start_jobs=False, max_dependency_jobs=10_000, max_jobs_per_user=20_000)


def test_packages_past_a_users_byte_quota_are_refused_naming_it(tmp_path):
    from orchestrator.core.errors import OverLimit
    from orchestrator.core.rights import Caller

    alice, bob = Caller(USER, "user"), Caller("bob", "user")

    async def body(w):
        await w.svc.requests.package_put("gcs://_ray_pkg_aaaa.zip", b"a" * 3000, by=alice)
        await w.svc.requests.package_put(
            "gcs://_ray_pkg_aaaa.zip", b"a" * 3000, by=alice
        )  # the same again: no more held
        with pytest.raises(OverLimit) as refused:
            await w.svc.requests.package_put("gcs://_ray_pkg_bbbb.zip", b"b" * 2000, by=alice)
        assert refused.value.limit == "max_package_bytes_per_user"
        await w.svc.requests.package_put(
            "gcs://_ray_pkg_bbbb.zip", b"b" * 2000, by=bob
        )  # bob's quota is his own
        w.clock.advance(3601)  # no job named alice's package: it has gone from the cluster
        await w.svc.requests.package_put("gcs://_ray_pkg_cccc.zip", b"c" * 2000, by=alice)
        w.svc.close()
        w.svc = w.start()  # a restart counts what was uploaded within package_keep_s again
        with pytest.raises(OverLimit):
            await w.svc.requests.package_put("gcs://_ray_pkg_dddd.zip", b"d" * 3000, by=alice)

    scenario(tmp_path, body, max_package_bytes_per_user=4096, package_keep_s=3600, unix_users={"bob": USER})


def test_ended_jobs_leave_memory_and_every_read_still_finds_them(tmp_path):
    from orchestrator.core.errors import IllegalTransition

    async def body(w):
        done = []
        for i in range(3):
            job_id = await w.submit(run_id=f"old{i}")
            await w.running(job_id)
            w.backend.end(job_id, 1, exit_code=0)
            await until(lambda: w.job(job_id).state is JobState.COMPLETED)  # noqa: B023 - awaited here
            done.append(job_id)
        live = await w.submit(run_id="live", gpus=16)
        await w.running(live)
        w.clock.advance(601)
        await w.svc.durable.save([])  # every end is written
        w.svc.loop.forget_history()
        assert not any(j in w.svc.queue for j in done) and live in w.svc.queue
        shown = await w.svc.requests.get_job(done[0][:8])  # a prefix, as printed
        assert shown["id"] == done[0] and shown["state"] == "completed" and shown["queue_position"] is None
        page = await w.svc.requests.list_jobs(limit=2)
        assert page["total"] == 4 and [j["run_id"] for j in page["jobs"]] == ["live", "old2"]
        rest = await w.svc.requests.list_jobs(limit=10, offset=2)
        assert [j["run_id"] for j in rest["jobs"]] == ["old1", "old0"]
        assert (await w.svc.requests.list_jobs(state="completed"))["total"] == 3
        with pytest.raises(IllegalTransition):
            await w.svc.requests.cancel(done[1])
        assert w.svc.queue.summary()["completed"] == 3
        after = await w.submit(run_id="after", dependency=f"afterok:{done[2]}")  # a target only in the store
        await w.svc.requests.cancel(live)
        await w.running(after)

        w.svc.close()
        w.svc = w.start()  # a restart loads live jobs and recent history only
        assert not any(j in w.svc.queue for j in done) and after in w.svc.queue
        assert w.svc.queue.summary()["completed"] == 3 and (await w.svc.requests.list_jobs())["total"] == 5
        newest = await w.submit(run_id="newest")
        assert w.job(newest).seq > max(w.svc.records.find(j).seq for j in done)

    scenario(tmp_path, body, job_memory_s=600)


def test_history_past_retention_is_pruned_and_usage_and_audit_stay(tmp_path):
    async def body(w):
        job_id = await w.submit(gpus=2)
        await w.running(job_id)
        w.clock.advance(30)
        w.backend.end(job_id, 1, exit_code=0)
        await until(lambda: w.job(job_id).state is JobState.COMPLETED)
        await w.svc.durable.save([])
        usage, audit = w.svc.store.usage(), w.svc.store.audit()
        w.clock.advance(2 * 86400)
        w.svc.loop.forget_history()
        assert w.svc.records.history.prune(w.clock() - 86400) == 1
        assert w.svc.records.history.job(job_id) is None
        assert w.svc.store.usage() == usage and w.svc.store.audit() == audit  # gpuq usage's totals stay
        assert w.svc.accounting.runs and w.svc.accounting.runs[0].gpu_seconds == 60.0

    scenario(tmp_path, body, job_memory_s=60, job_retention_days=1)


def test_every_part_is_handed_what_its_protocols_ask_for():
    """Parts meet each other through Protocols (bulk.JobStops, watch.JobEvictions,
    backends.Backend): what the composition root hands each must have every method the
    Protocol names, with its parameters."""
    import inspect

    from orchestrator.head.backends import Backend
    from orchestrator.head.bulk import JobStops
    from orchestrator.head.launches import Launches
    from orchestrator.head.watch import JobEvictions
    from tests.runtime.fakes import FakeBackend

    for protocol, part in ((JobStops, Launches), (JobEvictions, Launches), (Backend, FakeBackend)):
        for name, member in inspect.getmembers(protocol, inspect.isfunction):
            if name.startswith("_"):
                continue
            wanted = [p for p in inspect.signature(member).parameters if p != "self"]
            have = inspect.signature(getattr(part, name)).parameters
            assert all(p in have for p in wanted), (protocol.__name__, name, wanted, list(have))


def test_gpus_idle_while_a_job_waits_are_counted_by_cause_for_status_and_metrics(tmp_path):
    """An 8-GPU job runs; a 16-GPU job waits for it, and the other node's 8 GPUs are kept
    for it (drained for its reservation). 100 s of that: half the cluster busy while a
    job waited, the other half idle "for a reservation"."""

    async def body(w):
        holder = await w.submit(gpus=8, time_limit=3600)
        await w.running(holder)
        big = await w.submit(gpus=16, time_limit=600)
        await until(lambda: w.svc.loop.reserved == (big,))
        await cycles(w)
        w.clock.advance(100)
        await cycles(w)
        busy = (await w.svc.cluster.status())["details"]["busy_while_waiting"]
        assert busy["utilization_while_waiting"] == pytest.approx(0.5)
        assert busy["idle_share_by_cause"] == {"reservation": pytest.approx(0.5)}
        assert busy["text"] == "last 24 h: 50.0% busy while jobs waited; 50.0% draining for reservations"
        text = w.svc.metrics.text().decode()
        assert 'gpuq_gpu_idle_while_waiting_seconds_total{cause="reservation"} 800.0' in text
        assert "gpuq_gpu_busy_while_waiting_seconds_total 800.0" in text
        assert "gpuq_gpu_while_waiting_seconds_total 1600.0" in text
        assert 'gpuq_gpu_idle_while_waiting_seconds_total{cause="fragmentation"} 0.0' in text

    scenario(tmp_path, body)
