#!/usr/bin/env python3
"""A cut-off node never runs a job twice (issue #30): partitions and a killed raylet
under a running 8-GPU job, on GPU nodes that are hosts of their own (`gpuq up --hosts`),
with the site's lease and margin (by default 20 s and 10 s).

Each run submits an 8-GPU job that appends its attempt and the time to a file on this
host every 0.2 s and ignores TERM (the worst case: only a KILL stops it), then
  partition-15   cuts its node off and heals it after 15 s;
  partition-90   the same, healed after 90 s;
  partition-never  never healed while it matters: 60 s after the job runs elsewhere;
  kill           SIGKILLs its node's raylet.
Per run: when the old copy's last line was written and the new copy's first (from the
cut), and the overlap (old last - new first: at most 0 is the guarantee), the job's end
and its completions. A node whose raylet exited is started again as an operator would
(`gpuq up`) before the next run. The kinds are interleaved, round after round.

  sudo .venv/bin/python scripts/bench_partition.py [--runs 5] [--json docs/bench_partition.json]

Needs root (network namespaces). It starts and stops its own cluster under /var/tmp.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator.core.config import Config  # noqa: E402
from orchestrator.deploy import hosts  # noqa: E402
from tests import accounts  # noqa: E402
from tests.partition import HostsCluster, scenario  # noqa: E402

KINDS = {
    "partition-15": ("partition", 15.0),
    "partition-90": ("partition", 90.0),
    "partition-never": ("partition", None),
    "kill": ("kill", 0.0),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--lease", type=float, default=Config().node_lease_s)
    ap.add_argument("--margin", type=float, default=Config().node_fence_margin_s)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if (why := hosts.available()) is not None:
        print(why, file=sys.stderr)
        return 2
    accounts.create()
    home = Path(tempfile.mkdtemp(prefix="gpuq-bench-hosts-", dir="/var/tmp"))
    cluster = HostsCluster(
        home,
        {
            "node_lease_s": args.lease,
            "node_fence_margin_s": args.margin,
            "warm_slots_per_node": 0,
            "unix_users": {"alice": accounts.UNIX_USERS["alice"]},
        },
    )
    results: dict[str, list[dict]] = {k: [] for k in args.kinds.split(",")}
    started = time.time()
    try:
        cluster.up()
        for round_ in range(args.runs):
            for kind in results:
                fault, heal = KINDS[kind]
                try:
                    out = scenario(cluster, fault, heal, hold_s=60.0, requeue_timeout=args.lease * 4 + 60)
                except AssertionError as e:  # said in the figures, and the next run starts clean
                    out = {"fault": fault, "heal_after_s": heal, "error": str(e)[:3000]}
                    for index in (1, 2):
                        hosts.heal(index)
                    time.sleep(args.lease)
                    cluster.repair()
                results[kind].append(out)
                print(f"round {round_ + 1} {kind}: {json.dumps(out)}", flush=True)
    finally:
        cluster.down()
        accounts.remove()
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(cluster.shared, ignore_errors=True)

    summary = {}
    print(f"\nlease {args.lease:.0f} s, margin {args.margin:.0f} s; {args.runs} runs of each kind")
    print(
        "| fault | requeued | old copy's last line after the cut (s) | new copy's first (s) | overlap (s) | "
        "completed once |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for kind, runs in results.items():

        def span(key: str, runs=runs) -> str:
            values = [r[key] for r in runs if r.get(key) is not None]
            if not values:
                return "–"
            return f"{statistics.median(values):.1f} ({min(values):.1f}–{max(values):.1f})"

        once = sum(1 for r in runs if r.get("state") == "completed" and r.get("completions") == 1)
        requeued = sum(1 for r in runs if r.get("requeued"))
        summary[kind] = {
            "requeued": requeued,
            "completed_once": once,
            "max_overlap_s": max(
                (r["overlap_s"] for r in runs if r.get("overlap_s") is not None), default=None
            ),
            "errors": sum(1 for r in runs if "error" in r),
        }
        old, new = span("old_last_after_cut_s"), span("new_first_after_cut_s")
        print(
            f"| {kind} | {requeued}/{len(runs)} | {old} | {new} | {span('overlap_s')} | {once}/{len(runs)} |"
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "command": " ".join(sys.argv),
                    "machine": f"{platform.node()} ({platform.machine()}, {os.cpu_count()} CPUs)",
                    "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
                    "lease_s": args.lease,
                    "margin_s": args.margin,
                    "summary": summary,
                    "runs": results,
                },
                indent=1,
            )
        )
    bad = [
        k
        for k, s in summary.items()
        if s["completed_once"] < len(results[k]) or (s["max_overlap_s"] or -1) > 0
    ]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
