#!/usr/bin/env python3
"""`gpuq run` as a user feels it (issue #26), on a cluster of its own (two simulated
8-GPU nodes, warm one-GPU slots, the API on a free port), so that
scripts/bench_pair.py can run it on two commits side by side:

  first line        from the command's start to its job's first line on the terminal
  return after end  from the job's last line (its own clock) to `gpuq run`'s exit

Each sample is a new `gpuq run` process (`python -m orchestrator.cli run`) of a
one-GPU job that prints the time, sleeps a second and prints the time again; the
first half fails (exit 3, no retry), the second half succeeds, and the exit code is
checked every time.

Usage: .venv/bin/python scripts/bench_run.py [-n 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
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
from serve_app.api import deploy  # noqa: E402

JOB = "date +%s.%N; sleep 1; date +%s.%N"


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * len(s) + 0.5) - 1))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=20)
    ap.add_argument("--json")
    args = ap.parse_args()
    cluster = start_inprocess_cluster()
    tmp = Path(tempfile.mkdtemp(prefix="gpuq-bench-run-"))
    orch = start_orchestrator(
        {"store_path": str(tmp / "gpuq.db"), "data_dir": str(tmp / "data"), "warm_slots_per_node": 4}
    )
    ray.get(orch.ping.remote(), timeout=120)
    while ray.get(orch.status.remote())["details"]["slots"]["parked"] < 8:
        time.sleep(0.2)
    tokens = tmp / "tokens.json"
    # The built-in admin: its jobs run as the service account, so no Unix account is needed.
    tokens.write_text(json.dumps({"bench-token": {"user": "admin", "role": "admin"}}))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = deploy("127.0.0.1", port, str(tokens))
    env = {**os.environ, "GPUQ_URL": url, "GPUQ_TOKEN": "bench-token", "PYTHONPATH": str(ROOT)}
    first, back = [], []
    for i in range(args.n):
        want = 3 if i < args.n // 2 else 0
        command = f"{JOB}; exit {want}"
        t0 = time.time()
        p = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli", "run", "--retries", "0", "--", "bash", "-c", command],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            cwd=ROOT,
        )
        line = p.stdout.readline()
        first.append(time.time() - t0)
        last = p.stdout.readline()
        p.stdout.read()
        code = p.wait()
        back.append(time.time() - float(last.split()[0]))
        if code != want or not line:
            raise SystemExit(f"gpuq run exited {code}, not {want}")
        time.sleep(0.5)  # its slot parked again
    out = {
        "machine": f"{os.cpu_count()} cores",
        "n": args.n,
        "first_line_s": {"p50": statistics.median(first), "p99": pct(first, 0.99)},
        "return_after_end_s": {"p50": statistics.median(back), "p99": pct(back, 0.99)},
    }
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main()
