"""The node's side of its lease (core/lease.py says why there is one).

    <data_dir>/<node>/lease    the node clock's time of the last renewal, as text

The node agent writes the file after each renewal through the head; every supervisor
reads it and fences its job when the lease has run out. The clock is CLOCK_BOOTTIME:
the same for every process of the node, never set back by NTP, and it runs on while
the machine is suspended. The file is the service account's, in its own folder (users
cannot write it), replaced atomically.

Standard library only: the supervisor imports it for every job.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

CHECK_EVERY_S = 0.25  # how often a supervisor reads the file


def now() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def lease_path(data_root: str, node: str) -> Path:
    return Path(data_root) / node / "lease"


def write(path: Path, renewed: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".lease.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    try:
        os.write(fd, f"{renewed:.3f}\n".encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read(path: Path) -> float | None:
    """The last renewal, or None where there is none (or it is unreadable)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        return float(os.read(fd, 64).decode())
    except ValueError:
        return None
    finally:
        os.close(fd)


class Lease:
    """A supervisor's view of its node's lease. Its own start counts as a renewal: the
    head launched it through the node's runner, so the head was in touch then (and the
    head counts that launch as a contact)."""

    def __init__(self, path: str | Path, seconds: float):
        self.path, self.seconds = Path(path), float(seconds)
        self.since = now()
        self._checked = 0.0
        self._out = False

    def renewed(self) -> float:
        return max(self.since, read(self.path) or 0.0)

    def ran_out(self) -> bool:
        """Whether the lease has run out (read at most every CHECK_EVERY_S). Once out, out:
        a renewal seen after the fence began does not stop it."""
        if self._out:
            return True
        t = now()
        if t - self._checked < CHECK_EVERY_S:
            return False
        self._checked = t
        self._out = t - self.renewed() > self.seconds
        return self._out
