"""The REST API over real HTTP, against the Serve app on the session's Ray cluster."""

import httpx
import pytest

from tests.raycluster import wait_for

ALICE = {"Authorization": "Bearer alice-token"}
BOB = {"Authorization": "Bearer bob-token"}
ADMIN = {"Authorization": "Bearer admin-token"}
SEED = {
    "run_id": "experiment-1",
    "user": "alice",
    "command": "python3 -c 'print(1)'",
    "gpu_count": 4,
    "priority": 3,
}


NOBODY = {"Authorization": ""}


@pytest.fixture
def http(api, orch):
    """A client that reads as alice unless a request says otherwise."""
    with httpx.Client(base_url=api, timeout=30, headers=ALICE) as client:
        yield client


def test_seed_submit_answers_in_the_seed_shape(http):
    r = http.post("/queue/submit", json=SEED, headers=ALICE)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["success"] is True and body["job_id"] == body["job"]["id"]
    assert body["job"] == {
        "id": body["job_id"],
        "run_id": "experiment-1",
        "state": "queued",
        "gpu_count": 4,
        "priority": 3,
    }
    assert body["queue_position"] == 1


def test_seed_status_has_the_seed_keys(http):
    http.post("/queue/submit", json={**SEED, "command": "true"}, headers=ALICE)
    s = http.get("/orchestrator/status").json()
    assert s["running"] is True
    assert set(s["stats"]) >= {"jobs_scheduled", "jobs_completed", "jobs_failed", "scheduling_cycles"}
    assert s["resource_summary"]["total_gpus"] == 16
    assert set(s["queue_summary"]) == {"total_jobs", "queued", "running", "completed", "failed"}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"gpu_count": 0}, "gpu_count"),
        ({"gpu_count": -1}, "gpu_count"),
        ({"gpu_count": "x"}, "gpu_count"),
        ({"gpu_count": 17}, "gpu_count"),
        ({"priority": 9}, "priority"),
        ({"command": ""}, "command"),
        ({"gpus": 2}, "gpus"),
    ],
)
def test_bad_input_is_422_naming_the_field_and_enqueues_nothing(http, change, field):
    before = http.get("/orchestrator/status").json()["queue_summary"]["total_jobs"]
    r = http.post("/queue/submit", json={**SEED, **change}, headers=ALICE)
    assert r.status_code == 422
    assert field in [e["field"] for e in r.json()["detail"]]
    assert http.get("/orchestrator/status").json()["queue_summary"]["total_jobs"] == before


def test_oversized_body_is_refused(http):
    r = http.post("/queue/submit", json={**SEED, "command": "x" * 70_000}, headers=ALICE)
    assert r.status_code == 413


def test_auth_rules(http):
    assert http.post("/queue/submit", json=SEED, headers=NOBODY).status_code == 401
    assert http.post("/queue/submit", json=SEED, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert http.post("/queue/submit", json=SEED, headers=BOB).status_code == 403  # bob submitting as alice
    blocker = http.post(
        "/queue/submit", json={**SEED, "gpu_count": 16, "command": "sleep 30"}, headers=ALICE
    ).json()
    job_id = http.post(
        "/queue/submit", json={**SEED, "gpu_count": 16, "command": "sleep 30"}, headers=ALICE
    ).json()["job_id"]
    assert http.post(f"/jobs/{job_id}/hold", headers=BOB).status_code == 403
    assert http.post(f"/jobs/{job_id}/hold", headers=ALICE).json()["state"] == "held"
    assert http.post(f"/jobs/{job_id}/cancel", headers=ADMIN).json()["state"] == "cancelled"
    assert http.post(f"/jobs/{blocker['job_id']}/cancel", headers=ALICE).json()["state"] == "cancelled"


def test_unknown_job_is_404_and_illegal_transition_is_409(http):
    assert http.get("/jobs/does-not-exist").status_code == 404
    job_id = http.post(
        "/queue/submit", json={**SEED, "gpu_count": 1, "command": "true"}, headers=ALICE
    ).json()["job_id"]
    from tests.raycluster import wait_for

    wait_for(
        lambda: http.get(f"/jobs/{job_id}").json()["state"] == "completed", 60, what="the job to complete"
    )
    r = http.post(f"/jobs/{job_id}/cancel", headers=ALICE)
    assert r.status_code == 409 and "cannot cancel" in r.json()["detail"]


def test_jobs_queue_resources_and_logs(http):
    from tests.raycluster import wait_for

    job_id = http.post(
        "/queue/submit",
        json={**SEED, "gpu_count": 2, "command": "echo hello from $CUDA_VISIBLE_DEVICES"},
        headers=ALICE,
    ).json()["job_id"]
    wait_for(
        lambda: http.get(f"/jobs/{job_id}").json()["state"] == "completed", 60, what="the job to complete"
    )
    job = http.get(f"/jobs/{job_id}").json()
    assert [e["to_state"] for e in job["events"]][-1] == "completed"
    gpus = ",".join(map(str, next(iter(job["allocation"].values()))))
    assert http.get(f"/jobs/{job_id}/logs").json()["data"] == f"hello from {gpus}\n"
    listed = http.get("/jobs", params={"user": "alice", "state": "completed"}).json()
    assert job_id in [j["id"] for j in listed["jobs"]]
    nodes = http.get("/resources").json()["nodes"]
    assert sorted(n["node"] for n in nodes) == ["gmi-node-1", "gmi-node-2"] and all(
        len(n["gpus"]) == 8 for n in nodes
    )
    assert http.get("/queue").status_code == 200
    assert http.get("/jobs", params={"state": "bogus"}).status_code == 422


def test_reprioritise_through_patch(http):
    blocker = http.post(
        "/queue/submit", json={**SEED, "gpu_count": 16, "command": "sleep 30"}, headers=ALICE
    ).json()
    job_id = http.post(
        "/queue/submit", json={**SEED, "gpu_count": 16, "command": "sleep 30"}, headers=ALICE
    ).json()["job_id"]
    assert http.post(f"/jobs/{job_id}/hold", headers=ALICE).json()["state"] == "held"
    r = http.patch(f"/jobs/{job_id}", json={"priority": "HIGH"}, headers=ALICE)
    assert r.status_code == 200 and r.json()["priority"] == 3
    r = http.patch(f"/jobs/{job_id}", json={"priority": "CRITICAL"}, headers=ADMIN)
    assert r.status_code == 200 and r.json()["priority"] == 4
    assert http.patch(f"/jobs/{job_id}", json={"priority": 7}, headers=ALICE).status_code == 422
    r = http.post(f"/jobs/{job_id}/release", headers=ALICE)
    assert r.status_code == 200 and r.json()["state"] == "queued"
    assert http.post(f"/jobs/{job_id}/release", headers=ALICE).status_code == 409  # not held any more
    for j in (job_id, blocker["job_id"]):
        http.post(f"/jobs/{j}/cancel", headers=ALICE)


def test_orchestrator_down_is_503_with_a_retry_hint(http, orch):
    import ray

    ray.kill(orch.actor, no_restart=True)
    from tests.raycluster import wait_for

    wait_for(lambda: http.get("/orchestrator/status").status_code == 503, 30, what="the API to notice")
    r = http.post("/queue/submit", json=SEED, headers=ALICE)
    assert r.status_code == 503 and r.headers["Retry-After"] == "2"


def test_a_retried_submit_with_the_same_key_creates_one_job(http):
    headers = {**ALICE, "Idempotency-Key": "retry-me-1"}
    first = http.post("/queue/submit", json={**SEED, "command": "true"}, headers=headers).json()
    again = http.post("/queue/submit", json={**SEED, "command": "true"}, headers=headers).json()
    assert again["job_id"] == first["job_id"]
    other = http.post(
        "/queue/submit", json={**SEED, "command": "true"}, headers={**ALICE, "Idempotency-Key": "other"}
    ).json()
    assert other["job_id"] != first["job_id"]
    assert http.get("/jobs", params={"user": "alice"}).json()["total"] == 2


def test_an_array_creates_one_job_per_index_with_its_index(http):
    from tests.raycluster import wait_for

    r = http.post(
        "/queue/submit",
        json={**SEED, "gpu_count": 1, "command": "echo index=$GPUQ_ARRAY_INDEX", "array": "3-5"},
        headers=ALICE,
    ).json()
    assert r["array"]["count"] == 3
    ids = r["array"]["job_ids"]
    wait_for(
        lambda: all(http.get(f"/jobs/{j}").json()["state"] == "completed" for j in ids),
        60,
        what="the array to finish",
    )
    runs = sorted(
        (http.get(f"/jobs/{j}").json()["run_id"], http.get(f"/jobs/{j}/logs").json()["data"]) for j in ids
    )
    assert runs == [
        ("experiment-1_3", "index=3\n"),
        ("experiment-1_4", "index=4\n"),
        ("experiment-1_5", "index=5\n"),
    ]
    assert http.post("/queue/submit", json={**SEED, "array": "x"}, headers=ALICE).status_code == 422


def test_test_only_answers_where_and_when_and_enqueues_nothing(http):
    before = http.get("/orchestrator/status").json()["queue_summary"]["total_jobs"]
    now = http.post("/queue/submit", json={**SEED, "test_only": True}, headers=ALICE).json()
    assert now["would_start"] is True and sum(len(g) for g in now["allocation"].values()) == 4
    blocker = http.post(
        "/queue/submit",
        json={**SEED, "gpu_count": 16, "command": "sleep 60", "time_limit": 600},
        headers=ALICE,
    ).json()["job_id"]
    from tests.raycluster import wait_for

    wait_for(lambda: http.get(f"/jobs/{blocker}").json()["state"] == "running", 60, what="the blocker to run")
    later = http.post("/queue/submit", json={**SEED, "test_only": True}, headers=ALICE).json()
    assert later["would_start"] is False and later["reason"] == "Resources" and later["estimated_start"] > 0
    assert http.get("/orchestrator/status").json()["queue_summary"]["total_jobs"] == before + 1
    http.post(f"/jobs/{blocker}/cancel", headers=ALICE)


def test_logs_follow_streams_until_the_job_ends(http):
    job_id = http.post(
        "/queue/submit",
        json={**SEED, "gpu_count": 1, "command": "for i in 1 2 3; do echo $i; sleep 0.4; done"},
        headers=ALICE,
    ).json()["job_id"]
    from tests.raycluster import wait_for

    wait_for(
        lambda: http.get(f"/jobs/{job_id}").json()["state"] in ("running", "completed"),
        60,
        what="the job to start",
    )
    with http.stream("GET", f"/jobs/{job_id}/logs", params={"follow": "true"}) as r:
        text = "".join(r.iter_text())
    assert text == "1\n2\n3\n"


def test_metrics_are_prometheus_text_matching_status(http):
    text = http.get("/metrics").text
    status = http.get("/orchestrator/status").json()
    assert f"gpuq_gpus_total {float(status['resource_summary']['total_gpus'])}" in text
    assert "# TYPE gpuq_jobs_completed_total counter" in text


def test_an_admin_can_stop_and_resume_starts_and_jobs_queue_meanwhile(http, orch):
    assert http.put("/orchestrator/starts", json={"enabled": False}, headers=ALICE).status_code == 403
    r = http.put("/orchestrator/starts", json={"enabled": False}, headers=ADMIN)
    assert r.status_code == 200 and r.json()["starting_jobs"] is False
    job_id = http.post("/queue/submit", json={**SEED, "command": "true"}, headers=ALICE).json()["job_id"]
    line = wait_for(
        lambda: [
            j for j in http.get("/queue").json()["jobs"] if j["id"] == job_id and j["reason"] == "Stopped"
        ],
        30,
        what="the job to wait as Stopped",
    )
    assert "stopped starting jobs" in line[0]["message"]
    assert http.get("/orchestrator/status").json()["details"]["starting_jobs"] is False
    assert (
        http.put("/orchestrator/starts", json={"enabled": True}, headers=ADMIN).json()["starting_jobs"]
        is True
    )
    orch.wait_state(job_id, "completed")
    assert any(e["action"] == "starts" for e in http.get("/audit", headers=ADMIN).json()["events"])


@pytest.mark.parametrize("route", ["rest", "array", "ray"])
def test_sixteen_concurrent_submits_with_one_key_make_one_job(api, http, route):
    """The key is claimed before the orchestrator awaits its store, so retries racing
    the first submit wait for it and get its job back."""
    import asyncio
    import uuid

    key = f"race-{uuid.uuid4().hex[:8]}"
    path, body, headers = {
        "rest": (
            "/queue/submit",
            {**SEED, "run_id": key, "command": "true", "gpu_count": 1},
            {"Idempotency-Key": key},
        ),
        "array": (
            "/queue/submit",
            {**SEED, "run_id": key, "command": "true", "gpu_count": 1, "array": 3},
            {"Idempotency-Key": key},
        ),
        "ray": ("/api/jobs/", {"entrypoint": "true", "submission_id": key, "metadata": {"ray": "false"}}, {}),
    }[route]

    async def all_at_once():
        async with httpx.AsyncClient(base_url=api, timeout=60, headers={**ALICE, **headers}) as client:
            return await asyncio.gather(*(client.post(path, json=body) for _ in range(16)))

    answers = asyncio.run(all_at_once())
    assert {r.status_code for r in answers} == {200}
    ids = {r.json()["job_id"] for r in answers}
    assert len(ids) == 1
    made = http.get("/jobs", params={"user": "alice", "limit": 200}).json()["jobs"]
    assert len([j for j in made if j["run_id"].startswith(key)]) == (3 if route == "array" else 1)
