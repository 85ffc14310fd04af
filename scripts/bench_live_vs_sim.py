#!/usr/bin/env python3
"""Does the simulator predict the live scheduler? (issue #32) Not a test: prints figures
(tests/runtime/test_live_vs_sim.py runs a short one and asserts the agreement).

Takes a burst of real jobs from a trace (Philly's virtual cluster ee9e8c by default:
its first jobs ask 1 to 16 GPUs; those larger than the cluster are left out), scales their durations down
to seconds (`--mean-s`, each at least 1 s and at most `--max-s`) and their arrivals by
the same factor, then squeezes or stretches the arrivals until the burst offers `--load`
times the cluster's GPUs while it arrives. It submits each job through the REST API at its arrival (`sleep D`,
its GPUs, a time limit of D + `--slack-s`), waits for all to end, and reads how busy
the GPUs were while jobs waited from the orchestrator's counters
(gpuq_gpu_*_while_waiting_seconds_total, before and after). Then it replays the same
jobs, with the arrivals as they were really submitted, through the simulator on the
same nodes and the same policy, and prints both, with the difference in points.

Needs a running gpuq (`scripts/up`, or the test's cluster) and a token; only this
burst should run meanwhile.

Usage: .venv/bin/python scripts/bench_live_vs_sim.py [--jobs 200] [--load 1.3]
       [--mean-s 4] [--url URL --token T] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from orchestrator.cli import clusters  # noqa: E402
from orchestrator.cli.client import Client  # noqa: E402
from orchestrator.core.idleness import Cause  # noqa: E402
from orchestrator.core.policy import PolicyConfig  # noqa: E402
from orchestrator.sim.simulator import simulate  # noqa: E402
from orchestrator.sim.traces import TraceJob, load_trace  # noqa: E402


def burst(
    trace: Path, vc: str, n: int, gpus_total: int, load: float, mean_s: float, max_s: float, slack_s: float
):
    """`n` consecutive jobs of the trace (those that fit the cluster), as a live burst:
    (arrival offset s, duration s, gpus, time limit s), arrivals from 0."""
    jobs = [j for j in load_trace(trace, vc=vc) if j.gpus <= gpus_total and j.duration > 0][:n]
    scale = mean_s / (sum(j.duration for j in jobs) / len(jobs))
    first = jobs[0].submit
    out = []
    for j in jobs:
        d = round(min(max_s, max(1.0, j.duration * scale)), 1)
        out.append([(j.submit - first) * scale, d, j.gpus])
    # Squeeze (or stretch) the arrivals so that the burst offers `load` x the cluster's
    # GPUs while it arrives.
    work = sum(d * g for _, d, g in out)
    span = max(a for a, _, _ in out) or 1.0
    factor = work / (load * gpus_total) / span
    return [(round(a * factor, 2), d, g, math.ceil(d + slack_s)) for a, d, g in out]


def counters(url: str, token: str | None) -> dict[str, float]:
    """The busy-while-waiting counters from GET /metrics: all, busy, and each cause."""
    request = urllib.request.Request(f"{url}/metrics", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=30) as r:
        text = r.read().decode()
    names = {
        "gpuq_gpu_while_waiting_seconds_total": "all",
        "gpuq_gpu_busy_while_waiting_seconds_total": "busy",
    }
    got: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in names:
                got[names[sample.name]] = sample.value
            elif sample.name == "gpuq_gpu_idle_while_waiting_seconds_total":
                got[sample.labels["cause"]] = sample.value
    return got


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trace", type=Path, default=ROOT.parent / "shared/traces/philly.csv")
    ap.add_argument("--vc", default="ee9e8c", help="a virtual cluster whose jobs mix 1 to 16 GPUs")
    ap.add_argument("--jobs", type=int, default=200)
    ap.add_argument("--load", type=float, default=1.3, help="offered load while the burst arrives")
    ap.add_argument("--mean-s", type=float, default=4.0, help="mean duration after scaling")
    ap.add_argument("--max-s", type=float, default=30.0, help="longest duration after scaling")
    ap.add_argument("--slack-s", type=float, default=10.0, help="time limit = duration + this")
    ap.add_argument("--url")
    ap.add_argument("--token")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    target = clusters.resolve()
    url, token = (args.url or target.url).rstrip("/"), args.token or target.token
    client = Client(url, token)
    sizes = {n["node"]: n["total"] for n in client.get("/resources")["nodes"]}
    policy = client.get("/orchestrator/status")["details"]["policy"]  # the site's policy, by name
    jobs = burst(
        args.trace, args.vc, args.jobs, sum(sizes.values()), args.load, args.mean_s, args.max_s, args.slack_s
    )
    print(f"{len(jobs)} jobs on {sizes}, policy {policy}: arriving over {jobs[-1][0]:.0f} s")

    before = counters(url, token)
    t0 = time.time()
    submitted: list[tuple[str, float]] = []
    for n, (at, d, g, limit) in enumerate(jobs):
        time.sleep(max(0.0, t0 + at - time.time()))
        body = {"run_id": f"burst-{n}", "command": f"sleep {d}", "gpu_count": g, "time_limit": limit}
        job_id = client.post("/queue/submit", body)["job_id"]
        submitted.append((job_id, time.time() - t0))
    ids = {j for j, _ in submitted}
    while True:
        ended = [j for j in client.get("/jobs", limit=len(ids) + 100)["jobs"] if j["id"] in ids]
        if len([j for j in ended if j["state"] in ("completed", "failed", "cancelled")]) == len(ids):
            break
        time.sleep(1.0)
    wall = time.time() - t0
    # The last interval of waiting is counted by the cycle after it: wait for one more.
    cycles = client.get("/orchestrator/status")["stats"]["scheduling_cycles"]
    while client.get("/orchestrator/status")["stats"]["scheduling_cycles"] <= cycles:
        time.sleep(0.1)
    after = counters(url, token)
    live = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    live_busy = live.get("busy", 0.0) / live["all"] if live.get("all") else None
    live_causes = {
        c.value: live.get(c.value, 0.0) / live["all"] for c in Cause if live.get("all") and live.get(c.value)
    }

    # Each job's GPUs were held from its start decision to its end: its `sleep` and what a
    # launch and an exit cost, which the simulator does not model.
    held = []
    for job_id, _ in submitted:
        j = client.get(f"/jobs/{job_id}")
        held.append(max(0.1, j["ended_at"] - j["state_times"]["scheduled"]))
    arrivals = [at for _, at in submitted]
    cfg = PolicyConfig.preset(policy)
    # Predicted: the trace's durations. Replayed: the hold times as they were live, so that
    # what differs is the scheduler's decisions, not the cost of a launch.
    predicted = simulate(
        [TraceJob(at, d, g, limit=float(lim)) for at, (_, d, g, lim) in zip(arrivals, jobs, strict=True)],
        cfg,
        sizes,
    )
    replayed = simulate(
        [
            TraceJob(at, h, g, limit=float(lim))
            for at, h, (_, _, g, lim) in zip(arrivals, held, jobs, strict=True)
        ],
        cfg,
        sizes,
    )
    print(f"live:           busy while jobs waited {live_busy:.3f}; idle {_fmt(live_causes)}; {wall:.0f} s")
    rows = {}
    for name, sim in (("sim, predicted", predicted), ("sim, as held", replayed)):
        busy = sim.utilization_while_waiting
        diff = None if live_busy is None or busy is None else round(100 * (live_busy - busy), 2)
        rows[name] = {
            "utilization_while_waiting": busy,
            "idle_while_waiting": sim.idle_while_waiting,
            "makespan_s": sim.makespan_s,
            "live_minus_sim_pt": diff,
        }
        print(
            f"{name + ':':<16}busy while jobs waited {busy:.3f}; idle {_fmt(sim.idle_while_waiting)}; "
            f"makespan {sim.makespan_s:.0f} s; live - sim {diff:+.1f} pt"
        )
    overhead = sum(h - d for h, (_, d, _, _) in zip(held, jobs, strict=True)) / len(jobs)
    print(f"GPUs held {overhead:.2f} s longer than each job's sleep, on average")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": f"{platform.node()}, Python {platform.python_version()}",
                    "command": " ".join(["scripts/bench_live_vs_sim.py", *sys.argv[1:]]),
                    "jobs": len(jobs),
                    "sizes": sizes,
                    "live": {
                        "utilization_while_waiting": live_busy,
                        "idle_while_waiting": live_causes,
                        "wall_s": wall,
                    },
                    "held_beyond_sleep_s": round(overhead, 3),
                    "predicted": rows["sim, predicted"],
                    "as_held": rows["sim, as held"],
                },
                indent=1,
            )
            + "\n"
        )


def _fmt(shares: dict[str, float]) -> str:
    return ", ".join(f"{c} {100 * v:.1f} %" for c, v in shares.items()) or "none"


if __name__ == "__main__":
    main()
