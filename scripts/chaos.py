#!/usr/bin/env python3
"""A chaos run you can repeat (issue #14): a mixed workload through the REST API while
faults are injected at random times, then a check that nothing was lost or run twice.

Workload: jobs of 1 to 16 GPUs, some failing (with a retry), some long, some cancelled,
a few CRITICAL ones that preempt LOW ones. Clients retry as a careful client would: the
same Idempotency-Key on a 503 or a dropped connection.
Faults, `--faults` of each kind, at random times:
  node    kill a worker raylet (SIGKILL, all its processes), then start it again
  orch    SIGKILL the orchestrator's process (Ray restarts the actor)
  serve   kill the API's Serve replica (Serve starts another)
  agent   kill a node agent (the orchestrator starts another)
  disk    fill the store's file system for a while (a tmpfs under the store; needs root)
Checks at the end: every acknowledged job reached exactly one terminal state; no
command started more often than its attempts (each start appends `job attempt` to a
file); every GPU free; no placement group, gpuq actor or job process left.
Figures: faults, jobs, lost, double-run, recovery time p50/max per kind.

  .venv/bin/python scripts/chaos.py [--jobs 40] [--faults 2] [--seed 1] [--kinds node,orch,...]

It starts its own local Ray cluster (two simulated 8-GPU nodes). tests/test_chaos.py
runs a short version on the test session's cluster through run().
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402

KINDS = ("node", "orch", "serve", "agent", "disk")
TERMINAL = {"completed", "failed", "cancelled"}


class Client:
    """Submits and cancels through the API, retrying like a careful client."""

    def __init__(self, url: str, token: str):
        self.http = httpx.Client(base_url=url, timeout=10.0, headers={"Authorization": f"Bearer {token}"})

    def call(self, method: str, path: str, deadline_s: float = 180.0, **kw) -> httpx.Response | None:
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            try:
                r = self.http.request(method, path, **kw)
                if r.status_code not in (502, 503, 504):
                    return r
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        return None


def workload(rng: random.Random, n: int, starts: Path) -> list[dict]:
    jobs = []
    for i in range(n):
        kind = rng.choices(["short", "long", "failing", "cancel", "low"], [5, 1, 1, 1, 1])[0]
        gpus = rng.choice([1, 1, 2, 4, 8, 12, 16])
        secs = {"long": 20, "low": 8}.get(kind, rng.choice([1, 2, 4]))
        mark = f'echo "$GPUQ_JOB_ID $GPUQ_ATTEMPT $GPUQ_NODE_RANK" >> {starts}'
        command = f"{mark}; sleep {secs}" + ("; exit 3" if kind == "failing" else "")
        jobs.append(
            {
                "spec": {
                    "command": command,
                    "gpu_count": gpus,
                    "run_id": f"chaos-{i}-{kind}",
                    "max_retries": 1 if kind == "failing" else 0,
                    "priority": "LOW" if kind == "low" else "NORMAL",
                    "time_limit": 600,
                },
                "kind": kind,
                "key": uuid.uuid4().hex,
            }
        )
    for i in range(max(1, n // 15)):  # a few CRITICAL ones, to preempt the LOW ones
        jobs.insert(
            rng.randrange(len(jobs)),
            {
                "spec": {
                    "command": f'echo "$GPUQ_JOB_ID $GPUQ_ATTEMPT $GPUQ_NODE_RANK" >> {starts}; sleep 2',
                    "gpu_count": 8,
                    "run_id": f"chaos-critical-{i}",
                    "priority": "CRITICAL",
                    "time_limit": 600,
                },
                "kind": "critical",
                "key": uuid.uuid4().hex,
            },
        )
    return jobs


class Faults:
    """Each fault: inject, then measure the time until the system is whole again."""

    def __init__(self, cluster, api: str, admin: Client, disk: Path | None, add_node):
        self.cluster, self.api, self.admin, self.disk, self.add_node = cluster, api, admin, disk, add_node
        self.recovery: dict[str, list[float]] = {k: [] for k in KINDS}

    def status(self) -> dict | None:
        r = self.admin.call("GET", "/orchestrator/status", deadline_s=120)
        return r.json()["details"] if r is not None and r.status_code == 200 else None

    def until(self, what, timeout: float = 120.0) -> float:
        t0 = time.monotonic()
        while not what():
            if time.monotonic() - t0 > timeout:
                raise RuntimeError("the system did not recover in time")
            time.sleep(0.2)
        return time.monotonic() - t0

    def node(self, rng) -> None:
        import ray

        from orchestrator.head.nodes import NODE_LABEL

        alive = {n["NodeID"]: n["Labels"].get(NODE_LABEL) for n in ray.nodes() if n["Alive"]}
        victims = [n for n in self.cluster.worker_nodes if alive.get(n.node_id)]
        victim = rng.choice(victims)
        name = alive[victim.node_id]
        t0 = time.monotonic()
        self.cluster.remove_node(victim, allow_graceful=False)
        self.until(lambda: name in ((self.status() or {}).get("down_nodes") or []))
        self.recovery["node"].append(time.monotonic() - t0)  # noticed: down (its jobs move at the fence)
        time.sleep(rng.uniform(1, 4))
        self.add_node(self.cluster, name)
        self.until(lambda: name not in (self.status() or {"down_nodes": [name]})["down_nodes"])

    def orch(self, rng) -> None:
        import ray

        from orchestrator.head.actor import get_orchestrator

        pid = ray.get(get_orchestrator().pid.remote(), timeout=30)
        os.kill(pid, signal.SIGKILL)
        self.recovery["orch"].append(self.until(lambda: self._orch_pid() not in (None, pid)))

    @staticmethod
    def _orch_pid():
        import ray

        from orchestrator.head.actor import get_orchestrator

        try:
            return ray.get(get_orchestrator().pid.remote(), timeout=2)
        except Exception:
            return None

    def serve(self, rng) -> None:
        import ray

        replicas = [
            a
            for a in ray.util.list_named_actors(all_namespaces=True)
            if a["namespace"] == "serve" and "GpuqAPI" in a["name"] and "gpuq#" in a["name"]
        ]
        ray.kill(ray.get_actor(replicas[0]["name"], namespace="serve"), no_restart=True)
        t0 = time.monotonic()
        time.sleep(0.5)
        self.until(lambda: self._healthy())
        self.recovery["serve"].append(time.monotonic() - t0 + 0.5)

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.api}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def agent(self, rng) -> None:
        import ray

        from orchestrator.head.names import NAMESPACE

        agents = [
            a["name"]
            for a in ray.util.list_named_actors(all_namespaces=True)
            if a["namespace"] == NAMESPACE and a["name"].startswith("gpuq-agent-")
        ]
        name = rng.choice(agents)
        node = name[len("gpuq-agent-") :]
        ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)
        killed_at = time.time()

        def reported() -> float:  # when the node's (new) agent last reported
            return next(
                (n["telemetry"]["reported_at"] or 0 for n in self._resources() if n["node"] == node), 0
            )

        self.recovery["agent"].append(self.until(lambda: reported() > killed_at))

    def _resources(self) -> list[dict]:
        r = self.admin.call("GET", "/resources", deadline_s=60)
        return r.json()["nodes"] if r is not None and r.status_code == 200 else []

    def disk_full(self, rng) -> None:
        filler = self.disk / "filler"
        with open(filler, "wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
            except OSError:
                pass
        time.sleep(rng.uniform(2, 5))
        filler.unlink()
        self.recovery["disk"].append(
            self.until(lambda: ((self.status() or {}).get("store") or {}).get("writable"))
        )


def run(
    cluster,
    api: str,
    user_token: str,
    admin_token: str,
    add_node,
    disk: Path | None,
    cluster_id: str,
    jobs: int = 40,
    faults: int = 2,
    seed: int = 1,
    kinds=KINDS,
    timeout_s: float = 900.0,
) -> dict:
    """The chaos run on a running gpuq (its orchestrator and API up). Returns figures."""
    import ray
    from ray.util.placement_group import placement_group_table

    from orchestrator.node.agent import tagged_processes

    rng = random.Random(seed)
    kinds = [k for k in kinds if k != "disk" or disk is not None]
    starts = Path(tempfile.mkdtemp(prefix="gpuq-chaos-")) / "starts.log"
    starts.touch()
    os.chmod(starts.parent, 0o777)
    os.chmod(starts, 0o666)  # jobs run as their users
    user, admin = Client(api, user_token), Client(api, admin_token)
    plan = workload(rng, jobs, starts)
    acked: dict[str, dict] = {}
    refused: list[str] = []
    lock = threading.Lock()

    def submitter(part: list[dict]) -> None:
        for job in part:
            r = user.call("POST", "/queue/submit", json=job["spec"], headers={"Idempotency-Key": job["key"]})
            with lock:
                if r is not None and r.status_code == 200:
                    acked[r.json()["job_id"]] = job
                else:
                    refused.append(
                        f"{job['spec']['run_id']}: "
                        + (f"{r.status_code} {r.text[:200]}" if r is not None else "no answer in 180 s")
                    )
            time.sleep(rng.uniform(0, 0.5))

    threads = [threading.Thread(target=submitter, args=(plan[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    injector = Faults(cluster, api, admin, disk, add_node)
    schedule = [k for k in kinds for _ in range(faults)]
    rng.shuffle(schedule)
    began = time.monotonic()
    for kind in schedule:
        time.sleep(rng.uniform(1, 6))
        with lock:
            cancellable = [j for j, spec in acked.items() if spec["kind"] == "cancel"]
        for job_id in cancellable[:2]:
            admin.call("POST", f"/jobs/{job_id}/cancel")
        getattr(injector, "disk_full" if kind == "disk" else kind)(rng)
        print(
            f"  {time.monotonic() - began:6.1f} s  {kind}: recovered in {injector.recovery[kind][-1]:.1f} s",
            flush=True,
        )
    for t in threads:
        t.join()
    with lock:
        for job_id, spec in acked.items():
            if spec["kind"] == "cancel":
                admin.call("POST", f"/jobs/{job_id}/cancel")

    # Every acknowledged job ends, once.
    deadline = time.monotonic() + timeout_s
    final: dict[str, dict] = {}
    while time.monotonic() < deadline and len(final) < len(acked):
        for job_id in acked:
            if job_id not in final:
                r = admin.call("GET", f"/jobs/{job_id}")
                if r is not None and r.status_code == 200 and r.json()["state"] in TERMINAL:
                    final[job_id] = r.json()
        time.sleep(1)
    lost = sorted(set(acked) - set(final))
    # A failed run that is retried leaves FAILED for QUEUED: only an end that stays counts.
    twice_terminal = [
        j
        for j, d in final.items()
        if sum(1 for e in d["events"] if e["to_state"] in TERMINAL)
        - sum(1 for e in d["events"] if e["from_state"] in TERMINAL)
        != 1
    ]
    started: dict[str, list[tuple[int, int]]] = {}
    for line in starts.read_text().split("\n"):
        if line.strip():
            job_id, attempt, rank = line.split()
            started.setdefault(job_id, []).append((int(attempt), int(rank)))
    # Run twice: one rank of one attempt started more than once, or more attempts than recorded.
    double_run = sorted(
        j
        for j, runs in started.items()
        if len(runs) != len(set(runs)) or max(a for a, _ in runs) > final.get(j, {}).get("attempts", 0)
    )
    # Nothing left behind: GPUs, placement groups, slots, job processes.
    settle = time.monotonic() + 120
    leftovers: dict = {}
    while time.monotonic() < settle:
        leftovers = {
            "gpus_not_free": 16 - int(ray.available_resources().get("GPU", 0)),
            "placement_groups": sorted(
                i.get("name", "")
                for i in placement_group_table().values()
                if i["state"] != "REMOVED" and not i.get("name", "").startswith("gpuq-quarantine")
            ),
            "job_processes": sorted(set(tagged_processes(cluster_id).values())),
        }
        if not any(leftovers.values()):
            break
        time.sleep(1)
    return {
        "faults": {k: len(v) for k, v in injector.recovery.items() if v},
        "jobs": {
            "planned": len(plan),
            "acknowledged": len(acked),
            "ended": len(final),
            "states": {s: sum(1 for d in final.values() if d["state"] == s) for s in sorted(TERMINAL)},
        },
        "refused": refused,
        "lost": lost,
        "double_run": double_run,
        "twice_terminal": twice_terminal,
        "leftovers": {k: v for k, v in leftovers.items() if v},
        "recovery_s": {
            k: {"p50": round(statistics.median(v), 2), "max": round(max(v), 2)}
            for k, v in injector.recovery.items()
            if v
        },
        "duration_s": round(time.monotonic() - began, 1),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=40)
    p.add_argument("--faults", type=int, default=2, help="faults of each kind")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--kinds", default=",".join(KINDS))
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    os.environ.pop("RAY_ADDRESS", None)
    os.environ["GPUQ_HOME"] = tempfile.mkdtemp(prefix="gpuq-chaos-home-")
    import ray

    from orchestrator.deploy.localcluster import add_simulated_node, start_inprocess_cluster
    from orchestrator.head.actor import start_orchestrator
    from serve_app.api import deploy
    from serve_app.auth import TokenFile

    disk = Path(tempfile.mkdtemp(prefix="gpuq-chaos-store-"))
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(disk)], capture_output=True
    ).returncode:
        print("cannot mount a tmpfs (not root?): no disk faults this run")
        disk_for_faults = None
    else:
        disk_for_faults = disk
    cluster = start_inprocess_cluster()
    me = getpass.getuser()
    config = {
        "store_path": str(disk / "gpuq.db"),
        "data_dir": str(Path(os.environ["GPUQ_HOME"]) / "data"),
        "loop_interval_s": 0.5,
        "placement_timeout_s": 20,
        "stop_grace_s": 1.0,
        "reap_interval_s": 2.0,
        "warm_slots_per_node": 0,
        "slot_idle_s": 0,
        # A short lease, so a killed raylet's jobs move in ~16 s; not shorter, so that a
        # killed node agent (and its lease keeper) is back before the lease runs out.
        "node_lease_s": 10.0,
        "node_fence_margin_s": 1.0,
        "allow_shared_account": True,
        # This run's jobs are trivial and run as whoever runs it, root included.
        "allowed_system_accounts": [me],
        "priority_grants": {me: "CRITICAL"},
    }  # the few CRITICAL jobs that preempt LOW ones
    orch = start_orchestrator(config)
    cluster_id = ray.get(orch.status.remote(), timeout=120)["details"]["cluster_id"]
    tokens = TokenFile(Path(os.environ["GPUQ_HOME"]) / "tokens.json")
    tokens.create(me, "user", by="chaos", token="chaos-user")
    tokens.create("root", "admin", by="chaos", token="chaos-admin")
    url = deploy("127.0.0.1", 8765, str(tokens.path), site={"allow_shared_account": True})
    print(
        f"chaos: {args.jobs} jobs, {args.faults} of each fault in {args.kinds}, seed {args.seed}", flush=True
    )
    try:
        out = run(
            cluster,
            url,
            "chaos-user",
            "chaos-admin",
            add_simulated_node,
            disk_for_faults,
            cluster_id,
            args.jobs,
            args.faults,
            args.seed,
            args.kinds.split(","),
        )
    finally:
        ray.shutdown()
        cluster.shutdown()
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0 if not (out["lost"] or out["double_run"] or out["twice_terminal"] or out["leftovers"]) else 1


if __name__ == "__main__":
    sys.exit(main())
