#!/usr/bin/env python3
"""The API under abuse (issue #12), in one run: log followers against the rest of the
API, and what a request that breaks a bound costs.

A job prints a line every 0.1 s. With 0 and then N followers of its output open
(`GET /jobs/{id}/logs?follow=true`, every follower reading all the time), the script
times GET /healthz and POST /queue/submit from one client, and reports p50/p99 of
each beside the same requests with no follower open.

Then, beside a valid submit, the time to refuse: JSON nested 8,000 deep, an array
range of 10^12 jobs, a 70 KB body, and a plain invalid field.

Then slow clients (issue #28): N connections without a token each send a submit's
headers and then its body one byte a second; with them open, /healthz is timed as
above, and what the slow ones were answered is counted (429: over the per-address
cap at once; 408: the body deadline).

Targets: with 100 followers, /healthz and POST /queue/submit p99 <= 200 ms; a request
that breaks a bound costs milliseconds; with 1,100 slow clients open, /healthz p99
<= 200 ms.
Usage: .venv/bin/python scripts/bench_abuse.py [--followers 100] [--n 200] [--slow 1100] [--json out.json]
"""

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.pop("RAY_ADDRESS", None)

import httpx  # noqa: E402
import ray  # noqa: E402

from orchestrator.deploy.localcluster import start_inprocess_cluster  # noqa: E402
from orchestrator.head.actor import start_orchestrator  # noqa: E402
from serve_app.api import deploy  # noqa: E402
from serve_app.limits import MAX_STREAMS_PER_USER  # noqa: E402

PORT = 8766
PRINTER = "python3 -c \"import time\nfor i in range(100000): print('line', i, flush=True); time.sleep(0.1)\""


def pct(values, q):
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * len(s) + 0.5) - 1))]


def timed(client: httpx.Client, n: int, job: dict) -> dict:
    health, submit = [], []
    for _ in range(n // 2):
        t = time.perf_counter()
        assert client.get("/healthz").status_code == 200
        health.append(time.perf_counter() - t)
        t = time.perf_counter()
        r = client.post("/queue/submit", json=job)
        assert r.status_code == 200, r.text
        submit.append(time.perf_counter() - t)
    ms = lambda xs, q: round(pct(xs, q) * 1000, 1)  # noqa: E731
    return {
        "healthz_p50_ms": ms(health, 0.5),
        "healthz_p99_ms": ms(health, 0.99),
        "submit_p50_ms": ms(submit, 0.5),
        "submit_p99_ms": ms(submit, 0.99),
    }


def refusals(client: httpx.Client, job: dict, n: int = 30) -> dict:
    """p50 ms to answer each kind of request, valid first: the refusals should cost no more."""
    json_type = {"content-type": "application/json"}
    kinds = {
        "valid_submit": lambda: client.post("/queue/submit", json=job),
        "deep_json_8000": lambda: client.post(
            "/queue/submit", headers=json_type, content=b'{"command": ' + b"[" * 8000 + b"]" * 8000 + b"}"
        ),
        "array_0_to_1e12": lambda: client.post("/queue/submit", json={**job, "array": "0-1000000000000"}),
        "body_70kb": lambda: client.post("/queue/submit", json={**job, "command": "x" * 70_000}),
        "bad_gpu_count": lambda: client.post("/queue/submit", json={**job, "gpu_count": "x"}),
    }
    out = {}
    for name, send in kinds.items():
        lat = []
        for _ in range(n):
            t = time.perf_counter()
            r = send()
            lat.append(time.perf_counter() - t)
            assert (r.status_code == 200) == (name == "valid_submit"), (name, r.status_code, r.text[:200])
        out[f"{name}_p50_ms"] = round(statistics.median(lat) * 1000, 1)
    return out


class Followers:
    """N followers in one asyncio loop on a thread, each reading its stream to the end."""

    def __init__(self, url: str, job_id: str, n: int):
        self.url, self.job_id, self.n = url, job_id, n
        self.bytes = [0] * n
        self.ready = threading.Event()
        self.stop = threading.Event()
        self.statuses: list[int] = []
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _one(self, client, i, opened):
        token = f"viewer-{i // MAX_STREAMS_PER_USER}"
        async with client.stream(
            "GET", f"/jobs/{self.job_id}/logs?follow=true", headers={"Authorization": f"Bearer {token}"}
        ) as r:
            self.statuses.append(r.status_code)
            opened.release()
            async for chunk in r.aiter_bytes():
                self.bytes[i] += len(chunk)
                if self.stop.is_set():
                    return

    async def _run(self):
        limits = httpx.Limits(max_connections=self.n + 10, max_keepalive_connections=self.n + 10)
        async with httpx.AsyncClient(base_url=self.url, timeout=None, limits=limits) as client:
            opened = asyncio.Semaphore(0)
            tasks = [asyncio.create_task(self._one(client, i, opened)) for i in range(self.n)]
            for _ in range(self.n):
                await opened.acquire()
            self.ready.set()
            while not self.stop.is_set():
                await asyncio.sleep(0.1)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


class SlowBodies:
    """N connections without a token, each sending a submit's body one byte a second."""

    def __init__(self, port: int, n: int):
        self.port, self.n = port, n
        self.answers: list[int] = []
        self.open = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _one(self, opened: list):
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            self.answers.append(-1)
            return
        writer.write(
            b"POST /queue/submit HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n{"
        )
        opened.append(1)
        try:
            while not self.stop.is_set():
                try:
                    line = await asyncio.wait_for(reader.readline(), 1.0)
                    if line:
                        self.answers.append(int(line.split()[1]))
                        return
                    return
                except TimeoutError:
                    writer.write(b" ")  # one byte a second
                    await writer.drain()
        except (OSError, ValueError, IndexError):
            self.answers.append(-1)
        finally:
            writer.close()

    async def _run(self):
        opened: list = []
        tasks = [asyncio.create_task(self._one(opened)) for _ in range(self.n)]
        while len(opened) + len(self.answers) < self.n:
            await asyncio.sleep(0.05)
        self.open.set()
        while not self.stop.is_set():
            await asyncio.sleep(0.1)
        await asyncio.gather(*tasks, return_exceptions=True)


def healthz(client: httpx.Client, n: int) -> dict:
    lat = []
    for _ in range(n):
        t = time.perf_counter()
        ok = client.get("/healthz").status_code == 200
        lat.append(time.perf_counter() - t)
        assert ok
    return {
        "healthz_p50_ms": round(pct(lat, 0.5) * 1000, 1),
        "healthz_p99_ms": round(pct(lat, 0.99) * 1000, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--followers", type=int, default=100)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--slow", type=int, default=1100)
    ap.add_argument("--json")
    args = ap.parse_args()
    out: dict = {"machine": f"{os.cpu_count()} cores", "followers": args.followers}

    start_inprocess_cluster()
    tmp = Path(tempfile.mkdtemp(prefix="gpuq-bench-streams-"))
    orch = start_orchestrator(
        {"store_path": str(tmp / "gpuq.db"), "data_dir": str(tmp / "data"), "warm_slots_per_node": 0}
    )
    ray.get(orch.ping.remote(), timeout=120)
    tokens = tmp / "tokens.json"
    # The built-in admin submits (its jobs run as the service account); viewers are
    # admins too, so they may read its output, MAX_STREAMS_PER_USER streams each.
    viewers = {
        f"viewer-{k}": {"user": f"viewer{k}", "role": "admin"}
        for k in range(args.followers // MAX_STREAMS_PER_USER + 1)
    }
    tokens.write_text(json.dumps({"bench-token": {"user": "admin", "role": "admin"}, **viewers}))
    url = deploy("127.0.0.1", PORT, str(tokens))
    auth = {"Authorization": "Bearer bench-token"}
    queued = {
        "run_id": "bench",
        "user": "admin",
        "command": "true",
        "gpu_count": 16,
    }  # waits behind the printer

    with httpx.Client(base_url=url, timeout=60, headers=auth) as client:
        printer = client.post(
            "/queue/submit", json={"run_id": "printer", "user": "admin", "command": PRINTER, "gpu_count": 1}
        ).json()["job_id"]
        while client.get(f"/jobs/{printer}").json()["state"] != "running":
            time.sleep(0.2)
        timed(client, 20, queued)  # warm up
        out["none"] = timed(client, args.n, queued)
        print("no follower:", json.dumps(out["none"]), flush=True)

        followers = Followers(url, printer, args.followers)
        followers.thread.start()
        assert followers.ready.wait(120), "followers did not open"
        assert set(followers.statuses) == {200}, followers.statuses
        time.sleep(2)
        before = sum(followers.bytes)
        t0 = time.perf_counter()
        out["with_followers"] = timed(client, args.n, queued)
        span = time.perf_counter() - t0
        got = sum(followers.bytes) - before
        out["with_followers"]["follower_bytes_per_s_each"] = round(got / span / args.followers, 1)
        out["with_followers"]["followers_receiving"] = sum(1 for b in followers.bytes if b)
        print(f"{args.followers} followers:", json.dumps(out["with_followers"]), flush=True)
        followers.stop.set()
        followers.thread.join(30)
        for key in ("healthz_p99_ms", "submit_p99_ms"):
            out[f"{key}_ratio"] = round(out["with_followers"][key] / out["none"][key], 2)
        out["refusals"] = refusals(client, queued)
        print("refusals:", json.dumps(out["refusals"]), flush=True)

        slow = SlowBodies(PORT, args.slow)
        slow.thread.start()
        assert slow.open.wait(120), "slow clients did not connect"
        opened = time.monotonic()
        out["slow_clients"] = {"open": args.slow, **healthz(client, args.n)}
        time.sleep(
            max(0.0, 12 - (time.monotonic() - opened))
        )  # past the 10 s body deadline: the rest get 408
        slow.stop.set()
        slow.thread.join(60)
        out["slow_clients"]["answered"] = {str(c): slow.answers.count(c) for c in sorted(set(slow.answers))}
        print(f"{args.slow} slow clients:", json.dumps(out["slow_clients"]), flush=True)
        print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    ray.shutdown()


if __name__ == "__main__":
    main()
