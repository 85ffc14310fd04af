"""A job's files on its node: output.log, start.json and exit.json, one folder per bundle.

    <data_dir>/<node>/jobs/<job id>/<attempt>/<rank>/

In a multi-user install the bundle's folder and files belong to the job's user
(folder 0700, or 0750 when the site makes logs group-readable; files 0600 or 0640),
so the user can read them on the node and nobody else can. The folders above belong
to the service account. The bundle's folder is made fresh for each run (one that
exists is refused, never adopted), and output.log is created in it before the user
gets it. Because the user owns the folder from then on, the root-run supervisor and
agent never follow a name in it: they work through a descriptor of the folder
and open with O_NOFOLLOW, create with O_EXCL, and accept a record only if it is a
plain file owned by the folder's owner. So a job that swaps its log for a link to a
token file or someone else's log gets nothing, and a job that rewrites its own exit
record fools only itself.

Standard library only, and cheap to import: the supervisor starts for every job.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

NOFOLLOW_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
MAX_RECORD = 64 * 1024


def job_dir(data_root: str, node: str, job_id: str, attempt: int, rank: int) -> Path:
    """Where a bundle's output and exit record live on its node (no shared file system)."""
    return Path(data_root) / node / "jobs" / job_id / str(attempt) / str(rank)


class FolderRefused(Exception):
    """The bundle's folder exists already, or its parent is not the service's own."""


def prepare(directory: Path, owner: tuple[int, int] | None, group_read: bool) -> tuple[int, int]:
    """Create the bundle's folder, fresh, and an empty output.log in it for `owner`
    (uid, gid; None: the caller). Returns (folder descriptor, log descriptor open for
    appending). A folder that exists already is refused, never adopted: what is in it
    may be a link, a hard link to someone's file or a FIFO its user left there."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    parent = os.lstat(directory.parent)
    if not stat.S_ISDIR(parent.st_mode) or parent.st_uid != os.geteuid():
        raise FolderRefused(
            f"{directory.parent} must be a folder of the service account (is data_dir somewhere "
            "users can write?)"
        )
    if parent.st_mode & 0o022:  # made under a lax umask: nobody but the service may add or rename entries
        os.chmod(directory.parent, stat.S_IMODE(parent.st_mode) & ~0o022)
    try:
        os.mkdir(directory, 0o700)
    except FileExistsError:
        raise FolderRefused(f"the job folder {directory} exists already; gpuq makes each one fresh") from None
    dfd = os.open(directory, NOFOLLOW_DIR)
    mode = 0o640 if group_read else 0o600
    log = os.open(
        "output.log", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_NOFOLLOW, mode, dir_fd=dfd
    )
    if owner is not None:
        os.fchown(log, *owner)
        os.fchown(dfd, *owner)
    os.fchmod(log, mode)
    os.fchmod(dfd, 0o750 if group_read else 0o700)
    return dfd, log


def write_record(
    dfd: int, name: str, data: dict, owner: tuple[int, int] | None, group_read: bool = False
) -> None:
    """Write a JSON record atomically into the folder `dfd`, never through a link."""
    tmp = f".{name}.{os.urandom(4).hex()}"  # not `secrets`: its import (OpenSSL) costs the supervisor 12 ms
    fd = os.open(
        tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o640 if group_read else 0o600, dir_fd=dfd
    )
    try:
        if owner is not None:
            os.fchown(fd, *owner)
        os.write(fd, json.dumps(data).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)


def open_owned(directory: Path, name: str) -> int | None:
    """A descriptor of `directory/name` if it is a plain file owned by the folder's owner
    (no link followed); None if there is no such file."""
    try:
        dfd = os.open(directory, NOFOLLOW_DIR)
    except OSError:
        return None
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dfd)
    except OSError:
        return None
    finally:
        folder = os.fstat(dfd)
        os.close(dfd)
    st = os.fstat(fd)
    # One link only: a hard link to another user's file (possible where the kernel's
    # protected_hardlinks is off) is not the job's own record, even if its owner matches.
    if not stat.S_ISREG(st.st_mode) or st.st_uid != folder.st_uid or st.st_nlink != 1:
        os.close(fd)
        return None
    return fd


def read_record(directory: Path, name: str = "exit.json") -> dict | None:
    fd = open_owned(directory, name)
    if fd is None:
        return None
    with os.fdopen(fd, "rb") as f:
        raw = f.read(MAX_RECORD)
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def read_exit(directory: Path) -> dict | None:
    """The bundle's exit record, with its fields checked: the job's user owns the file,
    so only what makes sense is believed."""
    data = read_record(directory, "exit.json")
    if data is None:
        return None
    code = data.get("exit_code")
    sig = data.get("signal")
    return {
        "exit_code": code if isinstance(code, int) and not isinstance(code, bool) else None,
        "signal": sig if isinstance(sig, int) and not isinstance(sig, bool) else None,
        "reason": str(data.get("reason") or "exited")[:200],
        "message": str(data.get("message") or "")[:500],
        "started_at": _number(data.get("started_at")),
        "ended_at": _number(data.get("ended_at")),
    }


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
