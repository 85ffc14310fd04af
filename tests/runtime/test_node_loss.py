"""A GPU node dies under a running job (issue #14), on the session's real Ray cluster.

Destructive: the test kills gmi-node-X's raylet and every process of it, as a power cut
would, then starts a node of the same name again, so the session's cluster has its two
nodes when it ends. The API (its replica and proxy on the head) must answer
throughout; the job must run again on the other node without using a retry; the node
must be shown down, then return to service by itself."""

from __future__ import annotations

import threading
import time

import httpx
import ray

from orchestrator.deploy.localcluster import add_simulated_node
from orchestrator.head.nodes import NODE_LABEL
from tests.raycluster import wait_for

READER = {"Authorization": "Bearer reader-token"}


class Prober(threading.Thread):
    """Reads the API every 0.2 s until stopped; keeps every answer that was not a 200."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url, self.failures, self.answers = url, [], 0
        self.done = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=5.0) as c:
            while not self.done.is_set():
                for path in ("/healthz", "/orchestrator/status"):
                    try:
                        r = c.get(path, headers=READER)
                        if r.status_code != 200:
                            self.failures.append((path, r.status_code, r.text[:200]))
                    except httpx.HTTPError as e:
                        self.failures.append((path, type(e).__name__, str(e)[:200]))
                    self.answers += 1
                self.done.wait(0.2)


def test_a_dead_gpu_node_is_down_its_job_runs_on_the_other_node_and_the_node_returns(ray_cluster, orch, api):
    from orchestrator.core import joblog
    from tests.readers import Follower

    job_id = orch.submit("echo ran; sleep 300", gpus=8, max_retries=0, run_id="on-a-dying-node")
    job = orch.wait_state(job_id, "running")
    follower = Follower(api, job_id)  # its whole output, across the node's death
    wait_for(lambda: follower.got == b"ran\n", 30, what="the job's first line")
    (lost,) = job["allocation"]
    (other,) = {"gmi-node-1", "gmi-node-2"} - {lost}
    node_id = next(n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Labels"].get(NODE_LABEL) == lost)
    raylet = next(n for n in ray_cluster.worker_nodes if n.node_id == node_id)
    prober = Prober(api)
    prober.start()
    wait_for(lambda: prober.answers >= 4, 30, what="the API to answer before the kill")
    killed = time.monotonic()
    ray_cluster.remove_node(raylet, allow_graceful=False)  # SIGKILL: raylet, its workers, the job

    again = wait_for(
        lambda: (j := orch.job(job_id))["state"] == "running" and j["attempts"] == 2 and j,
        60,
        what="the job to run again",
    )
    print(f"\nrunning again on {other} {time.monotonic() - killed:.1f} s after {lost} was killed")
    assert list(again["allocation"]) == [other] and again["retries"] == 0
    status = orch.call("status")["details"]
    assert status["down_nodes"] == [lost] and status["down_gpus"] == 8
    node = next(n for n in orch.call("resources")["nodes"] if n["node"] == lost)
    assert node["state"] == "down" and {g["state"] for g in node["gpus"]} == {"down"}
    assert any(f"node {lost} down" in e["reason"] for e in orch.job(job_id)["events"])

    add_simulated_node(ray_cluster, lost)  # the operator starts it again (gpuq up does, locally)
    wait_for(
        lambda: not orch.call("status")["details"]["down_nodes"], 60, what=f"{lost} to return to service"
    )
    back = next(n for n in orch.call("resources")["nodes"] if n["node"] == lost)
    assert back["state"] == "up" and {g["state"] for g in back["gpus"]} == {"free"}
    actions = [(e["node"], e["action"]) for e in orch.call("fleet_events", 10)]
    assert actions[:2] == [(lost, "returned"), (lost, "down")]  # newest first
    prober.done.set()
    prober.join(10)
    assert prober.answers > 10 and prober.failures == []
    orch.call("cancel", job_id)
    # Every byte once: the lost run's (read again once its node was back), gpuq's line, the new run's.
    assert follower.result() == orch.log(job_id).encode() == b"ran\n" + joblog.boundary(2) + b"ran\n"
