"""Telemetry, GPU health, drains, idle GPUs, usage and metrics on the real local cluster.

The nodes here have no NVML, so their telemetry is the simulation: these tests check
that it says so, and drive the health path by injecting faults into it.
"""

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.orchestration import Harness
from tests.raycluster import wait_for

# Short windows; silence only after a minute, so that a node slow to answer on a loaded
# 2-core machine is not taken for dead (the silence test sets its own).
WATCHED = dict(telemetry_interval_s=0.5, idle_window_s=2.0, idle_utilization=0.05, node_silent_after_s=60.0)
BUSY = "python3 -c 'import time\nt = time.time()\nwhile time.time() - t < 120: pass'"
ADMIN = {"Authorization": "Bearer admin-token"}
ALICE = {"Authorization": "Bearer alice-token"}


@pytest.fixture
def watched(ray_cluster, tmp_path):
    harness = Harness(tmp_path, **WATCHED)
    yield harness
    harness.teardown()


def gpus_of(resources: dict) -> dict[str, dict]:
    return {g["name"]: {**g, "node": n["node"]} for n in resources["nodes"] for g in n["gpus"]}


def where(job: dict) -> list[str]:
    return [f"{node}:{g}" for node, gs in job["allocation"].items() for g in gs]


def test_simulated_telemetry_says_it_is_simulated(watched):
    res = wait_for(
        lambda: (r := watched.call("resources")) and all(n["telemetry"]["source"] for n in r["nodes"]) and r,
        30,
        what="a telemetry report from every node",
    )
    for node in res["nodes"]:
        assert node["telemetry"]["source"] == "simulated"
        assert "NVML is not available" in node["telemetry"]["detail"]
    metrics = {f.name: f for f in text_string_to_metric_families(watched.call("metrics_text").decode())}
    sources = {s.labels["source"] for s in metrics["gpuq_gpu_utilization_ratio"].samples}
    assert sources == {"simulated"}
    assert {s.labels["source"] for s in metrics["gpuq_node_telemetry_info"].samples} == {"simulated"}


def test_a_busy_job_reads_busy_and_a_sleeping_job_is_flagged_idle(watched):
    busy = watched.submit(BUSY, run_id="busy")
    sleepy = watched.submit("sleep 120", run_id="sleepy")
    watched.wait_state(busy, "running")
    watched.wait_state(sleepy, "running")
    idle_gpu = where(watched.job(sleepy))[0]
    busy_gpu = where(watched.job(busy))[0]
    job = wait_for(
        lambda: (j := watched.job(sleepy)) and any(e["trigger"] == "idle" for e in j["events"]) and j,
        30,
        what="the sleeping job to be noted idle",
    )
    assert job["idle_gpus"] == [idle_gpu]
    assert [e["reason"] for e in job["events"] if e["trigger"] == "idle"][0].startswith(
        f"GPU {idle_gpu} under 5%"
    )
    gpus = gpus_of(watched.call("resources"))
    assert gpus[idle_gpu]["idle"] is True
    assert gpus[busy_gpu]["idle"] is False and gpus[busy_gpu]["telemetry"]["utilization"] > 0.3
    assert watched.job(busy)["idle_gpus"] == []
    assert watched.call("status")["details"]["idle_gpus"] == 1


def test_an_injected_xid_requeues_the_job_and_takes_out_exactly_that_gpu(watched):
    job_id = watched.submit("sleep 300", gpus=2, run_id="victim")
    first = watched.wait_state(job_id, "running")
    node, gpu = where(first)[1].split(":")
    watched.call("inject", node, "xid", int(gpu), 79)

    job = wait_for(
        lambda: (j := watched.job(job_id))["attempts"] == 2 and j["state"] == "running" and j,
        60,
        what="the job to be requeued and running again",
    )
    assert f"{node}:{gpu}" not in where(job)
    assert job["retries"] == 0, "an infrastructure failure must not use up the job's retries"
    failed = [e for e in job["events"] if e["to_state"] == "failed"]
    assert failed and f"XID 79 on {node}:{gpu}" in failed[0]["reason"]

    gpus = gpus_of(watched.call("resources"))
    unhealthy = [name for name, g in gpus.items() if g["state"] == "unhealthy"]
    assert unhealthy == [f"{node}:{gpu}"]
    assert gpus[f"{node}:{gpu}"]["out_of_service"]["by"] == "gpuq"
    events = watched.call("fleet_events")
    assert events[0]["action"] == "unhealthy" and events[0]["job_id"] == job_id


def test_ray_never_hands_out_a_quarantined_gpu_until_it_is_undrained(watched):
    watched.call("inject", "gmi-node-2", "xid", 3, 79)
    wait_for(
        lambda: gpus_of(watched.call("resources"))["gmi-node-2:3"]["state"] == "unhealthy",
        30,
        what="gmi-node-2:3 to be unhealthy",
    )
    # With gmi-node-1 drained, a 7-GPU job can only run on gmi-node-2's seven healthy GPUs:
    # Ray must bind exactly those, not the quarantined one.
    watched.call("drain", "gmi-node-1", None, "maintenance", "root")
    job_id = watched.submit("sleep 300", gpus=7, run_id="seven")
    job = watched.wait_state(job_id, "running", timeout=60)
    assert job["allocation"] == {"gmi-node-2": [0, 1, 2, 4, 5, 6, 7]}
    assert "GPU 3" not in job["events"][-1]["reason"]
    watched.call("cancel", job_id)
    watched.wait_state(job_id, "cancelled")

    back = watched.call("undrain", "gmi-node-2", [3], "root", "reseated")
    assert back["returned"] == [3]
    watched.call("undrain", "gmi-node-1", None, "root")
    full = watched.submit("sleep 300", gpus=8, run_id="eight")
    watched.wait_state(full, "running", timeout=60)
    actions = [e["action"] for e in watched.call("fleet_events")]
    assert actions.count("returned") == 9 and "unhealthy" in actions and "drained" in actions


@pytest.fixture
def quick_silence(ray_cluster, tmp_path):
    harness = Harness(tmp_path, **{**WATCHED, "node_silent_after_s": 4.0})
    yield harness
    harness.teardown()


def test_a_silent_node_has_all_its_gpus_taken_out_and_its_jobs_requeued(quick_silence):
    watched = quick_silence
    job_id = watched.submit("sleep 300", gpus=8, run_id="whole-node")
    first = watched.wait_state(job_id, "running")
    (node,) = first["allocation"]
    watched.call("inject", node, "silent")
    job = wait_for(
        lambda: (j := watched.job(job_id))["attempts"] == 2 and j["state"] == "running" and j,
        60,
        what="the job to be requeued onto the other node",
    )
    assert list(job["allocation"]) != [node]
    gpus = gpus_of(watched.call("resources"))
    assert {g["state"] for name, g in gpus.items() if g["node"] == node} == {"unhealthy"}


def test_a_drain_lets_the_running_job_finish_and_places_nothing_new_there(watched):
    job_id = watched.submit("sleep 3", gpus=8, run_id="finisher")
    first = watched.wait_state(job_id, "running")
    (node,) = first["allocation"]
    out = watched.call("drain", node, None, "firmware update", "root")
    assert out["jobs"] == [job_id]
    assert {g["state"] for g in gpus_of(watched.call("resources")).values() if g["node"] == node} == {
        "draining"
    }
    assert watched.wait_state(job_id, "completed")["attempts"] == 1
    nxt = watched.submit("sleep 300", gpus=8, run_id="next")
    assert node not in watched.wait_state(nxt, "running")["allocation"]
    assert {g["state"] for g in gpus_of(watched.call("resources")).values() if g["node"] == node} == {
        "drained"
    }


def test_usage_counts_gpu_seconds_of_finished_runs_per_user(watched):
    a = watched.submit("sleep 1", gpus=2, user="alice", run_id="a")
    b = watched.submit("sleep 1", gpus=1, user="bob", run_id="b")
    ja, jb = watched.wait_state(a, "completed"), watched.wait_state(b, "completed")
    report = watched.call("usage_report", 0.0)
    users = {u["user"]: u for u in report["users"]}
    expect_a = 2 * (ja["ended_at"] - ja["started_at"]) / 3600
    expect_b = 1 * (jb["ended_at"] - jb["started_at"]) / 3600
    assert users["alice"]["gpu_hours"] == pytest.approx(expect_a, rel=0.05)
    assert users["bob"]["gpu_hours"] == pytest.approx(expect_b, rel=0.05)
    assert sum(d["gpu_hours"] for d in report["days"]) == pytest.approx(report["total_gpu_hours"])


@pytest.fixture
def http(api, watched):
    with httpx.Client(base_url=api, timeout=30, headers=ALICE) as client:
        yield client


def _metrics(http) -> dict[str, list]:
    """Sample name -> samples (a counter's samples end in _total, its family's name does not)."""
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(http.get("/metrics").text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append(sample)
    return out


def test_metrics_equal_the_status_after_a_workload(http, watched):
    done = watched.submit("true", run_id="ok")
    bad = watched.submit("exit 3", run_id="bad", max_retries=0)
    running = watched.submit("sleep 300", gpus=4, run_id="long")
    watched.wait_state(done, "completed")
    watched.wait_state(bad, "failed")
    watched.wait_state(running, "running")
    status = http.get("/orchestrator/status").json()
    m = _metrics(http)
    value = lambda name, **labels: next(
        s.value for s in m[name] if all(s.labels.get(k) == v for k, v in labels.items())
    )
    r = status["resource_summary"]
    assert value("gpuq_gpus_total") == r["total_gpus"] == 16
    assert value("gpuq_gpus_allocated") == r["allocated_gpus"] == 4
    assert value("gpuq_gpus_available") == r["available_gpus"] == 12
    for state in ("queued", "running", "completed", "failed"):
        assert value("gpuq_jobs", state=state) == status["queue_summary"][state]
    for name, v in status["stats"].items():
        assert value(f"gpuq_{name}_total") == v
    assert sum(s.value for s in m["gpuq_gpu_allocated"]) == 4
    assert {s.labels["user"] for s in m["gpuq_gpu_allocated"] if s.value} == {"alice"}
    started = [s for s in m["gpuq_job_start_time_seconds"]]
    assert [s.labels["run_id"] for s in started] == ["long"]
    assert value("gpuq_queue_wait_seconds_count", priority="NORMAL") == 3
    assert value("gpuq_user_gpu_seconds_total", user="alice") > 0


def test_fleet_changes_need_an_admin_and_name_bad_fields(http):
    body = {"reason": "x"}
    assert http.post("/nodes/gmi-node-1/drain", json=body, headers={"Authorization": ""}).status_code == 401
    assert http.post("/nodes/gmi-node-1/drain", json=body, headers=ALICE).status_code == 403
    r = http.post("/nodes/gmi-node-9/drain", json=body, headers=ADMIN)
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "node"
    r = http.post("/nodes/gmi-node-1/drain", json={"reason": "x", "gpus": [8]}, headers=ADMIN)
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "gpus"
    r = http.post("/nodes/gmi-node-1/drain", json={}, headers=ADMIN)
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "reason"
    r = http.post("/nodes/gmi-node-1/faults", json={"fault": "meteor"}, headers=ADMIN)
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "fault"
    assert http.get("/usage", params={"since": "yesterday"}).status_code == 422
    assert all(g["state"] == "free" for g in gpus_of(http.get("/resources").json()).values())


def test_out_of_service_gpus_usage_and_the_audit_trail_survive_a_restart(watched):
    import ray

    done = watched.submit("sleep 1", gpus=2, user="carol", run_id="counted")
    watched.wait_state(done, "completed")
    watched.call("inject", "gmi-node-2", "xid", 6, 79)
    wait_for(
        lambda: gpus_of(watched.call("resources"))["gmi-node-2:6"]["state"] == "unhealthy",
        30,
        what="gmi-node-2:6 to be unhealthy",
    )
    watched.call("drain", "gmi-node-1", [0, 1], "cabling", "root")
    used = {u["user"]: u["gpu_hours"] for u in watched.call("usage_report", 0.0)["users"]}

    old = watched.call("pid")
    ray.kill(watched.actor, no_restart=False)
    wait_for(lambda: watched.pid_or_none() not in (None, old), 60, what="a restarted orchestrator")

    gpus = gpus_of(watched.call("resources"))
    assert gpus["gmi-node-2:6"]["state"] == "unhealthy"
    assert gpus["gmi-node-1:0"]["state"] == gpus["gmi-node-1:1"]["state"] == "drained"
    assert {u["user"]: u["gpu_hours"] for u in watched.call("usage_report", 0.0)["users"]} == used
    assert len(watched.call("fleet_events")) == 3
    # Ray still holds the quarantined and drained GPUs: a 13-GPU job fits only around them.
    job = watched.wait_state(watched.submit("sleep 300", gpus=13, run_id="around"), "running", timeout=60)
    assert job["allocation"] == {"gmi-node-1": [2, 3, 4, 5, 6, 7], "gmi-node-2": [0, 1, 2, 3, 4, 5, 7]}
