"""The processes of gpuq's jobs on this machine: found by the tags in their environment,
and a job's whole tree, found by descent.

Every job process inherits GPUQ_CLUSTER and GPUQ_JOB_ID from its supervisor (and
GPUQ_NODE, CUDA_VISIBLE_DEVICES): the node agent reaps by them (agent.py) and the
simulated telemetry reads which GPUs a process was given (telemetry.py).
"""

from __future__ import annotations

import ctypes
import os
import signal
import time

KEPT = (b"GPUQ_", b"CUDA_VISIBLE_DEVICES=")
PR_SET_CHILD_SUBREAPER = 36


def tagged(cluster_id: str) -> dict[int, dict[str, str]]:
    """pid -> its GPUQ_* and CUDA_VISIBLE_DEVICES variables, for every process tagged
    with this cluster and a job id."""
    found: dict[int, dict[str, str]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                raw = f.read().split(b"\0")
        except OSError:
            continue
        env = dict(
            e.decode("utf-8", "replace").split("=", 1) for e in raw if e.startswith(KEPT) and b"=" in e
        )
        if env.get("GPUQ_CLUSTER") == cluster_id and "GPUQ_JOB_ID" in env:
            found[int(entry.name)] = env
    return found


def become_subreaper() -> None:
    """Orphans of this process's descendants become its children, not init's: a daemon
    a job starts (`ray start` leaves Ray's processes so) stays in reach of its sweep."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1)
    except (OSError, AttributeError):
        pass  # not Linux: the node agent's reaper (by tags) is the backstop


def descendants() -> list[int]:
    """This process's descendants, from /proc (its orphans are its own: a subreaper)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [os.getpid()]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def has_children() -> bool:
    """Whether this process has a child (exited or not), without reaping it: for a
    subreaper, no child means no descendant at all, so a plain job's end costs no scan."""
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    return True


def stop_descendants(grace: float) -> None:
    """TERM every descendant, KILL what is left after `grace`, and reap them."""
    if not has_children():
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 1.0)):
        left = descendants()
        for pid in left:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + wait
        while left and time.monotonic() < deadline:
            _reap()
            left = [p for p in descendants() if not _zombie(p)]
            if left:
                time.sleep(0.05)
        _reap()
        if not left:
            return


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return True
    return stat[stat.rindex(b")") + 2 : stat.rindex(b")") + 3] == b"Z"
