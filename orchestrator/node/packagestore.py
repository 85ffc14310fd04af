"""Runtime-env packages in Ray's store, and on each node.

`ray job submit --working-dir` uploads a zip through the package routes
(serve_app/routes/packages.py); the orchestrator keeps it in Ray's store (the GCS's
key-value store, as Ray's own job server does), under its owner's name
(core/packages.py, `stored_uri`). When a job that names it starts, its runner fetches
the bytes into the node's package cache (`open_package`), a folder of the service's
own, and hands the supervisor an open descriptor; the job's user unpacks it
(node/jobenv.py). Nothing here unpacks or reads inside a package.

A package stays in Ray's store while something pins it. Ray's job server pins a
package for a while when a client asks whether it exists; gpuq does the same, and the
orchestrator pins again, while any unfinished job names it, every quarter of
`package_keep_s` (a job may wait days in line). Once nothing does, Ray deletes it.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from ray._private.ray_constants import KV_NAMESPACE_PACKAGE
from ray._private.runtime_env import packaging
from ray._private.runtime_env.protocol import Protocol
from ray.experimental.internal_kv import _internal_kv_get

log = logging.getLogger("gpuq.backend")
SETUP_FAILED = "runtime_env_failed"  # the job event that holds why a setup failed


class RuntimeEnvFailed(Exception):
    """A job's runtime env could not be set up (a pip install failed, a package is
    gone): the job's own error, which another try would repeat."""


def package_exists(stored: str, keep_s: int) -> bool:
    """Whether Ray's store holds the package; kept `keep_s` longer either way (as Ray's
    job server does), so the job about to name it still finds it."""
    packaging.pin_runtime_env_uri(stored, expiration_s=keep_s)
    return packaging.package_exists(stored)


def package_get(stored: str) -> bytes | None:
    return _internal_kv_get(stored, namespace=KV_NAMESPACE_PACKAGE)


def package_put(stored: str, data: bytes, keep_s: int) -> None:
    """Store a package in Ray's store, where any node's runner can fetch it."""
    packaging.upload_package_to_gcs(stored, data)
    packaging.pin_runtime_env_uri(stored, expiration_s=keep_s)


def keep_packages(stored: set[str], keep_s: int) -> None:
    """Pin the packages unfinished jobs name for another `keep_s`."""
    for uri in stored:
        try:
            packaging.pin_runtime_env_uri(uri, expiration_s=keep_s)
        except Exception as e:  # the next round tries again
            log.warning("could not keep package %s: %s", uri, e)


def open_package(stored: str, cache: Path, keep_s: int, shown: str = "") -> int:
    """A descriptor of the package, read-only, from this node's cache (fetched from
    Ray's store the first time). The cache is the service's own folder (0700); what
    nobody used for `keep_s` is removed. Raises RuntimeEnvFailed if Ray's store has
    no such package."""
    protocol, _, name = stored.partition("://")
    if protocol != Protocol.GCS.value or "/" in name or name.startswith("."):
        raise RuntimeEnvFailed(f"{stored} is not a package of this cluster")
    cache.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = cache / name
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        os.utime(fd)  # last used now
        return fd
    except FileNotFoundError:
        pass
    data = package_get(stored)
    if data is None:
        raise RuntimeEnvFailed(
            f"package {shown or stored} is not on this cluster any more (packages are kept "
            "package_keep_s after their last use): upload it again"
        )
    tmp = cache / f".{name}.{os.getpid()}.{time.monotonic_ns()}"
    with open(tmp, "xb") as f:
        f.write(data)
    fd = os.open(tmp, os.O_RDONLY)
    os.replace(tmp, path)  # another runner of this node may have fetched it meanwhile: the same bytes
    _forget_unused(cache, keep_s)
    return fd


def _forget_unused(cache: Path, keep_s: int) -> None:
    cutoff = time.time() - keep_s
    for entry in os.scandir(cache):
        try:
            if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                os.unlink(entry.path)
        except OSError:
            pass
