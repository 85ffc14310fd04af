"""Bulk actions through the REST API: one call for a whole array or a filter."""

import httpx

ALICE = {"Authorization": "Bearer alice-token"}
ADMIN = {"Authorization": "Bearer admin-token"}


def test_one_rest_call_cancels_a_1000_job_array(api, orch):
    blocker = orch.submit("sleep 300", gpus=16, run_id="blocker", user="bob")
    orch.wait_state(blocker, "running")
    with httpx.Client(base_url=api, timeout=60) as c:
        out = c.post(
            "/queue/submit",
            headers=ALICE,
            json={"run_id": "sweep", "command": "true", "gpu_count": 1, "array": "0-999"},
        ).json()
        array_id = out["array"]["id"]
        line = c.get("/queue", headers=ALICE, params={"limit": 10}).json()
        assert line["total"] == 1000 and len(line["jobs"]) == 10
        assert c.post(
            "/jobs/cancel", headers={"Authorization": "Bearer bob-token"}, json={"array": array_id}
        ).json()["unchanged"] == {"belongs to another user": 1000}
        done = c.post("/jobs/cancel", headers=ALICE, json={"array": array_id})
        assert done.status_code == 200 and done.json()["changed"] == 1000
        assert c.get("/queue", headers=ALICE).json()["total"] == 0
        assert (
            c.post("/jobs/cancel", headers=ALICE, json={}).status_code == 422
        )  # nothing named: not everything
        assert (
            c.post("/jobs/priority", headers=ALICE, json={"name": "sweep"}).status_code == 422
        )  # no priority
        admin = c.post("/jobs/priority", headers=ADMIN, json={"user": "bob", "priority": "HIGH"})
        assert admin.status_code == 200 and admin.json()["unchanged"] == {"is running": 1}
