#!/usr/bin/env python3
"""How fast the `gpuq` command answers, next to curl and Slurm's commands in the same
run (issue #16: each gpuq command <= 150 ms median). Not a test: prints figures.

Needs a running gpuq (`scripts/up`; a `gpuq login`, or GPUQ_URL + GPUQ_TOKEN, say where) and,
for the Slurm columns, the Slurm peer kit (`../shared/peers/slurm/setup`). Without the
peer, its rows are left out and say so.

Each command runs as a user runs it: a new process of `.venv/bin/gpuq` (or sbatch,
squeue, scancel, curl), timed from fork to exit. Then a shell loop of 100 submits,
gpuq's and sbatch's, gives submits per second.

Usage: .venv/bin/python scripts/bench_cli.py [-n 20] [--loop 100] [--json out.json]
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from orchestrator.cli import clusters  # noqa: E402
from orchestrator.cli.client import Client  # noqa: E402

GPUQ = str(ROOT / ".venv/bin/gpuq")


def timed(argv: list[str], env=None) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    took = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({out.returncode}): {out.stderr.strip()[-500:]}")
    return took, out.stdout


def series(argvs, env=None) -> dict:
    return _summary([timed(a, env)[0] for a in argvs])


def slurm_up() -> bool:
    if not shutil.which("sinfo"):
        return False
    r = subprocess.run(["sinfo", "-h", "-o", "%N"], capture_output=True, text=True)
    return r.returncode == 0 and "gmi-node" in r.stdout


def main() -> None:
    global GPUQ
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=20, help="runs per command")
    ap.add_argument("--loop", type=int, default=100, help="submits in the shell loop")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--run-only", action="store_true", help="only `gpuq run`'s first line (and srun's)")
    ap.add_argument("--gpuq", default=GPUQ, help="the gpuq command to time (a client-only venv's, say)")
    ap.add_argument(
        "--vs-gpuq", help="also time `status` and `submit` of this other gpuq command, paired with --gpuq's"
    )
    args = ap.parse_args()
    GPUQ = args.gpuq  # every helper below times this one
    n = args.n
    target = clusters.resolve()  # where `gpuq` would go: GPUQ_URL/GPUQ_TOKEN, a login, the admin token
    url, token = target.url, target.token
    env = {**os.environ, "GPUQ_URL": url, "GPUQ_TOKEN": token or ""}
    Client(url, token).get("/orchestrator/status")  # gpuq is there, or say so now
    curl_auth = ["-H", f"Authorization: Bearer {token}"]
    rows: dict[str, dict] = {}
    if args.run_only:
        rows.update(first_lines(n, env))
        for name, r in rows.items():
            print(f"{name:<44} median {r['median_ms']:>7.1f} ms  p90 {r['p90_ms']:>7.1f} ms")
        if args.json:
            args.json.write_text(
                json.dumps(
                    {"command": " ".join(["scripts/bench_cli.py", *sys.argv[1:]]), "first_lines": rows},
                    indent=1,
                )
                + "\n"
            )
        return

    # Jobs that wait (each wants all 16 GPUs, behind a 16-GPU holder) give cancel
    # something to cancel, and keep the cluster's state the same for every sample.
    hold = ["--gpus", "16", "--time", "10m", "--", "sleep", "600"]
    holder = json.loads(timed([GPUQ, "submit", "--json", *hold], env)[1])["job_id"]
    _running(Client(url, token), holder)  # its start (a placement, a worker) must not fall in a sample
    rows["gpuq status"] = series([[GPUQ, "status"]] * n, env)
    rows["gpuq queue"] = series([[GPUQ, "queue"]] * n, env)
    rows["gpuq jobs"] = series([[GPUQ, "jobs"]] * n, env)
    submitted = []
    t_sub = []
    for _ in range(n):
        took, out = timed([GPUQ, "submit", "--json", *hold], env)
        t_sub.append(took)
        submitted.append(json.loads(out)["job_id"])
    rows["gpuq submit"] = _summary(t_sub)
    rows["gpuq cancel"] = series([[GPUQ, "cancel", j] for j in submitted], env)
    if args.vs_gpuq:
        rows.update(paired(n, [GPUQ, args.vs_gpuq], env, hold))
    rows["curl GET /orchestrator/status"] = series(
        [["curl", "-sf", "-o", "/dev/null", *curl_auth, f"{url}/orchestrator/status"]] * n
    )
    body = json.dumps({"command": "sleep 600", "gpu_count": 16, "time_limit": 600, "run_id": "bench-curl"})
    ids = []
    t_curl = []
    for _ in range(n):
        took, out = timed(
            [
                "curl",
                "-sf",
                *curl_auth,
                "-H",
                "Content-Type: application/json",
                "-d",
                body,
                f"{url}/queue/submit",
            ]
        )
        t_curl.append(took)
        ids.append(json.loads(out)["job_id"])
    rows["curl POST /queue/submit"] = _summary(t_curl)
    for j in [*ids, holder]:
        Client(url, token).post(f"/jobs/{j}/cancel")

    slurm = slurm_up()
    if slurm:
        rows["sinfo"] = series([["sinfo"]] * n)
        rows["squeue"] = series([["squeue"]] * n)
        sb = ["sbatch", "--parsable", "--output=/dev/null", "--gpus=16", "--time=10", "--wrap", "sleep 600"]
        t_sb, sids = [], []
        for _ in range(n):
            took, out = timed(sb)
            t_sb.append(took)
            sids.append(out.strip().split(";")[0])
        rows["sbatch"] = _summary(t_sb)
        rows["scancel"] = series([["scancel", s] for s in sids])

    # Two loops each: jobs that run (`true`, one GPU: the cluster starts them while the
    # loop goes on), and jobs that wait behind a 16-GPU holder (the submit path alone).
    loops = {
        "gpuq submit (jobs run)": f"{GPUQ} submit --gpus 1 --time 1m -- true > /dev/null",
        "gpuq submit (jobs wait)": f"{GPUQ} submit {' '.join(hold)} > /dev/null",
    }
    if slurm:
        loops["sbatch (jobs run)"] = "sbatch -Q --output=/dev/null --gpus=1 --time=1 --wrap true > /dev/null"
        loops["sbatch (jobs wait)"] = (
            "sbatch -Q --output=/dev/null --gpus=16 --time=10 --wrap 'sleep 600' > /dev/null"
        )
    loop_rates = {}
    for name, line in loops.items():
        waiting = "wait" in name
        if waiting:  # a holder, so that the loop's jobs queue
            if name.startswith("gpuq"):
                holder = json.loads(timed([GPUQ, "submit", "--json", *hold], env)[1])["job_id"]
                _running(Client(url, token), holder)
            else:
                timed(["sbatch", "-Q", "--output=/dev/null", "--gpus=16", "--time=10", "--wrap", "sleep 600"])
        t0 = time.perf_counter()
        subprocess.run(
            ["bash", "-c", f"for i in $(seq {args.loop}); do {line} || exit 1; done"], env=env, check=True
        )
        loop_rates[name] = round(args.loop / (time.perf_counter() - t0), 1)
        if waiting and name.startswith("gpuq"):
            client = Client(url, token)
            for j in client.get("/queue", limit=args.loop + 10)["jobs"]:
                client.post(f"/jobs/{j['id']}/cancel")
            client.post(f"/jobs/{holder}/cancel")
        elif waiting:
            subprocess.run(["scancel", "-u", getpass.getuser()], check=False)

    print(f"{'command':<32} {'median ms':>10} {'p90 ms':>8} {'min ms':>8}")
    for name, r in rows.items():
        print(f"{name:<32} {r['median_ms']:>10.1f} {r['p90_ms']:>8.1f} {r['min_ms']:>8.1f}")
    if not slurm:
        print("(Slurm rows left out: the peer is not up; ../shared/peers/slurm/setup starts it)")
    for name, rate in loop_rates.items():
        print(f"shell loop of {args.loop} × {name}: {rate} submits/s")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": f"{platform.node()}, {os.cpu_count()} cores, "
                    f"Python {platform.python_version()}",
                    "command": " ".join(["scripts/bench_cli.py", *sys.argv[1:]]),
                    "commands": rows,
                    "loop": {"n": args.loop, "submits_per_s": loop_rates},
                    "slurm": slurm,
                },
                indent=1,
            )
            + "\n"
        )


def first_lines(n: int, env: dict) -> dict[str, dict]:
    """`gpuq run` (and `srun`, when the Slurm peer is up): from the command's start to
    its first line of output, on an idle cluster (a warm one-GPU slot for gpuq)."""
    out: dict[str, list[float]] = {"gpuq run: first line": [], "gpuq run: job's own clock": []}
    if slurm_up():
        out["srun: first line"] = []
    for _ in range(n):
        for name, argv in (
            ("gpuq run", [GPUQ, "run", "--time", "1m", "--", "date", "+%s.%N"]),
            ("srun", ["srun", "--gpus=1", "--time=1", "date", "+%s.%N"]),
        ):
            if f"{name}: first line" not in out:
                continue
            t0 = time.time()
            p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
            line = p.stdout.readline()
            out[f"{name}: first line"].append(time.time() - t0)
            if name == "gpuq run":
                out["gpuq run: job's own clock"].append(float(line.split()[0]) - t0)
            p.wait()
            time.sleep(1.0)  # the slot is parked again before the next sample
    return {k: _summary(v) for k, v in out.items()}


def _running(client: Client, job_id: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while client.get(f"/jobs/{job_id}")["state"] != "running":
        if time.monotonic() > deadline:
            raise SystemExit(f"the holder job {job_id} did not start in {timeout:.0f} s")
        time.sleep(0.2)
    time.sleep(2)  # let the launch's processes settle


def paired(n: int, gpuqs: list[str], env, hold: list[str]) -> dict:
    """`gpuq status` and `gpuq submit` (a job that waits) of each gpuq command, in turn
    sample by sample, so that the machine's drift falls on all of them alike. Each is
    named by its venv's folder."""
    rows, ids = {}, []
    for what, argv in (("status", ["status"]), ("submit", ["submit", "--json", *hold])):
        times: dict[str, list[float]] = {g: [] for g in gpuqs}
        for _ in range(n):
            for g in gpuqs:
                took, out = timed([g, *argv], env)
                times[g].append(took)
                if what == "submit":
                    ids.append(json.loads(out)["job_id"])
        for g in gpuqs:
            rows[f"gpuq {what} ({Path(g).parent.parent.name})"] = _summary(times[g])
    for j in ids:
        timed([gpuqs[0], "cancel", j], env)
    return rows


def _summary(times: list[float]) -> dict:
    q = statistics.quantiles(times, n=10)
    return {
        "n": len(times),
        "median_ms": round(1000 * statistics.median(times), 1),
        "p90_ms": round(1000 * q[8], 1),
        "min_ms": round(1000 * min(times), 1),
    }


if __name__ == "__main__":
    main()
