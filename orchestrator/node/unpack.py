"""Unpacking a user's package into their job's folder, as that user.

Ray's agent unpacked packages as root and kept each entry's mode, so a zip entry of
mode 04755 became a root-owned set-uid file. gpuq unpacks only in a process that has
already switched to the job's user (node/jobenv.py), into a fresh folder of theirs,
and even so keeps nothing a zip should not be able to make:
- regular files get their permission bits only: set-uid, set-gid and sticky bits go;
- directories are created as the user's (0755 or what the entry says, always rwx for
  the owner);
- device files, FIFOs and sockets are skipped;
- a symbolic link is kept only if it points inside the package (relative, and not out
  through `..`); links are made after every file, so no file is written through one;
- an entry whose name is absolute or climbs out with `..` is refused;
- at most `limit` bytes are written, whatever the entries declare.

Standard library only. It runs after the switch to the user, when the interpreter's own
library may be out of reach: every module it needs is imported here, beforehand,
including the codec zipfile decodes entry names with.
"""

from __future__ import annotations

import encodings.cp437  # noqa: F401  (zipfile imports it on first use)
import os
import posixpath
import stat
import zipfile
from pathlib import Path
from typing import BinaryIO

CHUNK = 1 << 20


class UnpackError(Exception):
    """The package cannot be unpacked as it is (the message says which entry and why)."""


def unpack(source: BinaryIO, dest: Path, limit: int) -> list[str]:
    """Unpack the zip in `source` into the empty folder `dest`; returns what was left
    out, one line each (links that point out, special files)."""
    left_out: list[str] = []
    links: list[tuple[str, str]] = []
    written = 0
    try:
        archive = zipfile.ZipFile(source)
    except zipfile.BadZipFile as e:
        raise UnpackError(f"not a zip archive: {e}") from None
    with archive:
        for info in archive.infolist():
            name = _safe_name(info.filename)
            if name is None:
                continue
            mode = info.external_attr >> 16
            kind = stat.S_IFMT(mode)
            target = dest / name
            if info.is_dir() or kind == stat.S_IFDIR:
                target.mkdir(parents=True, exist_ok=True)
                target.chmod(0o700 | (mode & 0o755 if mode & 0o777 else 0o755))
            elif kind == stat.S_IFLNK:
                links.append((name, archive.read(info)[:4096].decode("utf-8", "replace")))
            elif kind in (0, stat.S_IFREG):
                target.parent.mkdir(parents=True, exist_ok=True)
                perm = (mode & 0o777) or 0o644
                try:
                    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                except FileExistsError:
                    raise UnpackError(f"{name} appears twice in the package") from None
                with os.fdopen(fd, "wb") as out, archive.open(info) as src:
                    while chunk := src.read(CHUNK):
                        written += len(chunk)
                        if written > limit:
                            raise UnpackError(f"it unpacks to more than {limit} bytes")
                        out.write(chunk)
                    os.fchmod(out.fileno(), perm & 0o777)  # never set-uid, set-gid or sticky
            else:
                left_out.append(f"{name}: not a file, folder or link (a device or FIFO), left out")
    for name, pointee in links:
        inside = posixpath.normpath(posixpath.join(posixpath.dirname(name), pointee))
        if posixpath.isabs(pointee) or inside == ".." or inside.startswith("../"):
            left_out.append(f"{name}: a link to {pointee}, outside the package, left out")
            continue
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        try:
            os.symlink(pointee, dest / name)
        except FileExistsError:
            raise UnpackError(f"{name} appears twice in the package") from None
    return left_out


def _safe_name(raw: str) -> str | None:
    """The entry's path relative to the package, or None for the package's own root.
    Raises for a name that leaves the package."""
    name = raw.replace("\\", "/")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise UnpackError(f"{raw!r} is an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnpackError(f"{raw!r} climbs out of the package")
    return "/".join(parts) or None
