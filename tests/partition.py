"""A gpuq whose GPU nodes are hosts of their own (`gpuq up --hosts`, deploy/hosts.py),
and the faults one node can suffer there: a network partition (healed after a while, or
not) and a killed raylet. Used by tests/runtime/test_partition.py (a short lease) and
scripts/bench_partition.py (the site's lease, repeated for figures).

Everything goes through what users and operators use: `gpuq up`/`down` as the
operator, the REST API as a user. A scenario's job appends its attempt and the time to
a file on this host every 0.2 s (a folder every simulated host shares, as a lab's
shared storage), which is how overlap is measured: the last line of the old attempt
against the first of the new.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
NODES = ("gmi-node-1", "gmi-node-2")
TERMINAL = {"completed", "failed", "cancelled"}


@dataclass
class HostsCluster:
    home: Path  # its GPUQ_HOME (outside /tmp: each host has a /tmp of its own)
    site: dict  # its site config
    ray_port: int = 6390
    api_port: int = 8097
    user: str = "alice"
    env: dict = field(default_factory=dict)
    shared: Path = field(init=False)

    def __post_init__(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.shared = self.home.with_name(self.home.name + "-shared")  # GPUQ_HOME itself is 0700
        self.shared.mkdir(exist_ok=True)
        os.chmod(self.shared, 0o1777)
        lines = [f"api_port = {self.api_port}"]
        tables = []
        for key, value in self.site.items():
            if isinstance(value, dict):
                tables.append(f"[{key}]\n" + "\n".join(f"{k} = {json.dumps(v)}" for k, v in value.items()))
            else:
                lines.append(f"{key} = {json.dumps(value)}")
        (self.home / "config.toml").write_text("\n".join(lines) + "\n\n" + "\n\n".join(tables) + "\n")
        self.env = {
            **os.environ,
            "GPUQ_HOME": str(self.home),
            "GPUQ_RAY_PORT": str(self.ray_port),
            "GPUQ_URL": f"http://127.0.0.1:{self.api_port}",
        }
        self.env.pop("GPUQ_TOKEN", None)
        self.env.pop("RAY_ADDRESS", None)

    def gpuq(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(ROOT / ".venv" / "bin" / "gpuq"), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=ROOT,
        )

    def up(self) -> None:
        done = self.gpuq("up", "--hosts")
        if done.returncode != 0:
            raise RuntimeError(f"gpuq up --hosts failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        token = (self.home / "admin.token").read_text().strip()
        self.http = httpx.Client(
            base_url=self.env["GPUQ_URL"], timeout=10.0, headers={"Authorization": f"Bearer {token}"}
        )

    def down(self) -> None:
        self.gpuq("down", "--force")

    def get(self, path: str) -> dict:
        for _ in range(50):  # the API is on the head, which no fault here touches; still, be patient
            try:
                r = self.http.get(path)
                if r.status_code == 200:
                    return r.json()
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"GET {path} kept failing")

    def submit(self, command: str, gpus: int = 8, **fields) -> str:
        body = {"command": command, "gpu_count": gpus, "user": self.user, "run_id": "job", **fields}
        r = self.http.post("/queue/submit", json=body)
        r.raise_for_status()
        return r.json()["job_id"]

    def job(self, job_id: str) -> dict:
        return self.get(f"/jobs/{job_id}")

    def wait(self, predicate, timeout: float, what: str, interval: float = 0.2):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if value := predicate():
                return value
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")

    def down_nodes(self) -> list[str]:
        return self.get("/orchestrator/status")["details"]["down_nodes"]

    def repair(self) -> None:
        """What an operator does for a node whose raylet exited: `gpuq up` again."""
        done = self.gpuq("up", "--hosts")
        if done.returncode != 0:
            raise RuntimeError(f"gpuq up (repair) failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")

    def stamping_job(self, stubborn: bool = True) -> tuple[str, Path, Path]:
        """An 8-GPU job that appends `attempt time` every 0.2 s until told to stop;
        `stubborn`, it ignores TERM (the worst case: only a KILL ends it)."""
        tag = uuid.uuid4().hex[:8]
        stamps, stop = self.shared / f"stamps-{tag}", self.shared / f"stop-{tag}"
        command = ("trap '' TERM; " if stubborn else "") + (
            f"while [ ! -e {stop} ]; do echo $GPUQ_ATTEMPT $(date +%s.%N) >> {stamps}; sleep 0.2; done; "
            "echo done"
        )
        return self.submit(command, 8, run_id=f"stamps-{tag}", max_retries=0), stamps, stop


def read_stamps(path: Path) -> dict[int, list[float]]:
    out: dict[int, list[float]] = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        parts = line.split()
        if len(parts) == 2:
            out.setdefault(int(parts[0]), []).append(float(parts[1]))
    return out


def host_index(node: str) -> int:
    return NODES.index(node) + 1


def kill_raylet(index: int) -> None:
    """SIGKILL the node's raylet alone: its workers notice and exit; the host stays up."""
    from orchestrator.deploy import hosts

    for pid in hosts.pids(index):
        try:
            if "raylet/raylet" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace"):
                os.kill(pid, signal.SIGKILL)
        except (OSError, ProcessLookupError):
            continue


def scenario(
    cluster: HostsCluster,
    fault: str,
    heal_after: float | None,
    hold_s: float = 60.0,
    requeue_timeout: float = 150,
) -> dict:
    """One 8-GPU job, one fault on its node; the job's run afterwards, measured.
    fault: "partition" (healed `heal_after` s after the cut, or after `hold_s` more once
    the job runs elsewhere when None) or "kill" (the raylet, SIGKILL)."""
    from orchestrator.deploy import hosts

    # Both nodes in service first: an earlier fault's node may still be on its way back.
    cluster.wait(lambda: all(_repair(cluster, n) for n in NODES), 240, "both nodes in service")
    job_id, stamps, stop = cluster.stamping_job()
    job = cluster.wait(lambda: (j := cluster.job(job_id))["state"] == "running" and j, 90, "the job to run")
    (node,) = job["allocation"]
    index = host_index(node)
    cluster.wait(lambda: len(read_stamps(stamps).get(1, [])) >= 3, 60, "the job's first stamps")
    cut = time.time()
    healed: list[float] = []
    healer = None
    if fault == "kill":
        kill_raylet(index)
    else:
        hosts.partition(index)
        if heal_after is not None:

            def heal_later() -> None:
                time.sleep(max(0.0, cut + heal_after - time.time()))
                hosts.heal(index)
                healed.append(time.time())

            healer = threading.Thread(target=heal_later, daemon=True)
            healer.start()

    def moved():
        j = cluster.job(job_id)
        return j if j["attempts"] >= 2 and j["state"] == "running" else None

    moved_at = None
    try:
        long = fault == "kill" or heal_after is None
        cluster.wait(moved, requeue_timeout if long else heal_after + 30, "the job to run elsewhere")
        moved_at = time.time()
    except AssertionError as e:
        if fault == "kill" or heal_after is None:
            events = [
                (round(ev["time"] - cut, 1), ev["to_state"], ev["reason"][:90])
                for ev in cluster.job(job_id)["events"]
            ]
            nodes = [(n["node"], n["state"], n["down"]) for n in cluster.get("/resources")["nodes"]]
            raise AssertionError(f"{e}; the job's events since the cut: {events}; nodes: {nodes}") from None
    if fault == "partition" and heal_after is None:
        time.sleep(hold_s)  # never healed, as far as the job is concerned: the old copy must stay stopped
        hosts.heal(index)
        healed.append(time.time())
    if healer is not None:
        healer.join()
    old_after_heal = read_stamps(stamps).get(1, [])  # late stamps from the old copy, if any
    # The node's raylet exits when it hears it was declared dead: start it again, as an
    # operator would (`gpuq up`), until the node is back in service.
    if node in cluster.down_nodes() or moved_at is not None:
        cluster.wait(lambda: node not in cluster.down_nodes() or _repair(cluster, node), 180, f"{node} back")
    stop.touch()
    final = cluster.wait(
        lambda: (j := cluster.job(job_id))["state"] in TERMINAL and j, 120, "the job's end", interval=0.5
    )
    times = read_stamps(stamps)
    old, new = times.get(1, []), times.get(2, [])
    completions = sum(1 for e in final["events"] if e["to_state"] == "completed")
    return {
        "fault": fault,
        "heal_after_s": heal_after,
        "node": node,
        "requeued": bool(new),
        "old_last_after_cut_s": round(max(old) - cut, 2) if old else None,
        "old_stamps_after_requeue": sum(1 for t in old_after_heal if new and t >= min(new)),
        "new_first_after_cut_s": round(min(new) - cut, 2) if new else None,
        "overlap_s": round(max(old) - min(new), 2) if old and new else None,
        "state": final["state"],
        "attempts": final["attempts"],
        "completions": completions,
    }


def _repair(cluster: HostsCluster, node: str) -> bool:
    """Repair once the node's old raylet is gone (Ray says so), then look again."""
    if node in cluster.down_nodes():
        nodes = cluster.get("/resources")["nodes"]
        state = next((n["state"] for n in nodes if n["node"] == node), None)
        if state == "down":  # fenced: its old jobs are certainly stopped; start the host again
            cluster.repair()
    return node not in cluster.down_nodes()


if __name__ == "__main__":
    sys.exit("import this module: tests/runtime/test_partition.py and scripts/bench_partition.py use it")
