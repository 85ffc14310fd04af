#!/usr/bin/env python3
"""What a Ray job's own cluster costs (issue #27), on a cluster of its own (two
simulated 8-GPU nodes, warm one-GPU slots), side by side in one run:

  first line     from submit to the job's first line, printed (with its own clock) by
                 - plain:      python3 -c "print(time)"
                 - ray 1 node: python -c "import ray; ray.init(); print(time)"   (--ray, 1 GPU)
                 - ray 2 nodes: the same, --ray, 2 GPUs forced onto both nodes (multi_node)
                 the three interleaved, so the machine's noise falls on all alike;
  memory         the private cluster's processes while a one-node Ray job holds its GPU
                 (after ray.init() and one finished task): how many, their RSS and PSS.

Jobs run as the service account (the built-in admin), as a single-user install runs
them: a private cluster is the same processes for any user.

Usage: .venv/bin/python scripts/bench_rayjobs.py [-n 10] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.pop("RAY_ADDRESS", None)

import ray  # noqa: E402

from orchestrator.deploy.localcluster import start_inprocess_cluster  # noqa: E402
from orchestrator.head.actor import start_orchestrator  # noqa: E402
from orchestrator.node import procs  # noqa: E402

PRINT = "import time; print('first', time.time(), flush=True)"
KINDS = {
    "plain": dict(command=f'python3 -c "{PRINT}"', gpu_count=1),
    "ray 1 node": dict(command=f'python -c "import ray; ray.init(); {PRINT}"', gpu_count=1, ray=True),
    "ray 2 nodes": dict(
        command=f'python -c "import ray; ray.init(); {PRINT}"', gpu_count=2, ray=True, multi_node=True
    ),
}
HOLD = (
    'python -c "import ray, time; ray.init(); ray.get(ray.remote(lambda: 1).remote()); '
    "print('ready', flush=True); time.sleep(600)\""
)


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * len(s) + 0.5) - 1))]


def first_line(orch, fields: dict) -> float:
    t0 = time.time()
    job_id = ray.get(orch.submit.remote({"run_id": "bench", "user": "admin", "max_retries": 0, **fields}))[
        "job_id"
    ]
    while True:
        job = ray.get(orch.get_job.remote(job_id))
        if job["state"] in ("completed", "failed", "cancelled"):
            break
        time.sleep(0.1)
    log = ray.get(orch.logs.remote(job_id, None, 0, 0, 1 << 20))["data"]
    if job["state"] != "completed":
        raise SystemExit(f"{fields['command']} ended {job['state']}:\n{log}")
    return float(next(line for line in log.splitlines() if line.startswith("first ")).split()[1]) - t0


def memory(orch, cluster_id: str) -> dict:
    job_id = ray.get(
        orch.submit.remote(
            {
                "run_id": "hold",
                "user": "admin",
                "command": HOLD,
                "gpu_count": 1,
                "ray": True,
                "max_retries": 0,
            }
        )
    )["job_id"]
    while "ready" not in ray.get(orch.logs.remote(job_id, None, 0, 0, 1 << 20))["data"]:
        time.sleep(0.2)
    time.sleep(2)  # the task's worker settles
    pids = [pid for pid, env in procs.tagged(cluster_id).items() if env.get("GPUQ_JOB_ID") == job_id]
    rss = pss = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
        except OSError:
            pass
    ray.get(orch.cancel.remote(job_id, "bench done"))
    return {"processes": len(pids), "rss_mib": round(rss / 1024), "pss_mib": round(pss / 1024)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=10)
    ap.add_argument("--json")
    args = ap.parse_args()
    start_inprocess_cluster()
    tmp = Path(tempfile.mkdtemp(prefix="gpuq-bench-ray-"))
    orch = start_orchestrator(
        {
            "store_path": str(tmp / "gpuq.db"),
            "data_dir": str(tmp / "data"),
            "warm_slots_per_node": 4,
            "scratch_dir": tempfile.mkdtemp(prefix="gq-"),
        }
    )
    ray.get(orch.ping.remote(), timeout=120)
    cluster_id = ray.get(orch.status.remote())["details"]["cluster_id"]
    while ray.get(orch.status.remote())["details"]["slots"]["parked"] < 8:
        time.sleep(0.2)
    samples: dict[str, list[float]] = {k: [] for k in KINDS}
    for _ in range(args.n):
        for kind, fields in KINDS.items():
            samples[kind].append(first_line(orch, fields))
    out = {
        "n": args.n,
        "first_line_s": {
            k: {"p50": round(statistics.median(v), 2), "p90": round(pct(v, 0.9), 2)}
            for k, v in samples.items()
        },
    }
    out["ray_extra_p50_s"] = {
        k: round(out["first_line_s"][k]["p50"] - out["first_line_s"]["plain"]["p50"], 2)
        for k in KINDS
        if k != "plain"
    }
    out["memory"] = memory(orch, cluster_id)
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
