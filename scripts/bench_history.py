#!/usr/bin/env python3
"""The orchestrator's memory and start time against its history (issue #28), in one run.

A real orchestrator actor on a local Ray cluster, starting no job (start_jobs =
false): batches of 5,000 jobs are submitted as an array and cancelled, so each batch
is 5,000 ended jobs in the store. After each batch (and `--memory-s` more, so that the
orchestrator may forget them) its RSS is read from /proc. Two orchestrators in turn,
the same way: one that keeps ended jobs in memory for a day (as every job was kept
before #28), one that keeps them `--memory-s`. Then each is restarted on its store of
20,000 ended jobs, and its start (actor created -> answers) is timed beside a start
on an empty store.

Targets: RSS flat, within noise, over 20,000 ended jobs; start time that does not
grow with history.
Usage: .venv/bin/python scripts/bench_history.py [--batches 4] [--memory-s 5] [--json out.json]
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.pop("RAY_ADDRESS", None)

import ray  # noqa: E402

from orchestrator.deploy.localcluster import start_inprocess_cluster  # noqa: E402
from orchestrator.head.actor import start_orchestrator  # noqa: E402
from orchestrator.head.names import NAMESPACE, ORCHESTRATOR_NAME  # noqa: E402

BATCH = 5000


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return round(kb / 1024, 1)


def started(config: dict):
    t = time.perf_counter()
    orch = start_orchestrator(config)
    ray.get(orch.ping.remote(), timeout=300)
    return orch, round(time.perf_counter() - t, 2)


def stop(orch) -> None:
    ray.kill(orch, no_restart=True)
    while True:
        try:
            ray.get_actor(ORCHESTRATOR_NAME, namespace=NAMESPACE)
            time.sleep(0.2)
        except ValueError:
            return


def run(memory_s: float, batches: int, pause_s: float) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="gpuq-bench-history-"))
    config = {
        "store_path": str(tmp / "gpuq.db"),
        "data_dir": str(tmp / "data"),
        "warm_slots_per_node": 0,
        "start_jobs": False,
        "job_memory_s": memory_s,
    }
    orch, empty_start = started(config)
    pid = ray.get(orch.pid.remote())
    spec = {"run_id": "h", "user": "admin", "command": "true", "gpu_count": 1}
    out = {"job_memory_s": memory_s, "rss_mib": [rss_mib(pid)], "start_s_empty": empty_start}
    for _ in range(batches):
        array = ray.get(orch.submit.remote({**spec, "array": BATCH}), timeout=300)["array"]["id"]
        ray.get(orch.bulk.remote("cancel", {"array": array}), timeout=300)
        time.sleep(pause_s)  # time to forget what ended
        out["rss_mib"].append(rss_mib(pid))
    out["ended_jobs"] = batches * BATCH
    stop(orch)
    orch, out["start_s_with_history"] = started(config)
    out["rss_mib_after_restart"] = rss_mib(ray.get(orch.pid.remote()))
    listed = ray.get(orch.list_jobs.remote(limit=5), timeout=60)
    out["listed_total_after_restart"] = listed["total"]  # every ended job still found
    stop(orch)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--memory-s", type=float, default=5.0)
    ap.add_argument("--json")
    args = ap.parse_args()
    start_inprocess_cluster()
    pause = args.memory_s + 5  # the orchestrator looks every memory_s / 4 (at most a minute)
    out = {
        "machine": f"{os.cpu_count()} cores",
        "kept_a_day": run(86400.0, args.batches, pause),
        "forgotten": run(args.memory_s, args.batches, pause),
    }
    for key in ("kept_a_day", "forgotten"):
        r = out[key]["rss_mib"]
        out[key]["rss_growth_mib"] = round(r[-1] - r[0], 1)
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    ray.shutdown()


if __name__ == "__main__":
    main()
