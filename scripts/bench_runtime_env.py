#!/usr/bin/env python3
"""What a Ray runtime env costs a job's start (issues #17, #25), submit -> first line, on
gpuq's own local cluster (two simulated 8-GPU nodes, warm slots), one-GPU jobs one
after the other:

  plain             a job with no runtime env (the baseline)
  package new       a working_dir package no job used before: fetched to the node, unpacked
  package again     the same package: on the node already
  pip new           a pip list no job used before (a wheel built here): a virtualenv made
  pip again         the same list: its virtualenv is made already

It runs on gpuq from before #25 too (scripts/bench_pair.py runs both, side by side):
there Ray's agent made the env for a runner of its own, and a pip requirement was the
wheel's path; since #25 the job's user makes it, and the requirement is a name in the
site's index (a folder index of that wheel here).

Usage: .venv/bin/python scripts/bench_runtime_env.py [--runs 3] [--user NAME] [--json out.json]
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
os.environ.pop("RAY_ADDRESS", None)

import ray  # noqa: E402
from ray._private.runtime_env.packaging import create_package, get_uri_for_directory  # noqa: E402

from orchestrator.core.config import Config  # noqa: E402
from orchestrator.core.rights import Caller  # noqa: E402
from orchestrator.deploy.localcluster import start_inprocess_cluster  # noqa: E402
from orchestrator.head.actor import start_orchestrator  # noqa: E402
from tests.support import write_wheel  # noqa: E402

STAMP = "date +%s.%N"
# Since #25 a pip requirement is a name from the site's index, not a path to a wheel.
BY_INDEX = "pip_index_url" in Config.model_fields
ROWS = ("plain", "package new", "package again", "pip new", "pip again")


def project(root: Path, n: int) -> Path:
    d = root / f"project{n}"
    d.mkdir(parents=True)
    (d / "main.py").write_text(f"print({n})\n")
    for i in range(20):  # a small project: twenty modules of 2 KB
        (d / f"module{i}.py").write_text(f"# {n}\n" + "x = 1\n" * 350)
    return d


class Gpuq:
    def __init__(self, tmp: Path, user: str):
        self.user = user
        self.index = tmp / "index"
        config = {
            "store_path": str(tmp / "gpuq.db"),
            "data_dir": str(tmp / "data"),
            "loop_interval_s": 2.0,
            "stop_grace_s": 1.0,
        }
        if BY_INDEX:
            config["pip_index_url"] = (self.index / "simple").as_uri()
        self.actor = start_orchestrator(config)
        ray.get(self.actor.ping.remote(), timeout=120)
        while ray.get(self.actor.status.remote())["details"]["slots"]["parked"] < 16:
            time.sleep(0.2)

    def upload(self, d: Path, tmp: Path) -> str:
        """As `ray job submit --working-dir` does, through the package routes' call."""
        uri = get_uri_for_directory(str(d), include_gitignore=True)
        target = tmp / uri.split("://")[1]
        create_package(str(d), target, include_gitignore=True)
        ray.get(self.actor.package_put.remote(uri, target.read_bytes(), Caller(self.user, "user")))
        return uri

    def pip(self, tmp: Path, n: int) -> dict:
        wheel = write_wheel(tmp, f"gpuq_bench{n}")
        if not BY_INDEX:
            return {"pip": [str(wheel)]}
        from tests.support import write_index

        write_index(self.index, [wheel])
        return {"pip": [f"gpuq-bench{n}==1.0"]}

    def first_line(self, runtime_env: dict | None = None) -> float:
        spec = {
            "run_id": "bench",
            "user": self.user,
            "command": STAMP,
            "gpu_count": 1,
            "max_retries": 0,
            **({"runtime_env": runtime_env} if runtime_env else {}),
        }
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
    ap.add_argument("--user", default="admin", help="the gpuq user jobs are submitted as (default: admin)")
    ap.add_argument("--json")
    args = ap.parse_args()
    cluster = start_inprocess_cluster()
    tmp = Path(tempfile.mkdtemp(prefix="gpuq-bench-env-"))
    os.chmod(tmp, 0o755)  # the index is read by the job's user
    g = Gpuq(tmp, args.user)
    rows: dict[str, list[float]] = {k: [] for k in ROWS}
    for n in range(args.runs):
        rows["plain"].append(g.first_line())
        env = {"working_dir": g.upload(project(tmp, n), tmp)}
        rows["package new"].append(g.first_line(env))
        rows["package again"].append(g.first_line(env))
        pip = g.pip(tmp, n)
        rows["pip new"].append(g.first_line(pip))
        rows["pip again"].append(g.first_line(pip))
        print(json.dumps({k: round(v[-1], 3) for k, v in rows.items()}), flush=True)
    out = {
        "machine": f"{os.cpu_count()} cores",
        "runs": args.runs,
        "user": args.user,
        "submit_to_first_line_s": {
            k: {"median": statistics.median(v), "max": max(v)} for k, v in rows.items()
        },
    }
    print(f"\n{'submit -> first line':<20} {'median s':>9} {'max s':>7}")
    for k, v in out["submit_to_first_line_s"].items():
        print(f"{k:<20} {v['median']:>9.2f} {v['max']:>7.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main()
