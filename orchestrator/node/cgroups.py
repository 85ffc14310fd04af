"""A cgroup per job rank: every process of the job found, limited and ended through it.

A job's processes can leave its process group (`setsid`), its process tree (a double
fork) and its tags (a cleared environment); none of them can leave its cgroup, since
moving a process between cgroups takes root. So the supervisor (root, before the switch
to the user) puts the command in a cgroup of its own, `gpuq/<cluster>/<job>.<attempt>.<rank>`:
- membership and kill use cgroup v2 where it is mounted: `cgroup.kill` ends the whole
  cgroup at once, and `cgroup.freeze` holds it still while a TERM goes to each member
  (no pid read from `cgroup.procs` can exit and be reused before its signal);
- limits use whichever controllers exist: v2's `memory.max` and `cpu.max` where the v2
  hierarchy has them (current distributions), else the v1 `memory` and `cpu`
  hierarchies beside it (a hybrid host, such as the one gpuq is developed on).

Nothing here assumes where a hierarchy is mounted: the mounts are read from
/proc/self/mounts. v1 cgroups are made under this process's own cgroup there, so a
job stays inside any limit the host put on gpuq itself; v2 ones under the hierarchy's
root, the one place a process-free parent with controllers is allowed.

Where no cgroup can be made (not root, no hierarchy, a read-only mount), `find()` says
why and gpuq falls back to the supervisor's sweep of its descendants and the node
agent's reaper by tags, and says so in `gpuq up` and `gpuq status`.

Standard library only: the supervisor imports it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

TOP = "gpuq"
CPU_PERIOD_US = 100_000


@dataclass(frozen=True)
class Containment:
    """What this node can do: `v2` is the hierarchy for membership (None: none), and
    `limits` maps each limit (memory, cpu) to the cgroup folder its children go under."""

    v2: Path | None = None
    limits: dict[str, Path] = field(default_factory=dict)
    mounts: dict[str, Path] = field(default_factory=dict)  # '' (v2), memory, cpu -> where that hierarchy is
    why_not: str = ""

    @property
    def usable(self) -> bool:
        return self.v2 is not None

    def as_sent(self) -> dict:
        """As the runner sends it to a supervisor (JSON): found once per runner, not per job."""
        return {
            "v2": str(self.v2) if self.v2 else None,
            "limits": {k: str(v) for k, v in self.limits.items()},
            "mounts": {k: str(v) for k, v in self.mounts.items()},
            "why_not": self.why_not,
        }

    @classmethod
    def from_sent(cls, sent: dict) -> Containment:
        return cls(
            Path(sent["v2"]) if sent.get("v2") else None,
            {k: Path(v) for k, v in sent["limits"].items()},
            {k: Path(v) for k, v in sent["mounts"].items()},
            sent.get("why_not", ""),
        )

    def describe(self) -> str:
        """'cgroup v2; limits: memory, cpu', or the fallback and why."""
        if not self.usable:
            return f"process tree only (no cgroup: {self.why_not})"
        return f"cgroup v2; limits: {', '.join(sorted(self.limits)) or 'none (no controllers)'}"


def _mounts() -> list[tuple[str, str, set[str]]]:
    out = []
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 4 and parts[2] in ("cgroup", "cgroup2"):
                out.append((parts[1].replace("\\040", " "), parts[2], set(parts[3].split(","))))
    return out


def _own_paths() -> dict[str, str]:
    """Controller (or '' for v2) -> this process's cgroup path in that hierarchy."""
    out = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, names, path = line.rstrip("\n").split(":", 2)
            for name in names.split(",") if names else [""]:
                out[name] = path
    return out


def find() -> Containment:
    """The hierarchies this node offers gpuq's jobs, each tried by making gpuq's folder."""
    try:
        table, own = _mounts(), _own_paths()
    except OSError as e:
        return Containment(why_not=f"cannot read the cgroup mounts: {e}")
    v2 = next((Path(m) for m, kind, _ in table if kind == "cgroup2"), None)
    if v2 is None:
        return Containment(why_not="no cgroup v2 hierarchy is mounted")
    top = v2 / TOP
    try:
        top.mkdir(exist_ok=True)
    except OSError as e:
        return Containment(why_not=f"cannot make {top}: {e.strerror}")
    limits: dict[str, Path] = {}
    mounts = {"": v2}
    offered = set(_read(v2 / "cgroup.controllers").split())
    for name in ("memory", "cpu"):
        if name in offered and _enable(v2, name) and _enable(top, name):
            limits[name] = top
    for mount, kind, options in table:
        for name in ("memory", "cpu"):
            if kind == "cgroup" and name in options and name not in limits:
                base = Path(mount) / own.get(name, "/").lstrip("/") / TOP
                with contextlib.suppress(OSError):
                    base.mkdir(exist_ok=True)
                    limits[name], mounts[name] = base, Path(mount)
    return Containment(v2=top, limits=limits, mounts=mounts)


def _enable(folder: Path, controller: str) -> bool:
    if controller in _read(folder / "cgroup.subtree_control").split():
        return True
    try:
        (folder / "cgroup.subtree_control").write_text(f"+{controller}")
        return True
    except OSError:
        return False


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def scope(cluster: str, node: str) -> str:
    """The folder of one node's jobs of one cluster. The node is named so that nodes
    sharing a cgroup hierarchy (simulated hosts on one machine) never sweep each
    other's jobs."""
    return f"{cluster}.{node}"


def rank_name(cluster: str, job: str, attempt: int, rank: int) -> str:
    return f"{cluster}/{job}.{attempt}.{rank}"


class JobCgroup:
    """One rank's cgroup, made by root with its limits (memory in bytes, cpus as a
    number of CPUs: 1.5 is one and a half CPUs' time)."""

    def __init__(self, found: Containment, name: str, memory: int | None = None, cpus: float | None = None):
        if found.v2 is None:  # callers check found.usable first
            raise ValueError("no cgroup v2 hierarchy on this node")
        v2 = found.v2
        self.found, self.name, self.memory, self.cpus = found, name, memory, cpus
        self.path = v2 / name
        self.homes = {self.path: ""}  # each folder -> its hierarchy (v2 first: membership)
        for limit, base in found.limits.items():
            if base != v2 and base / name not in self.homes:
                self.homes[base / name] = limit
        self.folders = list(self.homes)
        for folder in self.folders:
            folder.mkdir(parents=True, exist_ok=True)
        for limit in ("memory", "cpu"):  # v2's controllers reach the rank through its cluster's folder
            if found.limits.get(limit) == v2:
                _enable(v2 / name.split("/")[0], limit)
        self.enforced = self._limit()

    def _limit(self) -> list[str]:
        """Write the limits; the ones now enforced."""
        done = []
        if self.memory and "memory" in self.found.limits:
            folder = self.found.limits["memory"] / self.name
            if self.found.limits["memory"] == self.found.v2:
                (folder / "memory.max").write_text(str(self.memory))
                with contextlib.suppress(OSError):  # no swapping past the limit either
                    (folder / "memory.swap.max").write_text("0")
            else:
                (folder / "memory.limit_in_bytes").write_text(str(self.memory))
                with contextlib.suppress(OSError):
                    (folder / "memory.memsw.limit_in_bytes").write_text(str(self.memory))
            done.append("memory")
        if self.cpus and "cpu" in self.found.limits:
            folder = self.found.limits["cpu"] / self.name
            quota = max(1000, int(self.cpus * CPU_PERIOD_US))
            if self.found.limits["cpu"] == self.found.v2:
                (folder / "cpu.max").write_text(f"{quota} {CPU_PERIOD_US}")
            else:
                (folder / "cpu.cfs_period_us").write_text(str(CPU_PERIOD_US))
                (folder / "cpu.cfs_quota_us").write_text(str(quota))
            done.append("cpu")
        return done

    def join(self, pid: int = 0) -> None:
        """Put a process (0: this one) in the job's cgroups; root only."""
        for folder in self.folders:
            (folder / "cgroup.procs").write_text(str(pid or os.getpid()))

    @contextlib.contextmanager
    def entered(self):
        """This process inside the job's cgroups while it forks the job's command, back in
        its own after: what it forks meanwhile is the job's, and stays so. Popen returns
        once the child has exec'd, so the supervisor is inside for about a millisecond,
        never while the job could reach its memory limit."""
        own = _own_paths()
        back = [self.found.mounts[key] / own.get(key, "/").lstrip("/") for key in self.homes.values()]
        self.join()
        try:
            yield
        finally:
            for home in back:
                with contextlib.suppress(OSError):
                    (home / "cgroup.procs").write_text(str(os.getpid()))

    def pids(self) -> list[int]:
        text = _read(self.path / "cgroup.procs")
        return [int(p) for p in text.split()]

    def populated(self) -> bool:
        events = _read(self.path / "cgroup.events")
        if events:
            return "populated 1" in events
        return bool(self.pids())

    def signal(self, sig: int) -> None:
        """`sig` to every process in the cgroup, held frozen meanwhile so none is missed
        or mistaken for a newcomer with a reused pid."""
        if sig == signal.SIGKILL:
            return self.kill()
        frozen = self._freeze("1")
        try:
            for pid in self.pids():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
        finally:
            if frozen:
                self._freeze("0")

    def kill(self) -> None:
        """SIGKILL to the whole cgroup, its sub-cgroups included."""
        try:
            (self.path / "cgroup.kill").write_text("1")
            return
        except OSError:
            pass  # a kernel before 5.14: kill while frozen
        frozen = self._freeze("1")
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if frozen:
            self._freeze("0")

    def _freeze(self, state: str) -> bool:
        try:
            (self.path / "cgroup.freeze").write_text(state)
        except OSError:
            return False
        if state == "1":  # the freeze is done when cgroup.events says so
            deadline = time.monotonic() + 1.0
            while "frozen 1" not in _read(self.path / "cgroup.events") and time.monotonic() < deadline:
                time.sleep(0.001)
        return True

    def oom_kills(self) -> int:
        """How many of the job's processes the kernel killed at its memory limit."""
        if "memory" not in self.found.limits:
            return 0
        folder = self.found.limits["memory"] / self.name
        for file in ("memory.events", "memory.oom_control"):
            for line in _read(folder / file).splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill" and value.strip().isdigit():
                    return int(value)
        return 0

    def remove(self, wait: float = 2.0) -> bool:
        """Kill what is left and remove the cgroups; False if some stayed (reaped later)."""
        return remove(self.folders, self.path, wait)


def remove(folders: list[Path], membership: Path, wait: float = 2.0) -> bool:
    deadline = time.monotonic() + wait
    with contextlib.suppress(OSError):
        (membership / "cgroup.kill").write_text("1")
    gone = True
    for folder in reversed(folders):
        while True:
            try:
                folder.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                if time.monotonic() >= deadline:
                    gone = False
                    break
                time.sleep(0.01)
    for folder in folders:  # the cluster's folder too, once its last job is gone
        with contextlib.suppress(OSError):
            folder.parent.rmdir()
    return gone


def leftover(found: Containment, cluster: str, live: set[str]) -> list[str]:
    """Kill and remove this cluster's rank cgroups whose job is not live (a supervisor
    that was SIGKILLed leaves its job's cgroup behind): the node agent's backstop.
    Returns the cgroups removed."""
    if found.v2 is None:
        return []
    out = []
    try:
        entries = list((found.v2 / cluster).iterdir())
    except OSError:
        return []
    for entry in entries:
        if not entry.is_dir() or entry.name.split(".")[0] in live:
            continue
        folders = [
            entry,
            *(base / cluster / entry.name for name, base in found.limits.items() if base != found.v2),
        ]
        if remove(folders, entry, wait=1.0):
            out.append(entry.name)
    return out
