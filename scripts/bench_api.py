#!/usr/bin/env python3
"""Benchmark the REST API (issue #5 targets) beside a trivial Ray Serve endpoint, in one run.

  POST /queue/submit, one client in a loop     >= 0.8x the trivial endpoint's req/s, p99 <= 50 ms
  POST /queue/submit, 16 concurrent clients    >= 300 submits/s, p99 <= 100 ms (issue #16)
  `gpuq submit` in a shell loop                beside the same loop of `curl`
  a 10,000-job array in one request            >= 500 jobs/s accepted, queue consistent
  GET /metrics with those jobs in the store    beside GET /orchestrator/status (issue #6)
  the 10,000-job array cancelled in one call   <= 1 s (issue #18)

A 16-GPU job holds every GPU first, so nothing submitted runs during the measurement.
Usage: .venv/bin/python scripts/bench_api.py [--n 300] [--json out.json]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.pop("RAY_ADDRESS", None)

import httpx  # noqa: E402
import ray  # noqa: E402
from ray import serve  # noqa: E402

try:
    from orchestrator.deploy.localcluster import start_inprocess_cluster
    from orchestrator.head.actor import start_orchestrator
except ImportError:  # a checkout from before the runtime split (bench_pair.py runs both)
    from orchestrator.runtime.actor import start_orchestrator  # type: ignore[no-redef]
    from orchestrator.runtime.localcluster import start_inprocess_cluster  # type: ignore[no-redef]
from serve_app.api import deploy  # noqa: E402

PORT = 8765


@serve.deployment(ray_actor_options={"num_cpus": 0})
class Trivial:
    async def __call__(self, request):
        return {"ok": True}


def pct(values, q):
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * len(s) + 0.5) - 1))]


def loop(client: httpx.Client, n: int, fn) -> dict:
    lat = []
    t0 = time.perf_counter()
    for i in range(n):
        t = time.perf_counter()
        r = fn(client, i)
        assert r.status_code == 200, r.text
        lat.append(time.perf_counter() - t)
    total = time.perf_counter() - t0
    return {"req_per_s": n / total, "p50_ms": statistics.median(lat) * 1000, "p99_ms": pct(lat, 0.99) * 1000}


def concurrent(url: str, headers: dict, clients: int, n: int, fn) -> dict:
    """`clients` threads, each with its own connection, share `n` requests; all start
    together. Throughput is requests over the wall time of the whole burst."""
    lat: list[float] = []
    go = threading.Barrier(clients + 1)

    def worker(k: int) -> None:
        mine = []
        with httpx.Client(base_url=url, timeout=60, headers=headers) as c:
            fn(c, -1)  # open the connection before the clock starts
            go.wait()
            for i in range(k, n, clients):
                t = time.perf_counter()
                r = fn(c, i)
                assert r.status_code == 200, r.text
                mine.append(time.perf_counter() - t)
        lat.extend(mine)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    go.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    total = time.perf_counter() - t0
    return {"req_per_s": n / total, "p50_ms": statistics.median(lat) * 1000, "p99_ms": pct(lat, 0.99) * 1000}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--json")
    args = ap.parse_args()
    out: dict = {"machine": f"{os.cpu_count()} cores"}

    cluster = start_inprocess_cluster()
    tmp = Path(tempfile.mkdtemp(prefix="gpuq-bench-api-"))
    orch = start_orchestrator(
        # The last step submits a 10,000-job array on top of the jobs still queued from the
        # others: over the default max_jobs_per_user (10,000), which is not what is measured.
        {
            "store_path": str(tmp / "gpuq.db"),
            "data_dir": str(tmp / "data"),
            "warm_slots_per_node": 0,
            "max_jobs_per_user": 100_000,
        }
    )
    ray.get(orch.ping.remote(), timeout=120)
    tokens = tmp / "tokens.json"
    # The built-in admin: its jobs run as the service account, so the benchmark needs no
    # Unix account of its own when it runs as root (a multi-user install).
    tokens.write_text(json.dumps({"bench-token": {"user": "admin", "role": "admin"}}))
    url = deploy("127.0.0.1", PORT, str(tokens))
    serve.run(Trivial.bind(), name="trivial", route_prefix="/trivial")
    auth = {"Authorization": "Bearer bench-token"}
    job = {"run_id": "bench", "user": "admin", "command": "true", "gpu_count": 16}

    with httpx.Client(base_url=url, timeout=60, headers=auth) as client:
        blocker = client.post("/queue/submit", json={**job, "command": "sleep 3600"}, headers=auth).json()[
            "job_id"
        ]
        while client.get(f"/jobs/{blocker}").json()["state"] != "running":
            time.sleep(0.2)
        for _ in range(20):  # warm both paths
            client.get("/trivial")
            client.post("/queue/submit", json=job, headers=auth)
        # Interleaved halves so both see the same noise.
        trivial, submit = [], []
        for _half in range(2):
            trivial.append(loop(client, args.n // 2, lambda c, i: c.get("/trivial")))
            submit.append(
                loop(client, args.n // 2, lambda c, i: c.post("/queue/submit", json=job, headers=auth))
            )
        t_rps = statistics.mean(x["req_per_s"] for x in trivial)
        s_rps = statistics.mean(x["req_per_s"] for x in submit)
        out["submit"] = {
            "trivial_req_per_s": t_rps,
            "submit_req_per_s": s_rps,
            "ratio": s_rps / t_rps,
            "submit_p50_ms": statistics.mean(x["p50_ms"] for x in submit),
            "submit_p99_ms": max(x["p99_ms"] for x in submit),
            "trivial_p50_ms": statistics.mean(x["p50_ms"] for x in trivial),
        }
        print("submit vs trivial endpoint:", json.dumps(out["submit"]))

        # Many researchers (or one script with a thread pool) at once: the group commit
        # shares fsyncs between concurrent submits (groupcommit.GroupCommit).
        many_t, many_s = [], []
        for _half in range(2):
            many_t.append(concurrent(url, auth, args.clients, args.n, lambda c, i: c.get("/trivial")))
            many_s.append(
                concurrent(url, auth, args.clients, args.n, lambda c, i: c.post("/queue/submit", json=job))
            )
        out["concurrent"] = {
            "clients": args.clients,
            "trivial_req_per_s": statistics.mean(x["req_per_s"] for x in many_t),
            "submit_req_per_s": statistics.mean(x["req_per_s"] for x in many_s),
            "submit_p50_ms": statistics.mean(x["p50_ms"] for x in many_s),
            "submit_p99_ms": max(x["p99_ms"] for x in many_s),
            "trivial_p99_ms": max(x["p99_ms"] for x in many_t),
        }
        out["concurrent"]["ratio"] = (
            out["concurrent"]["submit_req_per_s"] / out["concurrent"]["trivial_req_per_s"]
        )
        print(f"submit, {args.clients} concurrent clients:", json.dumps(out["concurrent"]))

        # The command line people type, against curl doing the same request.
        env = {**os.environ, "GPUQ_URL": url, "GPUQ_TOKEN": "bench-token"}
        gpuq = str(Path(sys.executable).with_name("gpuq"))
        body = json.dumps(job)
        n = 20
        t0 = time.perf_counter()
        for _ in range(n):
            subprocess.run(
                [gpuq, "submit", "--gpus", "16", "--", "true"], env=env, check=True, capture_output=True
            )
        gpuq_s = (time.perf_counter() - t0) / n
        t0 = time.perf_counter()
        for _ in range(n):
            subprocess.run(
                [
                    "curl",
                    "-s",
                    "-X",
                    "POST",
                    f"{url}/queue/submit",
                    "-H",
                    "Authorization: Bearer bench-token",
                    "-H",
                    "Content-Type: application/json",
                    "-d",
                    body,
                ],
                check=True,
                capture_output=True,
            )
        curl_s = (time.perf_counter() - t0) / n
        out["cli"] = {"gpuq_submit_s": gpuq_s, "curl_s": curl_s, "ratio": gpuq_s / curl_s}
        print("gpuq submit vs curl, per command:", json.dumps(out["cli"]))

        before = client.get("/orchestrator/status").json()["queue_summary"]["total_jobs"]
        t0 = time.perf_counter()
        r = client.post("/queue/submit", json={**job, "array": 10_000}, headers=auth)
        took = time.perf_counter() - t0
        assert r.status_code == 200, r.text[:500]
        after = client.get("/orchestrator/status").json()["queue_summary"]
        queued = client.get("/jobs", params={"state": "queued", "limit": 1}).json()["total"]
        out["array"] = {
            "jobs": 10_000,
            "seconds": took,
            "jobs_per_s": 10_000 / took,
            "total_jobs_consistent": after["total_jobs"] == before + 10_000,
            "queued": queued,
        }
        print("10,000-job array:", json.dumps(out["array"]))

        # A Prometheus scrape with those 10,000+ jobs queued, beside GET /orchestrator/status.
        scrape, status = [], []
        for _half in range(2):
            status.append(loop(client, 20, lambda c, i: c.get("/orchestrator/status")))
            scrape.append(loop(client, 20, lambda c, i: c.get("/metrics")))
        size = len(client.get("/metrics").content)
        out["metrics"] = {
            "jobs_in_store": after["total_jobs"],
            "bytes": size,
            "scrape_p50_ms": statistics.mean(x["p50_ms"] for x in scrape),
            "scrape_p99_ms": max(x["p99_ms"] for x in scrape),
            "status_p50_ms": statistics.mean(x["p50_ms"] for x in status),
            "ratio_p50": statistics.mean(x["p50_ms"] for x in scrape)
            / statistics.mean(x["p50_ms"] for x in status),
        }
        print("GET /metrics vs GET /orchestrator/status:", json.dumps(out["metrics"]))

        # The whole array cancelled in one call (issue #18): one pass, one commit.
        array_id = r.json()["array"]["id"]
        t0 = time.perf_counter()
        done = client.post("/jobs/cancel", json={"array": array_id}).json()
        took = time.perf_counter() - t0
        left = client.get("/queue", params={"limit": 1}).json()["total"]
        out["bulk_cancel"] = {"jobs": done["changed"], "seconds": took, "queued_after": left}
        print("cancel the 10,000-job array in one call:", json.dumps(out["bulk_cancel"]))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main()
