#!/usr/bin/env python3
"""gpuq and Slurm side by side, in one run, on one machine (issue #16). Not a test.

Runs gpuq's runtime benchmark (scripts/bench_runtime.py: its own local Ray cluster of two
simulated 8-GPU nodes), then the Slurm peer kit's benchmarks (../shared/peers/slurm: two
8-GPU nodes named like ours) with Slurm's default settings and then its tuned ones, one
benchmark at a time, and prints one table of gpuq/Slurm ratios. Only ratios from the same
run mean much on a shared 2-core machine.

  measure                                         gpuq                 Slurm (kit)
  submit -> first line, p50 (and gpuq's p99)      warm slot            bench/lat --gap 7
  freed GPUs -> next queued job's first line      16-GPU hand-over     bench/lat --gap 0
  16 one-GPU jobs at once -> all running          first lines          bench/sat (sbatch loop)
  1,000 trivial one-GPU jobs, completed/s         submitted at once    bench/tput -n 1000
  a job shape with no parked slot -> first line   2..7 GPUs            (any job: the first row)

The kit's backfill scenario (bench/bf: three 4-GPU holds, a 16-GPU job, six short
2-GPU jobs that may backfill and one long one that must not) runs on both.

Needs root and the Debian mirror for the kit's first `setup` (it installs slurm-wlm).
The kit is stopped at the end unless --keep.

Usage: .venv/bin/python scripts/bench_vs_slurm.py [--quick] [--modes default tuned] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KIT = ROOT.parent / "shared/peers/slurm"


def run_json(argv: list[str], setup: list | None = None, timeout: float = 1800) -> dict:
    """Run a benchmark; its last stdout line is one JSON object (the kit's convention).
    A kit benchmark that finds a node in a passing state (seen: `planned`, right after
    the 1,000-job run) asks for `./setup`: run it, and the benchmark once more."""
    for attempt in (1, 2):
        print("  $", " ".join(str(a) for a in argv), flush=True)
        out = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout)
        if out.returncode == 0:
            return json.loads(out.stdout.strip().splitlines()[-1])
        if attempt == 1 and setup and "run ./setup" in out.stderr:
            subprocess.run([str(a) for a in setup], check=True, timeout=1200, stdout=subprocess.DEVNULL)
            continue
        raise SystemExit(f"{argv[0]} failed ({out.returncode}):\n{out.stderr[-2000:]}")
    raise AssertionError("unreachable")


def gpuq_side() -> dict:
    """bench_runtime.py in full (30 samples, 1,000 jobs, the backfill scenario): about 6 minutes."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gpuq.json"
        argv = [sys.executable, ROOT / "scripts/bench_runtime.py", "--json", path]
        print("  $", " ".join(str(a) for a in argv), flush=True)
        subprocess.run([str(a) for a in argv], check=True, timeout=3600, stdout=subprocess.DEVNULL)
        return json.loads(path.read_text())


def slurm_side(mode: str, quick: bool, kit: Path) -> dict:
    setup = [kit / "setup"] + ([] if mode == "default" else [f"--{mode}"])
    print("  $", " ".join(map(str, setup)), flush=True)
    subprocess.run([str(a) for a in setup], check=True, timeout=1200, stdout=subprocess.DEVNULL)
    n, reps = (10, 5) if quick else (30, 10)
    return {
        "lat_quiet": run_json([kit / "bench/lat", "-n", n, "--gap", 7], setup),
        "lat_after_end": run_json([kit / "bench/lat", "-n", n, "--gap", 0], setup),
        "sat": run_json([kit / "bench/sat", "-r", reps], setup),
        "tput": run_json([kit / "bench/tput", "-n", 1000], setup),
        "bf": run_json([kit / "bench/bf"], setup),
    }


def rows(g: dict, slurm: dict[str, dict]) -> list[tuple[str, float, dict[str, float], str, str]]:
    """(measure, gpuq, {mode: slurm}, target, better) with better = 'lower' or 'higher'."""

    def each(f):
        return {mode: f(s) for mode, s in slurm.items()}

    lat = g["submit_to_first_line"]
    return [
        (
            "submit -> first line, p50 (s)",
            lat["gpuq_p50_s"],
            each(lambda s: s["lat_quiet"]["submit_to_first_line_s"]["median"]),
            "<= Slurm's",
            "lower",
        ),
        ("submit -> first line, gpuq p99 (s)", lat["gpuq_p99_s"], {}, "<= 1 s", "lower"),
        (
            "freed GPUs -> next job's first line (s)",
            g["handoff"]["p50_s"],
            each(lambda s: s["lat_after_end"]["submit_to_first_line_s"]["median"]),
            "<= Slurm tuned",
            "lower",
        ),
        (
            "16 one-GPU jobs -> all running (s)",
            g["burst16"]["all_running_after_s"],
            each(lambda s: s["sat"]["all_running_s"]["median"]),
            "<= Slurm's (loop)",
            "lower",
        ),
        (
            "1,000 trivial jobs, completed/s",
            g["throughput"]["jobs_per_s"],
            each(lambda s: s["tput"]["completed_jobs_per_s"]),
            ">= Slurm tuned",
            "higher",
        ),
        (
            "new job shape -> first line (s)",
            lat["gpuq_new_slot_p50_s"],
            each(lambda s: s["lat_quiet"]["submit_to_first_line_s"]["median"]),
            "<= 1.0 s",
            "lower",
        ),
        (
            "new job shape, evicting warm slots (s)",
            g["new_shape_evicting"]["p50_s"],
            each(lambda s: s["lat_quiet"]["submit_to_first_line_s"]["median"]),
            "<= 1.0 s",
            "lower",
        ),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--modes", nargs="+", default=["default", "tuned"], choices=["default", "tuned"])
    ap.add_argument(
        "--quick", action="store_true", help="fewer Slurm samples (10 latencies, 5 bursts); 1,000 jobs stay"
    )
    ap.add_argument("--kit", type=Path, default=KIT)
    ap.add_argument("--keep", action="store_true", help="leave the Slurm peer running")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    began = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())

    print("gpuq:", flush=True)
    g = gpuq_side()
    slurm = {}
    try:
        for mode in args.modes:
            print(f"Slurm, {mode}:", flush=True)
            slurm[mode] = slurm_side(mode, args.quick, args.kit)
    finally:
        if not args.keep:
            subprocess.run([str(args.kit / "stop")], check=False, stdout=subprocess.DEVNULL)

    table = rows(g, slurm)
    head = f"{'measure':<42} {'gpuq':>8}" + "".join(f" {'Slurm ' + m:>14} {'gpuq/' + m:>12}" for m in slurm)
    print(f"\nsame run, {began}, {os.cpu_count()} cores\n{head}  target")
    for name, ours, theirs, target, _ in table:
        line = f"{name:<42} {ours:>8.2f}"
        for m in slurm:
            t = theirs.get(m)
            line += f" {t:>14.2f} {ours / t:>12.2f}" if t else f" {'-':>14} {'-':>12}"
        print(f"{line}  {target}")
    for who, bf in [("gpuq", g["backfill"]), *((f"Slurm {m}", s["bf"]) for m, s in slurm.items())]:
        print(
            f"{who} backfill: {bf.get('shorts_backfilled')} of 6 shorts backfilled, longlim backfilled "
            f"{bf.get('longlim_backfilled')}, big started {bf.get('big_start_delay_s')} s after the GPUs "
            "were free"
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "when": began,
                    "machine": f"{platform.node()}, {os.cpu_count()} cores, "
                    f"Python {platform.python_version()}",
                    "command": " ".join(["scripts/bench_vs_slurm.py", *sys.argv[1:]]),
                    "gpuq": g,
                    "slurm": slurm,
                    "table": [
                        dict(measure=n, gpuq=o, slurm=t, target=tg, better=b) for n, o, t, tg, b in table
                    ],
                },
                indent=1,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
