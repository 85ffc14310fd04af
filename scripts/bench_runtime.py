#!/usr/bin/env python3
"""Benchmark the Ray runtime (issue #4 targets) on a local cluster of two simulated
8-GPU nodes, side by side with a bare-Ray baseline in the same run. Not a test.

  submit -> the command's first line     p50 <= 1 s, p99 <= 2 s; gpuq / bare Ray <= 1.2x
  a finished job's GPUs -> next job's first line          <= 1 s
  16 one-GPU jobs at once -> all 16 running               <= 5 s
  1,000 trivial one-GPU jobs -> completed jobs/s          >= 7.7 (Slurm default), goal 22.7
  the Slurm peer kit's backfill scenario (bench/bf)       shorts backfilled, longlim not

Every job prints `date +%s.%N` first, so "first line" is the moment the command ran.
Usage: .venv/bin/python scripts/bench_runtime.py [--quick] [--backfill-only] [--user NAME] [--json out.json]
(--user: submit as this gpuq user; under root its jobs then run as its Unix account.
The default, the built-in admin, runs as the service account.)
"""

from __future__ import annotations

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
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group  # noqa: E402
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy  # noqa: E402

try:
    from orchestrator.deploy.localcluster import start_inprocess_cluster
    from orchestrator.head.actor import start_orchestrator
except ImportError:  # a checkout from before the runtime split (bench_pair.py runs both)
    from orchestrator.runtime.actor import start_orchestrator  # type: ignore[no-redef]
    from orchestrator.runtime.localcluster import start_inprocess_cluster  # type: ignore[no-redef]

STAMP = "date +%s.%N"


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * len(s) + 0.5) - 1))]


@ray.remote(num_cpus=0)
class BareRunner:
    """The baseline: what gpuq does per job with none of gpuq (no queue, store, supervisor)."""

    def run(self, command: str) -> str:
        import subprocess

        gpus = ",".join(str(int(g)) for g in ray.get_gpu_ids())
        return subprocess.run(
            ["/bin/bash", "-c", command],
            capture_output=True,
            text=True,
            env={**os.environ, "CUDA_VISIBLE_DEVICES": gpus},
        ).stdout


def bare_first_line(node: str) -> float:
    t0 = time.time()
    pg = placement_group([{"GPU": 1.0, node: 0.001}], lifetime="detached")
    # No pg.ready(): it costs a worker of its own; the actor is placed when the group is.
    actor = BareRunner.options(
        num_gpus=1,
        lifetime="detached",
        scheduling_strategy=PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=0),
    ).remote()
    out = ray.get(actor.run.remote(STAMP))
    ray.kill(actor)
    remove_placement_group(pg)
    return float(out.split()[0]) - t0


class Gpuq:
    user = "admin"  # --user

    def __init__(self, tmp: Path, **config):
        self.actor = start_orchestrator(
            {
                "store_path": str(tmp / "gpuq.db"),
                "data_dir": str(tmp / "data"),
                "loop_interval_s": 2.0,
                "stop_grace_s": 1.0,
                **config,
            }
        )
        ray.get(self.actor.ping.remote(), timeout=120)

    def close(self) -> None:
        ray.kill(self.actor, no_restart=True)
        for info in ray.util.list_named_actors(all_namespaces=True):
            if info["name"].startswith("gpuq-"):
                ray.kill(ray.get_actor(info["name"], namespace=info["namespace"]), no_restart=True)
        for pg_id, info in ray.util.placement_group_table().items():
            if info["state"] != "REMOVED":
                remove_placement_group(PlacementGroup(ray.PlacementGroupID(bytes.fromhex(pg_id))))
        while ray.available_resources().get("GPU", 0) < 16:
            time.sleep(0.1)

    def warm(self, slots: int) -> float:
        """Wait until the orchestrator has its warm slots ready; how long that took."""
        t0 = time.time()
        while ray.get(self.actor.status.remote())["details"]["slots"]["parked"] < slots:
            time.sleep(0.2)
        return time.time() - t0

    def submit(
        self, command: str, gpus: int = 1, run_id: str = "bench", time_limit: int | None = None
    ) -> str:
        spec = {"run_id": run_id, "user": self.user, "command": command, "gpu_count": gpus, "max_retries": 0}
        if time_limit is not None:
            spec["time_limit"] = time_limit
        return ray.get(self.actor.submit.remote(spec))["job_id"]

    def job(self, job_id: str) -> dict:
        return ray.get(self.actor.get_job.remote(job_id))

    def wait(self, job_id: str, states=("completed", "failed")) -> dict:
        while (j := self.job(job_id))["state"] not in states:
            time.sleep(0.02)
        return j

    def first_line(self, job_id: str) -> float | None:
        data = ray.get(self.actor.logs.remote(job_id, None, 0, 0, 4096))["data"]
        return float(data.split()[0]) if data.strip() else None


def backfill(g: Gpuq) -> dict:
    """The Slurm peer kit's backfill scenario (bench/bf), on gpuq. Three 4-GPU `hold` jobs
    (2-minute limit, 60 s) leave 4 GPUs free; then a 16-GPU `big` job, a 2-GPU `longlim`
    job (10-minute limit) and six 2-GPU `short` jobs (1-minute limit, 25 s) are queued.
    Shorts may backfill into the 4 free GPUs; longlim must not (its limit passes big's
    reservation). Reports what the kit reports."""
    holds = [
        g.submit(f"{STAMP}; sleep 60; {STAMP}", gpus=4, run_id=f"hold{i}", time_limit=120) for i in range(3)
    ]
    for h in holds:
        while g.job(h)["state"] != "running":
            time.sleep(0.05)
    big = g.submit(STAMP, gpus=16, run_id="big", time_limit=60)
    longlim = g.submit(f"{STAMP}; sleep 25", gpus=2, run_id="longlim", time_limit=600)
    shorts = [g.submit(f"{STAMP}; sleep 25", gpus=2, run_id=f"short{i}", time_limit=60) for i in range(6)]
    g.wait(big)
    holds_end = max(
        float(ray.get(g.actor.logs.remote(h, None, 0, 0, 4096))["data"].split()[-1]) for h in holds
    )
    big_start = g.first_line(big)
    for j in [longlim, *shorts]:
        g.wait(j)
    before_big = [s for s in shorts if g.first_line(s) < big_start]
    return {
        "shorts_backfilled": len(before_big),
        "longlim_backfilled": g.first_line(longlim) < big_start,
        "big_start_delay_s": round(big_start - holds_end, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer repetitions and 200 instead of 1,000 jobs")
    ap.add_argument("--user", default="admin", help="the gpuq user jobs are submitted as (default: admin)")
    ap.add_argument("--json")
    ap.add_argument(
        "--backfill-only", action="store_true", help="only the Slurm kit's backfill scenario (bench/bf)"
    )
    args = ap.parse_args()
    reps = 10 if args.quick else 30
    many = 200 if args.quick else 1000
    Gpuq.user = args.user
    out: dict = {"user": args.user}

    cluster = start_inprocess_cluster()
    tmp = Path(tempfile.mkdtemp(prefix="gpuq-bench-"))
    if args.backfill_only:
        out["backfill"] = backfill(Gpuq(tmp / "bf"))
        print("backfill:", json.dumps(out["backfill"]))
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
        ray.shutdown()
        cluster.shutdown()
        return
    # Warm slots would hold every GPU and leave the bare-Ray baseline nothing to place:
    # the side-by-side part runs without them (a finished job's slot is still reused).
    g = Gpuq(tmp / "a", warm_slots_per_node=0)

    # 1. Submit -> first line, interleaved with the bare-Ray baseline so both see the same noise.
    ours, bare = [], []
    for i in range(reps):
        t0 = time.time()
        jid = g.submit(STAMP, run_id=f"lat{i}")
        g.wait(jid)
        ours.append(g.first_line(jid) - t0)
        bare.append(bare_first_line("gmi-node-1"))
    out["submit_to_first_line"] = {
        "gpuq_p50_s": statistics.median(ours),
        "gpuq_p99_s": pct(ours, 0.99),
        "bare_ray_p50_s": statistics.median(bare),
        "bare_ray_p99_s": pct(bare, 0.99),
        "ratio_p50": statistics.median(ours) / statistics.median(bare),
        "runs": reps,
    }

    cold = []  # the same when no slot can be reused: what a job pays when its shape is new
    for i in range(6):
        t0 = time.time()
        jid = g.submit(STAMP, gpus=2 + i, run_id=f"cold{i}")  # 2..7 GPUs: a shape never parked before
        g.wait(jid)
        cold.append(g.first_line(jid) - t0)
    out["submit_to_first_line"]["gpuq_new_slot_p50_s"] = statistics.median(cold)
    out["submit_to_first_line"]["ratio_new_slot_p50"] = statistics.median(cold) / statistics.median(bare)
    print("submit -> first line:", json.dumps(out["submit_to_first_line"], indent=None))
    g.close()

    # The rest with the default configuration (warm one-GPU slots).
    g = Gpuq(tmp / "b")
    out["warm_up_s"] = g.warm(16)
    print(f"16 warm slots ready after {out['warm_up_s']:.1f} s")

    # 2. Sixteen one-GPU jobs at once.
    t0 = time.time()
    ids = [g.submit(f"{STAMP}; sleep 5", run_id=f"burst{i}") for i in range(16)]
    for jid in ids:
        g.wait(jid)
    firsts = [g.first_line(j) for j in ids]
    out["burst16"] = {"all_running_after_s": max(firsts) - t0, "median_s": statistics.median(firsts) - t0}
    print("16 jobs at once:", json.dumps(out["burst16"]))

    # 3. GPUs handed over: a 16-GPU job ends, the next queued 16-GPU job starts on them.
    gaps = []
    for i in range(max(5, reps // 3)):
        a = g.submit(f"sleep 1; {STAMP}", gpus=16, run_id=f"a{i}")
        b = g.submit(STAMP, gpus=16, run_id=f"b{i}")
        g.wait(b)
        end_a = float(ray.get(g.actor.logs.remote(a, None, 0, 0, 4096))["data"].split()[-1])
        gaps.append(g.first_line(b) - end_a)
    out["handoff"] = {"p50_s": statistics.median(gaps), "max_s": max(gaps), "runs": len(gaps)}
    print("finished job -> next job's first line:", json.dumps(out["handoff"]))

    # 4. Throughput of trivial jobs.
    t0 = time.time()
    ids = [g.submit("true", run_id=f"tp{i}") for i in range(many)]
    submitted = time.time() - t0
    last = ids[-1]
    while True:
        st = ray.get(g.actor.status.remote())
        summary = st["queue_summary"]
        if (
            g.job(last)["state"] in ("completed", "failed")
            and summary["queued"] == 0
            and summary["running"] == 0
        ):
            break
        time.sleep(0.2)
    elapsed = time.time() - t0
    out["throughput"] = {
        "jobs": many,
        "seconds": elapsed,
        "jobs_per_s": many / elapsed,
        "submit_s": submitted,
    }
    print("trivial jobs:", json.dumps(out["throughput"]))

    # 5. A shape with no parked slot while warm one-GPU slots hold every GPU: its start
    # includes evicting them (issue #16's "eviction of other parked slots included").
    g.warm(16)
    evicting = []
    for i in range(6):
        t0 = time.time()
        jid = g.submit(STAMP, gpus=2 + i, run_id=f"evict{i}")
        g.wait(jid)
        evicting.append(g.first_line(jid) - t0)
    out["new_shape_evicting"] = {
        "p50_s": statistics.median(evicting),
        "max_s": max(evicting),
        "runs": len(evicting),
    }
    print("new shape, evicting warm slots:", json.dumps(out["new_shape_evicting"]))
    g.close()

    # 6. The Slurm peer kit's backfill scenario, on a fresh orchestrator.
    out["backfill"] = backfill(Gpuq(tmp / "c"))
    print("backfill:", json.dumps(out["backfill"]))
    out["machine"] = f"{os.cpu_count()} cores"
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main()
