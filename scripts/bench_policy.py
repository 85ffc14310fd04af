#!/usr/bin/env python3
"""Benchmark the scheduling core (issue #3 targets). Not a test: prints figures.

  plan() with 10,000 queued jobs on 2 x 8 GPUs        target <= 50 ms
  plan() with 10,000 queued jobs on 1,000 x 8 GPUs    target <= 500 ms
  Philly VC 11cb48 replay (16,091 jobs), per policy   target <= 5 s

Each plan() figure is the median of several runs, with reasons and estimated starts
for the first 100 jobs (what the API shows) and without (what the simulator uses).
Scenarios: 'busy' = every GPU taken; 'fragmented' = one GPU free per node while
the line wants 2+ GPUs, so the cycle must read the whole line (the worst case).

Usage: .venv/bin/python scripts/bench_policy.py [--trace ../shared/traces/philly.csv] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator.core.decisions import Snapshot  # noqa: E402
from orchestrator.core.ordering import Line  # noqa: E402
from orchestrator.core.ordering import WaitingJob as W
from orchestrator.core.policy import PolicyConfig, plan  # noqa: E402
from orchestrator.core.preemption import Running  # noqa: E402
from orchestrator.sim.simulator import simulate  # noqa: E402
from orchestrator.sim.traces import load_trace  # noqa: E402

SIZES_MIX = [1] * 76 + [2] * 10 + [4] * 8 + [8] * 5 + [16] * 1  # roughly Philly's shape, heavier on big jobs


def scenario(nodes: int, queued: int, fragmented: bool, seed: int = 7) -> Snapshot:
    rng = random.Random(seed)
    now = 1_000_000.0
    sizes = {f"node-{i}": 8 for i in range(nodes)}
    running, free = [], {}
    for n, node in enumerate(sizes):
        busy = 7 if fragmented else 8
        # a mix of job sizes per node: 4 + 2 + 1 + 1 (or 4 + 2 + 1 when fragmented)
        parts = [4, 2, 1, 1][: 3 if fragmented else 4]
        for k, g in enumerate(parts):
            running.append(
                Running(
                    f"r{n}.{k}",
                    f"r{n}.{k}",
                    f"u{rng.randrange(10)}",
                    rng.randint(1, 3),
                    {node: g},
                    now - rng.uniform(0, 36000),
                    rng.choice([3600.0, 14400.0, 86400.0]),
                )
            )
        free[node] = list(range(busy, 8))
    line = Line()
    total = nodes * 8
    for i in range(queued):
        g = rng.choice(SIZES_MIX) if not fragmented else rng.choice([2, 4, 8])
        line.add(
            W(
                f"q{i}",
                f"q{i}",
                f"u{rng.randrange(10)}",
                min(g, total),
                rng.randint(1, 3),
                i,
                now - rng.uniform(0, 86400),
                rng.choice([3600.0, 7200.0, 14400.0, 86400.0, 259200.0]),
            )
        )
    return Snapshot(
        sizes=sizes, free=free, line=line, running=running, usage={f"u{k}": k * 3600.0 for k in range(10)}
    )


def time_plan(snap: Snapshot, explain: bool, repeats: int) -> float:
    cfg = PolicyConfig()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        plan(snap, 1_000_000.0, cfg, explain=explain)
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trace", default=str(Path(__file__).resolve().parents[2] / "shared/traces/philly.csv"))
    ap.add_argument("--json")
    ap.add_argument("--repeats", type=int, default=3, help="replays per policy (median reported)")
    args = ap.parse_args()
    out: dict = {
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}"
    }

    print("plan() with 10,000 queued jobs (median ms)")
    rows = []
    for nodes, target_ms in ((2, 50), (1000, 500)):
        for fragmented in (False, True):
            snap = scenario(nodes, 10_000, fragmented)
            for explain in (True, False):
                ms = time_plan(snap, explain, repeats=9 if nodes == 2 else 5) * 1000
                row = dict(
                    nodes=nodes,
                    gpus=nodes * 8,
                    scenario="fragmented" if fragmented else "busy",
                    explain=explain,
                    ms=round(ms, 2),
                    target_ms=target_ms,
                )
                rows.append(row)
                print(
                    f"  {nodes:>5} nodes  {row['scenario']:<10}  explain={str(explain):<5}  {ms:8.2f} ms   "
                    f"(target {target_ms} ms)"
                )
    out["plan"] = rows

    print("Philly VC 11cb48 replay, 2 x 8 GPUs (median s)")
    trace = load_trace(args.trace, vc="11cb48")
    sims = []
    for name, limits in (("fifo", "exact"), ("greedy", "exact"), ("easy", "exact"), ("default", "coarse")):
        secs, res = [], None
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            res = simulate(
                trace, PolicyConfig.preset(name), {"gmi-node-1": 8, "gmi-node-2": 8}, limits=limits
            )
            secs.append(time.perf_counter() - t0)
        s = statistics.median(secs)
        sims.append(
            dict(
                policy=name,
                limits=limits,
                seconds=round(s, 2),
                cycles=res.cycles,
                us_per_cycle=round(s / res.cycles * 1e6, 1),
                utilization=round(res.utilization, 3),
                avg_wait_h=round(res.avg_wait_s / 3600, 1),
                max_wait_h=round(res.max_wait_s / 3600, 1),
            )
        )
        print(
            f"  {name:<8} {limits:<6} {s:6.2f} s  ({res.cycles} cycles, {s / res.cycles * 1e6:.0f} us/cycle) "
            " "
            f"util {res.utilization:.3f}  avg wait {res.avg_wait_s / 3600:.1f} h  max "
            f"{res.max_wait_s / 3600:.1f} h"
        )
    out["replay"] = sims
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
