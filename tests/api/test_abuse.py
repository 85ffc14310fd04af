"""The API as a careless or hostile client meets it: every bad request is a clean 4xx
naming what is wrong, bounds are checked before any work, nothing bad is stored, and
open log streams do not starve other requests. (No response in the suite may carry a
traceback: tests/noleaks.py checks every one.)"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys

import httpx
import pytest

from orchestrator.core.errors import AmbiguousJobId, InvalidSpec, JobNotFound
from orchestrator.core.job import Job, JobSpec
from orchestrator.core.queue import JobQueue
from orchestrator.core.submission import MAX_ARRAY, parse_array
from orchestrator.head.store import Store
from serve_app.gateway import _mapped
from serve_app.limits import json_depth
from tests.raycluster import wait_for

ALICE = {"Authorization": "Bearer alice-token"}
BOB = {"Authorization": "Bearer bob-token"}
RAY = {"entrypoint": "true"}
SEED = {"run_id": "abuse", "command": "true", "gpu_count": 1}
DEEP = "[" * 8000 + "]" * 8000


# --- pure: bounds before work, short ids ------------------------------------------------


def test_an_array_range_is_sized_before_any_index_is_made():
    assert len(parse_array(f"0-{MAX_ARRAY - 1}")) == MAX_ARRAY
    for too_big in (f"0-{MAX_ARRAY}", "0-3000000", "0-1000000000000000000", MAX_ARRAY + 1, "1-5,0-9999"):
        with pytest.raises(InvalidSpec) as exc:
            parse_array(too_big)  # a range of 10^18 would never return if it were expanded
        assert exc.value.errors[0][0] == "array"
    for bad in ("5-1", "-3", "1,1", "x", 1.5, [1], True, "9" * 5000):
        with pytest.raises(InvalidSpec):
            parse_array(bad)


def test_json_depth_is_counted_without_recursion_and_ignores_brackets_in_strings():
    assert json_depth(DEEP.encode(), 32) == 33  # stops counting past the bound
    assert json_depth(b'{"a": [1, {"b": "[[[[[[[["}]}', 32) == 3
    assert json_depth(b'{"a": "\\"[[[["}', 32) == 1


def _queue_with(*ids: str) -> JobQueue:
    q = JobQueue()
    spec = JobSpec.parse({"run_id": "r", "user": "alice", "command": "true", "gpu_count": 1})
    for seq, job_id in enumerate(ids, 1):
        q.restore(Job.new(spec, seq, 0.0, job_id))
    return q


def test_a_unique_prefix_of_four_or_more_characters_names_a_job():
    q = _queue_with("abcd1111-x", "abcd2222-y", "ef001234-z")
    assert q.resolve("abcd1111-x") == "abcd1111-x"
    assert q.resolve("abcd1") == "abcd1111-x"
    assert q.resolve("ef00") == "ef001234-z"
    with pytest.raises(JobNotFound):
        q.resolve("ef0")  # too short to be taken as a prefix
    with pytest.raises(AmbiguousJobId) as exc:
        q.resolve("abcd")
    assert "abcd1111-x" in str(exc.value) and "abcd2222-y" in str(exc.value) and "2 job ids" in str(exc.value)
    assert _mapped(exc.value).status == 422


# --- over HTTP ----------------------------------------------------------------------------


@pytest.fixture
def http(api, orch):
    with httpx.Client(base_url=api, timeout=30, headers=ALICE) as client:
        yield client


def _total(http) -> int:
    return http.get("/orchestrator/status").json()["queue_summary"]["total_jobs"]


def _fields(r: httpx.Response) -> list[str]:
    assert r.status_code == 422, r.text
    return [e["field"] for e in r.json()["detail"]]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"entrypoint_num_gpus": "abc"}, "entrypoint_num_gpus"),
        ({"entrypoint_num_gpus": {"n": 1}}, "entrypoint_num_gpus"),
        ({"entrypoint_num_gpus": -5}, "entrypoint_num_gpus"),
        ({"entrypoint_num_gpus": True}, "entrypoint_num_gpus"),
        ({"entrypoint_num_gpus": 0.0001}, "entrypoint_num_gpus"),
        ({"entrypoint_num_gpus": 1.5}, "entrypoint_num_gpus"),
        (
            {"entrypoint_num_gpus": 99},
            "entrypoint_num_gpus",
        ),  # more than the cluster places (the orchestrator)
        ({"runtime_env": 5}, "runtime_env"),
        ({"runtime_env": [1]}, "runtime_env"),
        ({"runtime_env": {"env_vars": [1]}}, "runtime_env.env_vars"),
        ({"runtime_env": {"working_dir": "."}}, "runtime_env.working_dir"),
        ({"runtime_env": {"conda": "env.yaml"}}, "runtime_env.conda"),
        ({"metadata": [1]}, "metadata"),
        ({"metadata": "x"}, "metadata"),
        ({"metadata": {"owner": "x"}}, "metadata"),
        ({"metadata": {"priority": "URGENT"}}, "metadata.priority"),
        ({"submission_id": 5}, "submission_id"),
        ({"submission_id": True}, "submission_id"),
        ({"submission_id": {"a": 1}}, "submission_id"),
        ({"entrypoint_resources": {"TPU": 1}}, "entrypoint_resources"),
        ({"entrypoint_memory": 1000}, "entrypoint_memory"),
        ({"entrypoint_num_cpus": 4}, "entrypoint_num_cpus"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_ray_submit_refuses_by_name_what_gpuq_cannot_honour(http, change, field):
    before = _total(http)
    assert field in _fields(http.post("/api/jobs/", json={**RAY, **change}))
    assert _total(http) == before


@pytest.mark.parametrize(
    "raw",
    [
        b'{"entrypoint": "true", "entrypoint_num_gpus": NaN}',
        b'{"entrypoint": "true", "entrypoint_num_gpus": 1e309}',
    ],
)
def test_ray_submit_refuses_numbers_that_are_not_numbers(http, raw):
    r = http.post("/api/jobs/", content=raw, headers={"content-type": "application/json"})
    assert "entrypoint_num_gpus" in _fields(r)


@pytest.mark.parametrize("path", ["/queue/submit", "/api/jobs/"])
def test_deeply_nested_json_is_refused_before_it_is_parsed(http, path):
    raw = b'{"command": ' + DEEP.encode() + b"}"
    assert len(raw) < 64 * 1024
    r = http.post(path, content=raw, headers={"content-type": "application/json"})
    assert _fields(r) == ["body"] and "deeper than" in r.json()["detail"][0]["message"]


def test_a_huge_array_range_is_refused(http):
    before = _total(http)
    assert _fields(http.post("/queue/submit", json={**SEED, "array": "0-3000000"})) == ["array"]
    assert _total(http) == before


@pytest.mark.parametrize("key", [5, True, {"a": 1}, "", "tab\there"])
def test_an_idempotency_key_must_be_text_and_is_checked_in_the_orchestrator_too(orch, key):
    with pytest.raises(InvalidSpec) as exc:
        orch.call("submit", {**SEED, "user": "alice"}, key)
    assert exc.value.errors[0][0] == "idempotency_key"
    assert orch.call("status")["queue_summary"]["total_jobs"] == 0


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("rank=-2", "rank"),
        ("offset=9223372036854775807", "offset"),
        ("attempt=0", "attempt"),
        ("limit=0", "limit"),
        ("rank=3", "rank"),
        ("attempt=7", "attempt"),
    ],
)
def test_log_read_mistakes_are_422_not_503(http, query, field):
    job_id = http.post("/queue/submit", json=SEED).json()["job_id"]
    assert _fields(http.get(f"/jobs/{job_id}/logs?{query}")) == [field]


def test_an_unknown_job_is_a_one_line_404(http):
    for path in ("/jobs/does-not-exist", "/jobs/does-not-exist/logs", "/api/jobs/does-not-exist"):
        r = http.get(path)
        assert r.status_code == 404 and r.json() == {
            "success": False,
            "detail": "no job with id 'does-not-exist'",
        }
    assert http.post("/jobs/does-not-exist/cancel").status_code == 404


def test_the_short_id_gpuq_prints_works_everywhere(http):
    job_id = http.post("/queue/submit", json={**SEED, "command": "sleep 60", "gpu_count": 16}).json()[
        "job_id"
    ]
    short = job_id[:8]
    assert http.get(f"/jobs/{short}").json()["id"] == job_id
    assert http.patch(f"/jobs/{short}", json={"priority": "LOW"}).json()["priority"] == 1
    assert http.post(f"/api/jobs/{short}/stop").json() == {"stopped": True}
    assert http.get(f"/jobs/{job_id}").json()["state"] == "cancelled"


def test_unknown_paths_and_methods_are_clean_and_say_what_is_allowed(http):
    r = http.get("/no/such/path")
    assert r.status_code == 404 and r.json()["success"] is False
    r = http.request("OPTIONS", "/queue/submit")
    assert r.status_code == 405 and "POST" in r.headers["allow"]
    assert http.get("/usage?since=").status_code == 422
    assert http.get("/usage?since=3d").status_code == 200


# --- streams ---------------------------------------------------------------------------


def test_log_followers_do_not_starve_other_requests_and_are_capped_per_user(http, api):
    """Sixteen followers (the per-user cap) are three times Serve's old default of five
    requests per replica, which froze every other request until the job ended."""
    job_id = http.post(
        "/queue/submit",
        json={
            **SEED,
            "command": 'python3 -c "import time\nfor i in range(900): print(i, flush=True); time.sleep(0.1)"',
        },
    ).json()["job_id"]

    async def scenario():
        async with httpx.AsyncClient(base_url=api, timeout=60) as client:
            streams, opened = [], []
            try:
                for _ in range(16):
                    s = client.stream("GET", f"/jobs/{job_id}/logs?follow=true", headers=ALICE)
                    response = await s.__aenter__()
                    streams.append(s)
                    assert response.status_code == 200
                    opened.append(response)
                readers = [r.aiter_bytes() for r in opened]  # kept: a dropped reader closes its stream
                for reader in readers:  # each is live: output reaches it
                    assert await reader.__anext__()
                health = await client.get("/healthz")
                submitted = await client.post(
                    "/queue/submit", json={**SEED, "test_only": True}, headers=ALICE
                )
                one_more = await client.get(f"/jobs/{job_id}/logs?follow=true", headers=ALICE)
                return health, submitted, one_more
            finally:
                for s in streams:
                    await s.__aexit__(None, None, None)

    health, submitted, one_more = asyncio.run(scenario())
    assert health.status_code == 200 and submitted.status_code == 200
    assert one_more.status_code == 429 and one_more.headers["retry-after"], (
        one_more.headers,
        one_more.text[:300],
    )
    assert "16 log streams open" in one_more.json()["detail"]
    http.post(f"/jobs/{job_id}/cancel")


# What `ray job logs --follow` holds open: Ray's client tails the log over a WebSocket.
_TAILS = """
import asyncio, sys, aiohttp
async def main():
    async with aiohttp.ClientSession() as s:
        key = {"Authorization": "Bearer alice-token"}
        tails = [await s.ws_connect(sys.argv[1], headers=key) for _ in range(16)]
        print("open", flush=True)
        await asyncio.sleep(600)
asyncio.run(main())
"""


def test_killed_log_tails_of_a_quiet_job_give_their_stream_slots_back(http, api, orch):
    """A tail notices a gone client when it next sends; a quiet job may not write for
    hours, and sixteen killed `ray job logs --follow` locked their user out of
    following anything until then."""
    job_id = http.post("/queue/submit", json={**SEED, "command": "sleep 300"}).json()["job_id"]
    try:
        orch.wait_state(job_id, "running")
        tails = subprocess.Popen(
            [sys.executable, "-c", _TAILS, f"{api.replace('http', 'ws', 1)}/api/jobs/{job_id}/logs/tail"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert tails.stdout.readline() == "open\n"  # the per-user cap of 16 is full
        tails.kill()
        tails.wait()

        def follow_status() -> int:
            with http.stream("GET", f"/jobs/{job_id}/logs", params={"follow": "true"}) as r:
                return r.status_code

        wait_for(lambda: follow_status() == 200, 10, what="the killed tails' stream slots to be given back")
    finally:
        http.post(f"/jobs/{job_id}/cancel")


# --- the store ---------------------------------------------------------------------------


def test_a_record_that_fails_to_load_is_set_aside_and_reported_and_the_rest_starts(ray_cluster, tmp_path):
    from tests.orchestration import Harness

    store = Store(tmp_path / "gpuq.db")
    spec = JobSpec.parse({"run_id": "r", "user": "alice", "command": "true", "gpu_count": 1})
    good, bad = Job.new(spec, 1, 1.0), Job.new(spec, 2, 2.0)
    store.save([good, bad])
    store.close()
    with sqlite3.connect(tmp_path / "gpuq.db") as db:  # what a bug or a hand edit might leave
        db.execute("UPDATE jobs SET doc = json_set(doc, '$.idempotency_key', 5) WHERE id = ?", (bad.id,))
    harness = Harness(tmp_path, start_jobs=False)
    try:
        assert harness.job(good.id)["state"] == "queued"
        with pytest.raises(JobNotFound):
            harness.job(bad.id)
        events = harness.call("fleet_events", 10)
        assert any(
            e["action"] == "set aside" and e["job_id"] == bad.id and "idempotency_key" in e["reason"]
            for e in events
        )
        assert "gpuq_store_records_set_aside 1.0" in harness.call("metrics_text").decode()
    finally:
        harness.teardown()
    with sqlite3.connect(tmp_path / "gpuq.db") as db:
        kept = db.execute("SELECT id, doc FROM set_aside").fetchall()
    assert [k[0] for k in kept] == [bad.id] and json.loads(kept[0][1])["idempotency_key"] == 5
