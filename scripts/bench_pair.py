#!/usr/bin/env python3
"""Run one benchmark on two checkouts of gpuq in one session, alternately: a commit
from before a change, and this tree. This machine is shared and noisy, so figures from
different runs mean little; figures taken side by side, round after round, give ratios
that do (docs/BENCHMARKS.md quotes them).

  .venv/bin/python scripts/bench_pair.py --before 9de9bf2 --rounds 2 \\
      -- scripts/bench_runtime.py --quick --json {json}

The benchmark (a script path relative to the checkout, with its arguments) must write
its figures as JSON to the file named where `{json}` stands. Both checkouts run this
tree's version of the script (copied into the other), so both are measured the same
way (`--own-script`: each its own version, where the modules it imports moved); each
runs its own checkout's code, Ray workers included (PYTHONPATH names the
checkout); both share this tree's virtualenv. Prints every figure of both, the
median over rounds, and the ratio this tree / before; `--json` keeps all of it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def leaves(data, prefix: str = "") -> dict[str, float]:
    """Every number in a JSON document, by its dotted path."""
    if isinstance(data, bool):
        return {}
    if isinstance(data, (int, float)):
        return {prefix: float(data)}
    out: dict[str, float] = {}
    if isinstance(data, dict):
        for key, value in data.items():
            out.update(leaves(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def run(tree: Path, bench: list[str], out: Path) -> dict:
    argv = [sys.executable, str(tree / bench[0]), *[a.replace("{json}", str(out)) for a in bench[1:]]]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(
        argv, cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed in {tree}:\n{done.stderr[-3000:]}")
    return json.loads(out.read_text())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", required=True, help="a commit of this repository")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json")
    ap.add_argument(
        "--own-script",
        action="store_true",
        help="each checkout runs its own version of the benchmark (when only its imports moved)",
    )
    ap.add_argument("bench", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    bench = args.bench[1:] if args.bench[:1] == ["--"] else args.bench
    work = Path(tempfile.mkdtemp(prefix="gpuq-pair-"))
    before = work / "before"
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(before), args.before],
        check=True,
        capture_output=True,
    )
    if not args.own_script:
        shutil.copy(ROOT / bench[0], before / bench[0])
    figures: dict[str, list[dict]] = {"before": [], "after": []}
    try:
        for i in range(args.rounds):
            for name, tree in (
                (("before", before), ("after", ROOT)) if i % 2 == 0 else (("after", ROOT), ("before", before))
            ):
                figures[name].append(run(tree, bench, work / f"{name}-{i}.json"))
                print(f"round {i + 1} {name}: done", flush=True)
    finally:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(before)], capture_output=True
        )
    medians = {
        name: {k: statistics.median(v) for k, v in _columns(runs).items()} for name, runs in figures.items()
    }
    rows = []
    print(f"\n{'figure':<60} {'before':>10} {'after':>10} {'after/before':>13}")
    for key in sorted(set(medians["before"]) & set(medians["after"])):
        b, a = medians["before"][key], medians["after"][key]
        ratio = a / b if b else None
        rows.append({"figure": key, "before": b, "after": a, "ratio": ratio})
        print(f"{key:<60} {b:>10.3f} {a:>10.3f} {ratio if ratio is not None else float('nan'):>13.2f}")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "before": args.before,
                    "rounds": args.rounds,
                    "bench": bench,
                    "machine": f"{os.cpu_count()} cores",
                    "runs": figures,
                    "medians": rows,
                },
                indent=2,
            )
            + "\n"
        )


def _columns(runs: list[dict]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for one in runs:
        for key, value in leaves(one).items():
            out.setdefault(key, []).append(value)
    return out


if __name__ == "__main__":
    main()
