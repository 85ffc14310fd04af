"""`gpuq up` / `gpuq down`: a local Ray cluster with the orchestrator on it.

It is over 400 lines: the one place that knows how gpuq starts Ray on one machine, in
each of its shapes (simulated nodes on this host, or as hosts of their own: hosts.py;
in-process for the tests and benchmarks), which must agree on ports, tokens and the
health check.

Without GPUs (a laptop, CI) the cluster is a head plus two *simulated* 8-GPU nodes,
`gmi-node-1` and `gmi-node-2`: worker raylets on this host that declare num_gpus=8,
the node label and the per-node resource, exactly as the real nodes are started by
cluster.yaml. With GPUs, the head itself is the one GPU node, named after the host.

Lean settings for small machines: no dashboard, one CPU slot per raylet (gpuq's own
actors reserve no CPU), a small object store. Each simulated raylet needs its own
agent and metrics ports to share the host.

Ray is gpuq's, not its users': whoever reaches Ray runs code as the account Ray runs
as. So (`ray_env`):
- Ray's token authentication is on (RAY_AUTH_MODE=token): the GCS, the raylets, the
  dashboard agents (whose job endpoint runs any command) and the runtime-env agents
  answer only calls bearing the token, which is in a 0600 file of the service account
  under GPUQ_HOME. Ray's processes and gpuq's know where it is; a job's clean
  environment does not, and its user cannot read it;
- Ray's temp dir (sockets, logs, session files, which Ray makes 0777) is inside a 0700
  folder of the service account (RAY_TMPDIR), so no user can reach any of it;
- Ray Client is off (raystart.py) unless the site sets `ray_client_port`.
Ray 2.60's gRPC servers listen on every interface and have no option to bind one;
every one of them checks the token. On the real cluster, keep Ray's ports to the
cluster network (cluster.yaml says how).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from orchestrator.core.config import Config
from orchestrator.core.lease import ray_health_check
from orchestrator.host.paths import gpuq_home, secure_home

HEAD_PORT = int(os.environ.get("GPUQ_RAY_PORT", "6380"))
SIMULATED_NODES = ("gmi-node-1", "gmi-node-2")
OBJECT_STORE_BYTES = 200 * 1024 * 1024
# gpuq's actors reserve no CPU, so a raylet's CPU count only sets how many Ray workers it
# may start at once (min(cores, num_cpus)); one would start runners one at a time.
WORKER_CPUS = os.cpu_count() or 2


# Ray declares a node dead after `failure_threshold` failed health checks from the GCS,
# `period` apart (Ray's defaults, 5 x 3 s, take about 15 s). A raylet declared dead exits
# with its workers when it hears of it, even if it was only cut off for a while; so Ray
# must not declare a node dead before the node lease (core/lease.py) has run out, or a
# short partition would kill jobs that gpuq meant to keep. `ray_health_check` follows the
# lease: with the default 20 s lease, a raylet that died is dead to Ray in about 11 s
# (its port refuses at once) and a host cut off in about 22 s. gpuq requeues their jobs
# at its own fence's end either way. cluster.yaml sets the same on the production head.
def ray_health_check_env(lease_s: float) -> dict[str, str]:
    """Ray's health-check settings as the environment of `ray start --head` (its GCS reads them)."""
    return {f"RAY_{k}": str(v) for k, v in ray_health_check(lease_s).items()}


# The tests' in-process cluster: they kill raylets, never cut a node off, so Ray may be quick.
TEST_LEASE_S = 4.0


def ray_bin() -> str:
    return str(Path(sys.executable).with_name("ray"))


def ray_env(home: Path | None = None) -> dict[str, str]:
    """The environment every gpuq process that starts or joins Ray runs with: token
    authentication on, with the service's token, and Ray's files in a private folder.
    Creates the token (0600) and the folder (0700) if they are missing."""
    home = home or gpuq_home()
    private = home / "run"
    private.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(private, 0o700)
    token = home / "ray-token"
    try:
        fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token), "RAY_TMPDIR": str(private)}


def use_ray_env(home: Path | None = None) -> None:
    """This process, and what it starts, use Ray as gpuq does (ray_env)."""
    os.environ.update(ray_env(home))
    if "ray" in sys.modules:  # Ray read RAY_AUTH_MODE when it was imported: have it read it again
        from ray._raylet import Config  # type: ignore[attr-defined]  # a compiled module

        Config.initialize("")


def address() -> str:
    return f"127.0.0.1:{HEAD_PORT}"


def state_file() -> Path:
    return gpuq_home() / "cluster.json"


def real_gpu_count() -> int:
    """GPUs NVML can see on this host (0 where there is no driver)."""
    try:
        import warnings

        with warnings.catch_warnings():  # pynvml warns that it is a shim over nvidia-ml-py
            warnings.simplefilter("ignore")
            import pynvml

        pynvml.nvmlInit()
        try:
            return pynvml.nvmlDeviceGetCount()
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        return 0


def _ray_start(*args: str, env: dict[str, str] | None = None) -> None:
    """`ray start` with Ray Client off (raystart.py)."""
    _run([sys.executable, "-m", "orchestrator.deploy.raystart", "start", *args], env)


def _run(args: list[str], env: dict[str, str] | None = None) -> None:
    done = subprocess.run(args, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:3])} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def start_ray(
    simulate: bool | None = None,
    client_port: int | None = None,
    lease_s: float = Config().node_lease_s,
    site: Config | None = None,
    separate: bool = False,
) -> dict:
    """Start the head and its GPU nodes; returns what was started. Ray Client only
    with `client_port` (the site's ray_client_port); Ray's health check follows the
    site's node lease (`lease_s`). `separate`: each simulated node a host of its own
    (hosts.py)."""
    if _port_open(HEAD_PORT):
        raise RuntimeError(
            f"something already listens on port {HEAD_PORT}: is gpuq up already? (gpuq down stops it)"
        )
    gpus = real_gpu_count()
    simulate = gpus == 0 if simulate is None else simulate
    common = [
        "--disable-usage-stats",
        "--include-dashboard=false",
        f"--object-store-memory={OBJECT_STORE_BYTES}",
        *([f"--ray-client-server-port={client_port}"] if client_port else []),
    ]
    health = ray_health_check_env(lease_s)  # read by the head's GCS
    nodes: dict[str, int] = {}
    head = address()
    if simulate and separate:
        from orchestrator.deploy import hosts

        if (why := hosts.available()) is not None:
            raise RuntimeError(why)
        hosts.make_bridge()
        head = f"{hosts.HEAD_IP}:{HEAD_PORT}"
        base = HEAD_PORT + 100  # this head's agents' ports, apart from any other Ray on the host
        _ray_start(
            "--head",
            f"--port={HEAD_PORT}",
            f"--node-ip-address={hosts.HEAD_IP}",
            "--num-cpus=1",
            "--num-gpus=0",
            f"--dashboard-agent-listen-port={base}",
            f"--dashboard-agent-grpc-port={base + 1}",
            f"--metrics-export-port={base + 2}",
            f"--runtime-env-agent-port={base + 3}",
            *common,
            env=health,
        )
        for name in SIMULATED_NODES:
            start_separate_node(name, head, site or Config())
            nodes[name] = 8
    elif simulate:
        _ray_start("--head", f"--port={HEAD_PORT}", "--num-cpus=1", "--num-gpus=0", *common, env=health)
        for name in SIMULATED_NODES:
            start_simulated_node(name)
            nodes[name] = 8
    else:
        name = socket.gethostname()
        _ray_start(
            "--head",
            f"--port={HEAD_PORT}",
            f"--num-gpus={gpus}",
            f"--resources={json.dumps({name: 1})}",
            f"--labels=gmi/node={name}",
            *common,
            env=health,
        )
        nodes[name] = gpus
    started = {
        "address": head,
        "simulated": simulate,
        "separate_hosts": bool(simulate and separate),
        "nodes": nodes,
        "started_at": time.time(),
    }
    state_file().parent.mkdir(parents=True, exist_ok=True)
    state_file().write_text(json.dumps(started, indent=2))
    return started


def start_simulated_node(name: str) -> None:
    """A worker raylet on this host that is the simulated 8-GPU node `name`."""
    base = 52000 + 10 * SIMULATED_NODES.index(name)  # each raylet on this host needs its own ports
    _ray_start(
        f"--address={address()}",
        f"--num-cpus={WORKER_CPUS}",
        "--num-gpus=8",
        f"--resources={json.dumps({name: 1})}",
        f"--labels=gmi/node={name}",
        f"--dashboard-agent-listen-port={base}",
        f"--dashboard-agent-grpc-port={base + 1}",
        f"--metrics-export-port={base + 2}",
        f"--runtime-env-agent-port={base + 3}",
        f"--object-store-memory={OBJECT_STORE_BYTES}",
        "--disable-usage-stats",
    )


def start_separate_node(name: str, head: str, site: Config) -> None:
    """The simulated 8-GPU node `name` as a host of its own (hosts.py)."""
    from orchestrator.deploy import hosts
    from orchestrator.host.siteconfig import data_dir, scratch_dir

    hosts.start_node(
        SIMULATED_NODES.index(name) + 1,
        gpuq_home() / "hosts" / name,
        [Path(data_dir(site)), Path(scratch_dir(site))],
        ray_env(),
        [
            sys.executable,
            "-m",
            "orchestrator.deploy.raystart",
            "start",
            f"--address={head}",
            f"--num-cpus={WORKER_CPUS}",
            "--num-gpus=8",
            f"--resources={json.dumps({name: 1})}",
            f"--labels=gmi/node={name}",
            f"--object-store-memory={OBJECT_STORE_BYTES}",
            "--disable-usage-stats",
        ],
    )


def repair(started: dict, site: Config | None = None) -> list[str]:
    """Start again the simulated nodes of a running local cluster that are gone (a killed
    raylet); returns their names. Running jobs on the other nodes are not touched."""
    from orchestrator.head.nodes import discover_nodes

    if not started.get("simulated"):
        return []
    alive = discover_nodes()
    missing = [name for name in started["nodes"] if name not in alive]
    for name in missing:
        if started.get("separate_hosts"):  # a host that lost its raylet is started afresh, like a reboot
            start_separate_node(name, started["address"], site or Config())
        else:
            start_simulated_node(name)
    return missing


def start_inprocess_cluster():
    """The same shape as `gpuq up` without GPUs — a head and the simulated 8-GPU nodes —
    started inside this process and connected to, for tests and benchmarks, with Ray's
    token and a private temp dir as `gpuq up` has them (in a fresh folder of its own:
    Unix socket paths under it must stay short)."""
    import tempfile

    use_ray_env(Path(tempfile.mkdtemp(prefix="gpuq-ray-")))
    os.environ.pop("RAY_ADDRESS", None)
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args=dict(
            num_cpus=1, num_gpus=0, include_dashboard=False, _system_config=ray_health_check(TEST_LEASE_S)
        ),
    )
    for name in SIMULATED_NODES:
        add_simulated_node(cluster, name)
    ray.init(address=cluster.address, namespace="gpuq", log_to_driver=False, logging_level=logging.ERROR)
    cluster.wait_for_nodes()
    return cluster


def add_simulated_node(cluster, name: str):
    """One simulated 8-GPU node in an in-process cluster (a lost one, started again)."""
    from orchestrator.head.nodes import NODE_LABEL

    return cluster.add_node(num_cpus=WORKER_CPUS, num_gpus=8, resources={name: 1}, labels={NODE_LABEL: name})


def connect(addr: str | None = None) -> None:
    import ray

    if not ray.is_initialized():
        ray.init(
            address=addr or address(), namespace="gpuq", log_to_driver=False, logging_level=logging.ERROR
        )


def wait_for_nodes(expected: int, timeout: float = 60) -> None:
    import ray

    from orchestrator.head.nodes import discover_nodes

    deadline = time.monotonic() + timeout
    while len(discover_nodes()) < expected:
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"only {len(discover_nodes())} of {expected} GPU nodes joined; see `ray status`"
            )
        time.sleep(0.5)
    assert ray.is_initialized()


def up(
    config: dict | None = None,
    simulate: bool | None = None,
    attach: str | None = None,
    separate: bool = False,
    link_dir: Path | None = None,
) -> dict:
    """Start Ray (unless `attach` names a running cluster) and the orchestrator on it;
    returns a summary for the user. `separate`: simulated nodes as hosts of their own;
    `link_dir`: where to link the commands for every account (deploy/commands.py)."""
    from orchestrator.deploy.rollout import ensure_orchestrator
    from orchestrator.head.nodes import discover_nodes

    secure_home()
    use_ray_env()
    site = Config.model_validate(config or {})
    if attach:
        connect(attach)
        started: dict[str, Any] = {
            "address": attach,
            "simulated": False,
            "nodes": {n: i.gpus for n, i in discover_nodes().items()},
        }
    else:
        if _port_open(HEAD_PORT) and state_file().exists():  # up already: repair and upgrade, touch no job
            started = json.loads(state_file().read_text())
            connect(started["address"])
            started["repaired"] = repair(started, site)
        else:
            started = start_ray(simulate, site.ray_client_port, site.node_lease_s, site, separate)
            connect(started["address"])
        wait_for_nodes(len(started["nodes"]))
    started["orchestrator"] = ensure_orchestrator(config)
    from orchestrator.host.accounts import install_mode
    from serve_app.admission import KEYS as ADMISSION_KEYS
    from serve_app.api import deploy
    from serve_app.auth import ensure_admin_token, tokens_path

    started["admin_token_file"] = str(ensure_admin_token())
    started["api"] = deploy(
        site.api_host,
        site.api_port,
        str(tokens_path()),
        site.api_auth_reads,
        {
            "unix_users": site.unix_users,
            "allow_shared_account": site.allow_shared_account,
            "allowed_system_accounts": site.allowed_system_accounts,
            "max_package_bytes": site.max_package_bytes,
            "max_package_unpacked_bytes": site.max_package_unpacked_bytes,
            "ray_jobs_api_ray": site.ray_jobs_api_ray,
            **{k: getattr(site, k) for k in ADMISSION_KEYS},
        },
    )
    started["install"] = install_mode()
    from orchestrator.deploy import commands

    started["commands"] = commands.offer(link_dir)
    from orchestrator.head.jobpython import resolve
    from orchestrator.node import cgroups

    found = resolve(site.job_python, site.job_path)
    started["job_python"] = {"path": found.path, "ray_ready": found.ray_ready, "why_not": found.why_not}
    started["containment"] = cgroups.find().describe()  # this node's; each node's is in `gpuq status`
    started["ray_token_file"] = os.environ["RAY_AUTH_TOKEN_PATH"]
    started["ray_client"] = site.ray_client_port
    return started


def api_url() -> str | None:
    """Where the API of the cluster `gpuq up` started listens, if it is up."""
    if not state_file().exists():
        return None
    try:
        return json.loads(state_file().read_text()).get("api")
    except ValueError:
        return None


def is_up() -> bool:
    return _port_open(HEAD_PORT) or state_file().exists()


def down() -> bool:
    """Stop the orchestrator and the local cluster. False if nothing was running."""
    if not _port_open(HEAD_PORT) and not state_file().exists():
        return False
    try:
        started = json.loads(state_file().read_text())
    except (OSError, ValueError):
        started = {}
    from orchestrator.deploy import hosts

    if started.get("separate_hosts") or hosts.bridge_exists():  # a start that failed half-way too
        for index in range(1, len(SIMULATED_NODES) + 1):
            hosts.remove_host(index)
        hosts.stop_head(ray_env()["RAY_TMPDIR"])
        hosts.remove_bridge()
    else:
        # `ray stop` ends every Ray instance this user started on this host; gpuq up starts one.
        subprocess.run([ray_bin(), "stop"], capture_output=True, env={**os.environ, **ray_env()})
    state_file().unlink(missing_ok=True)
    return True
