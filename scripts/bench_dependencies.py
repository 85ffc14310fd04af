#!/usr/bin/env python3
"""What judging dependencies costs a scheduling cycle (issue #28), without Ray.

The case the issue found: one job naming a 10,000-job array 500 times (each of the 500
references stood for 10,000 members: 5,000,000 judged before every cycle). The service
runs on the tests' fake backend with starts stopped; the site's max_dependency_jobs is
raised to 10,000 so the job is accepted (the default, 1,000, refuses it: 422). Timed:
`dependents.check` on its first cycle (the job is judged), on cycles where nothing
moved, and on the cycle after one member was cancelled.

Target: one cycle <= 10 ms. Usage: .venv/bin/python scripts/bench_dependencies.py [--json out.json]
"""

import argparse
import asyncio
import getpass
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator.head.service import OrchestratorService  # noqa: E402
from tests.runtime.fakes import FakeBackend  # noqa: E402


async def settle(svc, cycles: list, count: int) -> None:
    """Wake the loop until it has judged `count` times."""
    while len(cycles) < count:
        svc.tasks.wake()
        await asyncio.sleep(0.01)


async def measure() -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="gpuq-bench-deps-"))
    user = getpass.getuser()
    now = [1_800_000_000.0]
    svc = OrchestratorService.open(
        {
            "store_path": str(tmp / "gpuq.db"),
            "data_dir": str(tmp / "data"),
            "start_jobs": False,
            "warm_slots_per_node": 0,
            "telemetry_interval_s": 3600,
            "loop_interval_s": 3600,
            "allowed_system_accounts": [user],
            "max_dependency_jobs": 10_000,
            "max_jobs_per_user": 20_000,
        },
        backend=FakeBackend(lambda: now[0]),
        clock=lambda: now[0],
    )
    cycles: list[float] = []
    judge = svc.requests.dependents.check

    def timed(at: float, last_plan):  # every call the scheduling loop makes, timed
        t = time.perf_counter()
        changed = judge(at, last_plan)
        cycles.append((time.perf_counter() - t) * 1000)
        return changed

    svc.requests.dependents.check = timed
    try:
        spec = {"run_id": "a", "user": user, "command": "true", "gpu_count": 1}
        array = (await svc.requests.submit({**spec, "array": 10_000}))["array"]["id"]
        await svc.requests.submit(
            {**spec, "run_id": "after", "dependency": "afterok:" + ":".join([array] * 500)}
        )
        await settle(svc, cycles, 1)
        first = cycles[-1]
        for _ in range(50):  # cycles where nothing moved
            await settle(svc, cycles, len(cycles) + 1)
        idle = cycles[-50:]
        await svc.requests.cancel(svc.queue.array(array)[0].id)
        await settle(svc, cycles, len(cycles) + 1)
        return {
            "machine": f"{os.cpu_count()} cores",
            "members_named": 10_000,
            "references": 500,
            "first_cycle_ms": round(first, 2),
            "idle_cycle_p50_ms": round(statistics.median(idle), 3),
            "idle_cycle_max_ms": round(max(idle), 3),
            "cycle_after_a_member_moved_ms": round(cycles[-1], 2),
            "dependent_state": svc.queue.get(
                next(j.id for j in svc.queue.jobs() if j.spec.run_id == "after")
            ).state.value,
        }
    finally:
        svc.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    args = ap.parse_args()
    out = asyncio.run(measure())
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
