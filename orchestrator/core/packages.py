"""Runtime-env packages: whose each one is, and what is accepted as one.

`ray job submit --working-dir DIR` names the zip it uploads after a hash of DIR
(`_ray_pkg_<hash>.zip`) and skips the upload when the cluster already answers for that
name. A name shared by every user is therefore a name any user can claim first, or
overwrite, and the next job that names it runs the claimer's code as its own user.

A content check cannot close that. Ray's directory hash is the XOR of each entry's
SHA-1 cut to 8 bytes: XOR is linear, so a directory with any code in it can be padded
with files whose hashes make up any given name (Gaussian elimination over 64 bits;
measured here: 6 ms). And it covers folders the zip does not carry (a folder whose
content .gitignore leaves out is hashed, not packed), so a genuine upload cannot always
be checked from its bytes. So packages are kept per owner instead (`stored_uri`): a
job reads only packages its own user uploaded, whatever anyone else put under the
same name, and an owner's package is written once (`same_content` decides a repeat).

Reading a zip here is parsing, never unpacking: nothing is written, and the sizes the
entries declare are bounded before a byte is decompressed (zipfile reads no more than
an entry declares). Pure: standard library only.
"""

from __future__ import annotations

import hashlib
import io
import zipfile

MAX_ENTRIES = 100_000


class PackageError(ValueError):
    """A package refused: the message names it and says what is wrong."""


def check(name: str, data: bytes, max_unpacked: int) -> None:
    """Raise PackageError unless `data` is a zip (or wheel) of bounded size."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError):
        raise PackageError(f"{name} is not a zip archive: send the package Ray's client made") from None
    with archive:
        entries = archive.infolist()
    if len(entries) > MAX_ENTRIES:
        raise PackageError(f"{name} has {len(entries)} entries; at most {MAX_ENTRIES} are accepted")
    declared = sum(e.file_size for e in entries)
    if declared > max_unpacked:
        raise PackageError(
            f"{name} unpacks to {declared} bytes, more than this site's max_package_unpacked_bytes "
            f"({max_unpacked}): leave data and checkpoints out and read them from shared storage"
        )


def digest(data: bytes) -> str:
    """What identifies a package's bytes (a repeated upload is the same only if equal)."""
    return hashlib.sha256(data).hexdigest()


def stored_uri(owner: str, uri: str) -> str:
    """Where the package `uri` uploaded by `owner` is kept in Ray's store: a namespace
    per owner (user names are [A-Za-z0-9._-], so `_gpuq_<owner>_` cannot be forged by
    another owner's name)."""
    protocol, _, name = uri.partition("://")
    return f"{protocol}://_gpuq_{len(owner)}_{owner}_{name}"
