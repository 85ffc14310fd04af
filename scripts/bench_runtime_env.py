#!/usr/bin/env python3
"""What a Ray runtime env costs a job's start (issue #17), submit -> first line, on
gpuq's own local cluster (two simulated 8-GPU nodes), one after the other:

  plain            a one-GPU job on a warm slot (the baseline)
  working_dir      a fresh package: Ray's agent downloads and unpacks it for a new slot
  cached package   the same package, a new slot (2 GPUs): unpacked already on the node
  parked env slot  the same package and shape again: the slot made for it is reused
  pip cold         a pip env (a wheel built here): Ray makes the virtualenv and installs
  pip cached       the same pip env, a new slot: the virtualenv is on the node already

Usage: .venv/bin/python scripts/bench_runtime_env.py [--runs 3] [--json out.json]
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ["RAY_AUTH_MODE"] = "disabled"  # a private loopback cluster for this run
os.environ.pop("RAY_ADDRESS", None)

import ray  # noqa: E402
from ray._private.runtime_env.packaging import create_package, get_uri_for_directory, upload_package_to_gcs  # noqa: E402

from orchestrator.runtime.actor import start_orchestrator  # noqa: E402
from orchestrator.runtime.localcluster import start_inprocess_cluster  # noqa: E402
from tests.support import write_wheel  # noqa: E402

STAMP = "date +%s.%N"


def project(root: Path, n: int) -> Path:
    d = root / f"project{n}"
    d.mkdir(parents=True)
    (d / "main.py").write_text(f"print({n})\n")
    for i in range(20):  # a small project: twenty modules of 2 KB
        (d / f"module{i}.py").write_text(f"# {n}\n" + "x = 1\n" * 350)
    return d


def upload(d: Path, tmp: Path) -> str:
    uri = get_uri_for_directory(str(d), include_gitignore=True)
    target = tmp / uri.split("://")[1]
    create_package(str(d), target, include_gitignore=True)
    upload_package_to_gcs(uri, target.read_bytes())
    return uri


class Gpuq:
    def __init__(self, tmp: Path):
        self.actor = start_orchestrator({"store_path": str(tmp / "gpuq.db"), "data_dir": str(tmp / "data"),
                                         "loop_interval_s": 2.0, "stop_grace_s": 1.0})
        ray.get(self.actor.ping.remote(), timeout=120)
        while ray.get(self.actor.status.remote())["details"]["slots"]["parked"] < 16:
            time.sleep(0.2)

    def first_line(self, gpus: int = 1, runtime_env: dict | None = None) -> float:
        spec = {"run_id": "bench", "user": "admin", "command": STAMP, "gpu_count": gpus, "max_retries": 0,
                **({"runtime_env": runtime_env} if runtime_env else {})}
        t0 = time.time()
        job_id = ray.get(self.actor.submit.remote(spec))["job_id"]
        while (job := ray.get(self.actor.get_job.remote(job_id)))["state"] not in ("completed", "failed"):
            time.sleep(0.02)
        data = ray.get(self.actor.logs.remote(job_id, None, 0, 0, 4096))["data"]
        if job["state"] != "completed":
            raise SystemExit(f"job failed: {job['failure_reason']}\n{data}")
        return float(data.split()[0]) - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json")
    args = ap.parse_args()
    cluster = start_inprocess_cluster()
    tmp = Path(tempfile.mkdtemp(prefix="gpuq-bench-env-"))
    g = Gpuq(tmp)
    rows: dict[str, list[float]] = {k: [] for k in ("plain", "working_dir", "cached package", "parked env slot",
                                                     "pip cold", "pip cached")}
    for n in range(args.runs):
        rows["plain"].append(g.first_line())
        env = {"working_dir": upload(project(tmp, n), tmp)}
        rows["working_dir"].append(g.first_line(2, env))
        rows["cached package"].append(g.first_line(3, env))
        rows["parked env slot"].append(g.first_line(3, env))
        pip = {"pip": [str(write_wheel(tmp, f"gpuq_bench{n}"))]}
        rows["pip cold"].append(g.first_line(2, pip))
        rows["pip cached"].append(g.first_line(3, pip))
        print(json.dumps({k: round(v[-1], 3) for k, v in rows.items()}), flush=True)
    out = {"machine": f"{os.cpu_count()} cores", "runs": args.runs,
           "submit_to_first_line_s": {k: {"median": statistics.median(v), "max": max(v)} for k, v in rows.items()}}
    print(f"\n{'submit -> first line':<20} {'median s':>9} {'max s':>7}")
    for k, v in out["submit_to_first_line_s"].items():
        print(f"{k:<20} {v['median']:>9.2f} {v['max']:>7.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main()
