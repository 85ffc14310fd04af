"""A Ray job's private Ray cluster, one node per rank, run as the job's user.

    <job python> -c RUN <gpuq root> head   --ports LO … -- CMD...   (rank 0: head, then CMD as the driver)
    <job python> -c RUN <gpuq root> worker --ports LO … --address IP:PORT   (other ranks)

The supervisor starts this in place of a Ray job's command (`--ray`), after it has
switched to the job's user: so the cluster is the user's own, as a RayCluster of
KubeRay is its RayJob's. Each node declares exactly the GPUs of its bundle (Ray takes
their indices from CUDA_VISIBLE_DEVICES, which the runner set), the CPUs and memory the
runner gave it, and its ports from the block the runner chose (the node's range, at
the job's lowest GPU index: no other job on the node has that GPU, so none has the
block). Its token (RAY_AUTH_TOKEN, in the environment, never on a command line) is
made for this attempt: gpuq's cluster and every other job's refuse it, and it opens
nobody else's. Ray's dashboard and autoscaler are not started, nor Ray Client; its
temp dir is in the user's private folder on the node, and its logs are copied to the
job's folder (`ray-logs/`) when the job ends.

The head waits until every rank's node has joined, then runs the user's command with
RAY_ADDRESS set, so a bare `ray.init()` joins. Its exit is the job's. Every process of
the cluster is this process's descendant (and it is their subreaper, so a daemon that
leaves its parent stays in reach) and is stopped with it: TERM, then KILL, when the driver
ends, and at a TERM from the supervisor (cancel, time limit, preemption). The
supervisor does the same for whatever is left when the job ends, so a cluster
outlives nothing, whatever kills this.

Standard library and Ray only (Ray's Node to start, its GcsClient to wait): it runs in
the job's Python, which has the cluster's Ray but may not have gpuq's other
dependencies. Ray's Node is what `ray start` itself calls; pyproject.toml pins Ray's
minor version, and the tests start real clusters with it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from orchestrator.node import procs

# How this file is run (a path given to the job's Python would put this folder, and its
# modules named like the standard library's, first on sys.path).
RUN = (
    "import sys; sys.path.insert(0, sys.argv[1]); del sys.argv[1]; "
    "from orchestrator.node.raycluster import main; sys.exit(main())"
)
ROOT = str(Path(__file__).resolve().parents[2])
JOIN_TIMEOUT_S = 120.0  # every node of a gang joins in this, or the job fails
STOP_GRACE_S = 5.0
# Ray puts sockets at <temp>/session_<date>_<time>_<usec>_<pid>/sockets/plasma_store, and a
# socket's path must fit in 107 bytes: 43 for <temp> leaves room for a 7-digit pid.
MAX_TEMP = 43


def ports(lo: int) -> dict[str, int]:
    """A node's ports in its block (`lo`: the block's first port; `--block` ports long,
    the site's ray_job_ports_per_gpu): fixed ones first, the rest for Ray's workers."""
    return {
        "port": lo,
        "node-manager-port": lo + 1,
        "object-manager-port": lo + 2,
        "metrics-export-port": lo + 3,
        "dashboard-agent-listen-port": lo + 4,
        "dashboard-agent-grpc-port": lo + 5,
        "runtime-env-agent-port": lo + 6,
        "min-worker-port": lo + 10,
    }


def _node_class():
    import ray._private.node

    class Node(ray._private.node.Node):
        def start_api_server(self, *, include_dashboard, raise_on_failure):  # noqa: ARG002
            """Not started: with the dashboard off it still starts a process (~130 MiB,
            ~0.4 s of a start here) for Ray's state and Jobs APIs, which a job's own
            cluster does not serve (its jobs go through gpuq)."""

    return Node


def start_node(args, head: bool):
    """This rank's Ray node, started in this process's name as `ray start` (not
    `--block`) would: Ray's own Node with Ray's own parameters. Not the CLI: importing it
    costs ~1.3 s of CPU, a third of a cluster's start on this machine (docs/BENCHMARKS.md).
    The dashboard and its API server, the autoscaler's monitor (a fixed cluster) and Ray
    Client are not started; Ray's log monitor is, so that tasks' prints reach the driver."""
    from ray._private.authentication.authentication_token_setup import ensure_token_if_auth_enabled
    from ray._private.parameter import RayParams

    p = ports(args.ports)
    params = RayParams(
        node_ip_address=args.ip,
        node_manager_port=p["node-manager-port"],
        object_manager_port=p["object-manager-port"],
        metrics_export_port=p["metrics-export-port"],
        dashboard_agent_listen_port=p["dashboard-agent-listen-port"],
        metrics_agent_port=p["dashboard-agent-grpc-port"],
        runtime_env_agent_port=p["runtime-env-agent-port"],
        min_worker_port=p["min-worker-port"],
        max_worker_port=args.ports + args.block - 1,
        num_cpus=args.cpus,
        num_gpus=args.gpus,
        memory=args.memory,
        object_store_memory=args.object_store,
        temp_dir=args.temp,
        include_dashboard=False if head else None,
        no_monitor=True,
        include_log_monitor=True,  # type: ignore[arg-type]  # Ray annotates it str, reads it as a flag
    )
    if head:
        params.gcs_server_port = p["port"]
    else:
        params.gcs_address = args.address
    ensure_token_if_auth_enabled(None, create_token_if_missing=False)
    return _node_class()(params, head=head, shutdown_at_exit=False, spawn_reaper=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="gpuq-raycluster")
    ap.add_argument("role", choices=("head", "worker"))
    ap.add_argument("--ports", type=int, required=True, help="the first port of this node's block")
    ap.add_argument("--block", type=int, required=True, help="ports in the block")
    ap.add_argument("--gpus", type=int, required=True)
    ap.add_argument("--cpus", type=int, required=True)
    ap.add_argument("--memory", type=int, required=True)
    ap.add_argument("--object-store", type=int, required=True)
    ap.add_argument(
        "--temp", required=True, help="Ray's temp dir (short: Ray's socket paths must fit 107 bytes)"
    )
    ap.add_argument("--logs", required=True, help="where Ray's logs are copied when the job ends")
    ap.add_argument("--ip", required=True)
    ap.add_argument("--nodes", type=int, default=1)
    ap.add_argument("--address", help="the head's IP:PORT (workers)")
    argv = sys.argv[1:] if argv is None else argv
    # The driver's command follows "--" (argparse's REMAINDER after a positional would take
    # the options too).
    cut = argv.index("--") if "--" in argv else len(argv)
    args, command = ap.parse_args(argv[:cut]), argv[cut + 1 :]
    procs.become_subreaper()
    stop = {"signal": None}

    def on_signal(signum, frame):  # noqa: ARG001
        stop["signal"] = stop["signal"] or signum

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    if len(args.temp) > MAX_TEMP:
        _say(
            f"Ray's temp dir {args.temp} is too long for Ray's socket paths (at most {MAX_TEMP} characters): "
            "the site's scratch_dir must be shorter"
        )
        return 1
    Path(args.temp).mkdir(parents=True, mode=0o700, exist_ok=True)
    try:
        if args.role == "head":
            return _head(args, command, stop)
        return _worker(args, stop)
    finally:
        procs.stop_descendants(STOP_GRACE_S)
        _keep_logs(Path(args.temp), Path(args.logs))
        shutil.rmtree(args.temp, ignore_errors=True)


def _say(line: str) -> None:
    print(f"[gpuq] {line}", flush=True)


def _started(args, head: bool) -> bool:
    """Start this rank's Ray node; False (and Ray's words said) if it did not start."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    # Ray starts a Python worker per CPU when the first driver connects, and holds the
    # driver's registration until they are up: on a GPU node's share of 100+ CPUs that is
    # 100+ processes at every job's start, most never used. Workers start on demand
    # instead; a job that wants them sets RAY_prestart_worker_first_driver=1 in its env.
    os.environ.setdefault("RAY_prestart_worker_first_driver", "0")
    log = Path(args.temp) / "ray-start.log"
    try:
        with open(log, "ab") as out:  # Ray's own start-up words, kept out of the job's log
            saved = os.dup(1), os.dup(2)
            os.dup2(out.fileno(), 1)
            os.dup2(out.fileno(), 2)
            try:
                start_node(args, head)
            finally:
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
                os.close(saved[0])
                os.close(saved[1])
    except Exception as e:  # noqa: BLE001 - Ray's error, said in the job's log
        with open(log, "a") as out:
            out.write(f"{type(e).__name__}: {e}\n")
        return False
    return True


def _head(args, command: list[str], stop: dict) -> int:
    address = f"{args.ip}:{ports(args.ports)['port']}"
    if not _started(args, head=True):
        return _failed(args, "the job's Ray cluster did not start")
    if args.nodes > 1 and not _joined(address, args.nodes, stop):
        return _failed(args, f"not every node of the job's Ray cluster joined within {JOIN_TIMEOUT_S:.0f} s")
    if stop["signal"]:
        return 128 + stop["signal"]
    _say(
        f"a Ray cluster of its own for this job: {args.nodes} node(s), head {address}, {args.gpus} GPU(s) "
        "here; "
        "ray.init() joins it"
    )
    driver = subprocess.Popen(command, env={**os.environ, "RAY_ADDRESS": address})
    code = _wait(driver, stop)
    return 128 - code if code < 0 else code


def _worker(args, stop: dict) -> int:
    host, _, port = args.address.rpartition(":")
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    while not _listening(host, int(port)):
        if stop["signal"]:
            return 128 + stop["signal"]
        if time.monotonic() > deadline:
            return _failed(args, f"the head of the job's Ray cluster at {args.address} never answered")
        time.sleep(0.1)
    if not _started(args, head=False):
        return _failed(args, "this Ray worker node did not start")
    _say(f"a Ray worker node of this job's cluster: {args.gpus} GPU(s), joined {args.address}")
    while not stop["signal"]:  # until the job ends (gpuq stops the workers when the driver ends)
        time.sleep(0.2)
    return 0


def _wait(proc: subprocess.Popen, stop: dict) -> int:
    """The process's exit; a stop signal is passed on to it once."""
    sent = False
    while True:
        try:
            return proc.wait(timeout=0.1)
        except subprocess.TimeoutExpired:
            pass
        if stop["signal"] and not sent:
            sent = True
            try:
                proc.send_signal(stop["signal"])
            except ProcessLookupError:
                pass


def _joined(address: str, nodes: int, stop: dict) -> bool:
    from ray._raylet import GcsClient  # type: ignore[attr-defined]  # a compiled module

    client = GcsClient(address=address)
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    while time.monotonic() < deadline and not stop["signal"]:
        try:
            alive = sum(1 for n in client.get_all_node_info().values() if n.state == 0)
        except Exception:  # noqa: BLE001 - the GCS is still starting: ask again
            alive = 0
        if alive >= nodes:
            return True
        time.sleep(0.2)
    return False


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _failed(args, why: str) -> int:
    """Say why, with the tail of Ray's own words."""
    said = ""
    try:
        said = (Path(args.temp) / "ray-start.log").read_text(errors="replace")[-3000:]
    except OSError:
        pass
    _say(f"{why}; Ray said:\n{said}")
    return 1


def _keep_logs(temp: Path, logs: Path) -> None:
    """Ray's logs, for the job's owner, in the job's folder on the node."""
    try:
        session = (temp / "session_latest").resolve(strict=True)
        shutil.copytree(session / "logs", logs, symlinks=True, dirs_exist_ok=True)
        if (temp / "ray-start.log").exists():
            shutil.copy2(temp / "ray-start.log", logs / "ray-start.log")
    except OSError:
        pass


if __name__ == "__main__":
    sys.exit(main())
