#!/usr/bin/env python3
"""The policy suite (issue #15): does one default win on every real trace, not just the
one it was tuned on? Not a test: prints figures.

Replays every Philly virtual cluster with at least 1,000 jobs and the four ITP clusters
(../shared/traces), each on N x 8 GPUs at exactly its load (orchestrator/sim/suite.py: at_load),
under coarse time limits, with greedy, EASY and the default. Prints, per trace and
policy: utilization, utilization while jobs waited (and where the idle GPU-time went:
draining for reservations, fragmentation...), avg / p95 / max wait and avg JCT; then
the default against its targets (orchestrator/sim/suite.py, Targets): up to 95 % load,
avg wait <= greedy's, max wait <= EASY's, utilization >= EASY's - 0.5 pt; from 110 %
(overload), busy while jobs wait >= EASY's - 0.5 pt and >= 95 % wherever any policy
reaches it, makespan <= 1.01 x EASY's, max wait <= EASY's.

--load 0.75 0.85 0.95 1.1 1.2 1.3 replays the suite at several loads (a policy tuned
to one load is tuned to one trace); --with NAME=KEY:VALUE,... adds variants of the default for
ablations, e.g. `--with no-sticky=sticky:0 --with oldest-first=age:1` (keys: age, short,
fairshare, sticky, depth).

Usage: .venv/bin/python scripts/bench_policy_suite.py [--traces ../shared/traces] [--load 0.85 ...]
       [--json docs/bench_policy_suite.json] [--jobs 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich import box  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from orchestrator.core.durations import format_duration  # noqa: E402
from orchestrator.sim.suite import Targets, busy_while_waiting, replay_one, standard_suite  # noqa: E402

CLASSIC = ("greedy", "easy")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--traces", type=Path, default=Path(__file__).resolve().parents[2] / "shared/traces")
    ap.add_argument("--load", type=float, nargs="+", default=[0.85], help="target loads (default 0.85)")
    ap.add_argument(
        "--with",
        dest="variants",
        action="append",
        default=[],
        metavar="NAME=KEY:VALUE,...",
        help="a variant of the default to replay too (see orchestrator/sim/suite.py: variant)",
    )
    ap.add_argument("--only", nargs="*", help="trace names to replay (default: the whole suite)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="replays in parallel")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    console = Console(width=None if sys.stdout.isatty() else 150)  # a log keeps whole columns
    traces = [t for t in standard_suite(args.traces) if not args.only or t.name in args.only]
    if not traces:
        sys.exit(f"no traces under {args.traces}")
    variants = dict(v.split("=", 1) for v in args.variants)
    policies = [*CLASSIC, "default", *variants]
    work = [(t, p, load, variants.get(p)) for load in args.load for t in traces for p in policies]
    began = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as pool:
        done = list(pool.map(replay_one, *zip(*work, strict=True)))
    wall = time.perf_counter() - began

    by = {(d["trace"], d["policy"], d["load"]): d for d in done}
    out = {
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "command": " ".join(["scripts/bench_policy_suite.py", *sys.argv[1:]]),
        "wall_s": round(wall, 1),
        "replays": done,
        "verdicts": [],
    }
    for load in args.load:
        console.print(_results_table(traces, policies, load, by))
        verdicts = [_verdict(t.name, load, by, p, policies) for t in traces for p in ("default", *variants)]
        out["verdicts"] += verdicts
        console.print(_verdict_table(verdicts, load))
    console.print(
        f"{len(work)} replays in {wall:.0f} s on {args.jobs} processes "
        f"(longest {max(d['seconds'] for d in done):.1f} s: "
        f"{max(done, key=lambda d: d['seconds'])['trace']})"
    )
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")
        console.print(f"wrote {args.json}")


def _results_table(traces, policies, load, by) -> Table:
    t = Table(
        title=f"policy suite at {load:.0%} load, coarse time limits — wait avg / p95 / max",
        box=box.SIMPLE_HEAD,
    )
    columns = (
        "trace",
        "jobs",
        "nodes",
        "policy",
        "util",
        "busy|wait",
        "idle: why",
        "avg",
        "p95",
        "max",
        "avg JCT",
    )
    for col in (*columns, "replay"):
        t.add_column(
            col, justify="left" if col in ("trace", "policy", "idle: why") else "right", no_wrap=True
        )
    for trace in traces:
        for i, p in enumerate(policies):
            d = by[(trace.name, p, load)]
            t.add_row(
                trace.name if i == 0 else "",
                f"{d['jobs']:,}" if i == 0 else "",
                str(d["nodes"]) if i == 0 else "",
                p,
                f"{d['utilization']:.3f}",
                _busy(d),
                _why(d),
                *(format_duration(d[k]) for k in ("avg_wait_s", "p95_wait_s", "max_wait_s", "avg_jct_s")),
                f"{d['seconds']:.1f} s",
            )
        t.add_section()
    return t


def _busy(d: dict) -> str:
    busy = d.get("utilization_while_waiting")
    return "–" if busy is None else f"{busy:.3f}"


def _why(d: dict) -> str:
    """The two largest causes of idle GPU-time while jobs waited, in points."""
    shares = sorted((d.get("idle_while_waiting") or {}).items(), key=lambda kv: -kv[1])[:2]
    short = {"reservation": "drain", "fragmentation": "frag", "out_of_service": "out", "limits": "caps"}
    return " ".join(f"{short.get(c, c)} {100 * v:.1f}" for c, v in shares if v >= 0.0005)


def _verdict(trace: str, load: float, by, policy: str, policies: list[str]) -> dict:
    d, g, e = (by[(trace, p, load)] for p in (policy, "greedy", "easy"))
    busy = [by[(trace, p, load)].get("utilization_while_waiting") for p in policies]
    best = max((b for b in busy if b is not None), default=None)
    checks = Targets().check_values(d, g, e, load=load, best_busy=best)
    ratio = lambda a, b: round(a / b, 3) if b else 1.0  # noqa: E731
    return {
        "trace": trace,
        "load": load,
        "policy": policy,
        **checks,
        "avg/greedy": ratio(d["avg_wait_s"], g["avg_wait_s"]),
        "max/easy": ratio(d["max_wait_s"], e["max_wait_s"]),
        "makespan/easy": ratio(d["makespan_s"], e["makespan_s"]),
        "util-easy pt": round(100 * (d["utilization"] - e["utilization"]), 2),
        "busy|wait": d.get("utilization_while_waiting"),
        "busy|wait-easy pt": round(100 * (busy_while_waiting(d) - busy_while_waiting(e)), 2),
        "best busy|wait": best,
    }


def _verdict_table(verdicts: list[dict], load: float) -> Table:
    t = Table(title=f"the default against its targets at {load:.0%} load (* = missed)", box=box.SIMPLE_HEAD)
    names = Targets.names(load)
    overload = names == Targets.OVERLOAD_NAMES
    if overload:
        columns = ("busy|wait − EASY's", "busy|wait (best)", "makespan / EASY's", "max / EASY's")
        cells = lambda v: (  # noqa: E731
            f"{v['busy|wait-easy pt']:+.1f} pt" + ("" if v[names[0]] else " *"),
            f"{_pct(v['busy|wait'])} ({_pct(v['best busy|wait'])})" + ("" if v[names[1]] else " *"),
            f"{v['makespan/easy']:.3f}" + ("" if v[names[2]] else " *"),
            f"{v['max/easy']:.2f}" + ("" if v[names[3]] else " *"),
        )
    else:
        columns = ("avg / greedy's", "max / EASY's", "util − EASY's")
        cells = lambda v: (  # noqa: E731
            f"{v['avg/greedy']:.2f}" + ("" if v[names[0]] else " *"),
            f"{v['max/easy']:.2f}" + ("" if v[names[1]] else " *"),
            f"{v['util-easy pt']:+.1f} pt" + ("" if v[names[2]] else " *"),
        )
    for col in ("trace", "policy", *columns, "all"):
        t.add_column(col, justify="left" if col in ("trace", "policy") else "right", no_wrap=True)
    for v in verdicts:
        t.add_row(v["trace"], v["policy"], *cells(v), "yes" if all(v[n] for n in names) else "no")
    t.add_section()
    for policy in dict.fromkeys(v["policy"] for v in verdicts):
        mine = [v for v in verdicts if v["policy"] == policy]
        met = [f"{sum(v[n] for v in mine)} met" for n in names]
        if not overload:
            met[0] += f", gm {statistics.geometric_mean(v['avg/greedy'] for v in mine):.2f}"
            met[1] += f", gm {statistics.geometric_mean(v['max/easy'] for v in mine):.2f}"
        else:
            met[2] += f", gm {statistics.geometric_mean(v['makespan/easy'] for v in mine):.3f}"
        t.add_row(
            f"{len(mine)} traces",
            policy,
            *met,
            f"{sum(all(v[n] for n in names) for v in mine)} of {len(mine)}",
        )
    return t


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f} %"


if __name__ == "__main__":
    main()
