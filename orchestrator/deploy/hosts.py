"""Simulated GPU nodes as separate hosts: `gpuq up --hosts`, and the partition tests.

Each simulated node runs in a network namespace of its own, with its own address on a
bridge to the head, and its own mounts of gpuq's data dir, scratch dir, Ray's temp dir
and /tmp. Nothing is shared between head and nodes by accident: a node's job logs,
packages and Ray sockets are its own, as on a separate machine; the checkout, the venv
and the accounts are shared, as software and accounts are on a real cluster.

    bridge gpuq-br0, 10.77.0.1/24          the head (on this host)
      |- veth gq1h <-> eth0 in gpuq-gmi-node-1, 10.77.0.11
      '- veth gq2h <-> eth0 in gpuq-gmi-node-2, 10.77.0.12

A partition switches a node's bridge port off (`bridge link set dev gq1h state 0`):
packets drop silently both ways, as a cut cable or a dead switch port does, and a
connect times out instead of being refused. Taking the link down would also remove the
route, which a real partition does not. `heal` switches it back to forwarding.

Needs root, iproute2 and util-linux (`ip`, `bridge`, `unshare`, `mount`).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

BRIDGE = "gpuq-br0"
SUBNET = "10.77.0"
HEAD_IP = f"{SUBNET}.1"
# The bridge port off: no packet in or out. 3 is forwarding.
DISABLED, FORWARDING = 0, 3


def namespace(index: int) -> str:
    return f"gpuq-n{index}"


def node_ip(index: int) -> str:
    return f"{SUBNET}.{10 + index}"


def host_end(index: int) -> str:
    return f"gq{index}h"


def available() -> str | None:
    """None where separate hosts can be made here, else why not."""
    if os.geteuid() != 0:
        return "separate hosts need root (network namespaces, mounts)"
    for tool in ("ip", "bridge", "unshare", "mount"):
        if shutil.which(tool) is None:
            return f"separate hosts need `{tool}` (apt-get install iproute2 util-linux)"
    return None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done


def bridge_exists() -> bool:
    return shutil.which("ip") is not None and _ip("link", "show", BRIDGE, check=False).returncode == 0


def make_bridge() -> None:
    if _ip("link", "show", BRIDGE, check=False).returncode != 0:
        _ip("link", "add", BRIDGE, "type", "bridge")
        _ip("addr", "add", f"{HEAD_IP}/24", "dev", BRIDGE)
    _ip("link", "set", BRIDGE, "up")


def make_host(index: int) -> None:
    """The node's namespace, wired to the bridge (made fresh: an old one is removed)."""
    remove_host(index)
    ns, host, inner = namespace(index), host_end(index), f"gq{index}n"
    _ip("netns", "add", ns)
    _ip("link", "add", host, "type", "veth", "peer", "name", inner)
    _ip("link", "set", inner, "netns", ns)
    _ip("link", "set", host, "master", BRIDGE)
    _ip("link", "set", host, "up")
    _ip("-n", ns, "link", "set", "lo", "up")
    _ip("-n", ns, "link", "set", inner, "name", "eth0")
    _ip("-n", ns, "addr", "add", f"{node_ip(index)}/24", "dev", "eth0")
    _ip("-n", ns, "link", "set", "eth0", "up")
    _ip("-n", ns, "route", "add", "default", "via", HEAD_IP)


def pids(index: int) -> list[int]:
    done = _ip("netns", "pids", namespace(index), check=False)
    return [int(p) for p in done.stdout.split()] if done.returncode == 0 else []


def power_off(index: int) -> None:
    """Every process of the host killed at once, as a power cut would."""
    for pid in pids(index):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 10
    while pids(index) and time.monotonic() < deadline:
        time.sleep(0.05)


def remove_host(index: int) -> None:
    power_off(index)
    _ip("link", "del", host_end(index), check=False)  # and so its peer, wherever that is
    _ip("netns", "del", namespace(index), check=False)


def remove_bridge() -> None:
    _ip("link", "del", BRIDGE, check=False)


def partition(index: int) -> None:
    subprocess.run(["bridge", "link", "set", "dev", host_end(index), "state", str(DISABLED)], check=True)


def heal(index: int) -> None:
    subprocess.run(["bridge", "link", "set", "dev", host_end(index), "state", str(FORWARDING)], check=True)


def run_on(index: int, argv: list[str], private: dict[Path, Path], env: dict[str, str]) -> None:
    """Run `argv` on host `index`: in its network namespace, with a process namespace of
    its own (its /proc shows its own processes only, so no reaper of one node sees
    another's) and a mount namespace where /tmp is a fresh tmpfs and each folder of
    `private` (a path of this host) is the node's own folder (bind-mounted over it).
    The processes it leaves (a raylet) keep that view. `nsenter`, not `ip netns exec`,
    which would remount /sys and hide the cgroup hierarchies jobs are contained in."""
    pairs = [f"{src}={dst}" for dst, src in private.items()]
    for src in private.values():
        src.mkdir(parents=True, exist_ok=True, mode=0o700)
    proc = subprocess.Popen(
        [
            "nsenter",
            f"--net=/run/netns/{namespace(index)}",
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--pid",
            "--fork",
            "--mount-proc",
            "--",
            sys.executable,
            "-m",
            "orchestrator.deploy.hosts",
            *pairs,
            "--",
            *argv,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        env={**os.environ, **env},
        start_new_session=True,
    )
    assert proc.stdout is not None
    line, said = "", []  # until the init says `argv` ended well (what argv started may hold the pipe open)
    for line in proc.stdout:
        if line == STARTED:
            break
        said.append(line)
    proc.stdout.close()
    if line != STARTED:
        proc.wait()
        raise RuntimeError(f"starting on {namespace(index)} failed:\n{''.join(said)[-3000:]}")


def start_node(
    index: int, disk: Path, folders: list[Path], env: dict[str, str], ray_start: list[str]
) -> None:
    """Host `index` made afresh (as after a reboot) and `ray start` run on it
    (`ray_start`, to which its address is added). Its own: `folders` (gpuq's data and
    scratch dirs) and Ray's temp dir (env's RAY_TMPDIR), kept under `disk` (its disk,
    which outlives a power cut), and a fresh /tmp."""
    make_host(index)
    private = {folder: disk / f"{i}-{folder.name}" for i, folder in enumerate(folders)}
    private[Path(env["RAY_TMPDIR"])] = disk / "ray-run"
    for folder in private.values():  # as a node's own: users reach their job folders
        folder.mkdir(parents=True, exist_ok=True)
    for folder in folders:
        os.chmod(private[folder], 0o755)
    run_on(index, [*ray_start, f"--node-ip-address={node_ip(index)}"], private, env)


def stop_head(ray_tmpdir: str) -> None:
    """End this cluster's Ray processes on this host, found by their RAY_TMPDIR: unlike
    `ray stop`, no other Ray instance on the host is touched."""
    mark = f"RAY_TMPDIR={ray_tmpdir}".encode()
    ours = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if mark in (entry / "environ").read_bytes().split(b"\0"):
                ours.append(int(entry.name))
        except OSError:
            continue
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in ours:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        time.sleep(1 if sig == signal.SIGTERM else 0)


STARTED = "host started\n"


def _enter(args: list[str]) -> int:
    """The host's init (pid 1 of its process namespace, whose end would end every process
    of the host): its own /tmp and folders, `argv` run to its end (`ray start`, which
    leaves the raylet running), then it reaps orphans until the host is powered off."""
    split = args.index("--")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=1777", "tmpfs", "/tmp"], check=True)
    for pair in args[:split]:
        src, dst = pair.split("=", 1)
        Path(dst).mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "--bind", src, dst], check=True)
    # Its output to a file, not to the caller's pipe, which the daemons it starts would hold.
    log = open("/tmp/gpuq-host-start.log", "w")  # noqa: SIM115  # the host's own /tmp
    done = subprocess.run(args[split + 1 :], stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        log.close()
        sys.stdout.write(open("/tmp/gpuq-host-start.log").read()[-3000:])  # noqa: SIM115
        return done.returncode
    sys.stdout.write(STARTED)
    sys.stdout.flush()
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    while True:
        try:
            os.wait()
        except ChildProcessError:
            time.sleep(1)


if __name__ == "__main__":
    sys.exit(_enter(sys.argv[1:]))
