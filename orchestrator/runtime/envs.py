"""Ray runtime environments, Ray's side: what a runner is created with, what a failed
setup says, and the packages in Ray's store (GCS) that `ray job submit --working-dir`
uploads. The rules of what is accepted are the core's (core/runtime_env.py); the
backend (runtime/backend.py) creates the runners.

A package stays in Ray's store while something references it: a runner made with it
(parked slots too), or a pin with an expiry. Ray's job server pins a package for a
while when a client asks whether it exists; gpuq does the same, and the orchestrator
pins again, while any unfinished job names it, every quarter of `package_keep_s`
(a job may wait days in line before a runner references its package). Once nothing
does, Ray deletes it.
"""

from __future__ import annotations

import logging

from ray._private.runtime_env import packaging

log = logging.getLogger("gpuq.backend")
SETUP_FAILED = "runtime_env_failed"  # the job event that holds Ray's words when a setup failed


class RuntimeEnvFailed(Exception):
    """Ray could not set up a job's runtime environment (a pip install failed, a package
    is gone): the job's own error, which another try would repeat."""


def for_ray(env: dict, setup_timeout_s: float, pip_binary_only: bool) -> dict:
    """The runtime_env a runner is created with. In a multi-user install pip and uv
    install wheels only: Ray's agent installs as the service account, and a source
    package would run its build code there."""
    out = dict(env)
    if pip_binary_only and "pip" in out:
        out["pip"] = {**out["pip"], "pip_install_options": ["--only-binary=:all:", "--disable-pip-version-check",
                                                             "--no-cache-dir"]}
    if pip_binary_only and "uv" in out:
        out["uv"] = {**out["uv"], "uv_pip_install_options": ["--only-binary", ":all:", "--no-cache"]}
    return {**out, "config": {"setup_timeout_seconds": int(setup_timeout_s)}}


def setup_error(e: Exception) -> str:
    """Ray's setup error in a few lines: what the failing command printed (pip's own
    words) when there is that, else the error's last lines; never Ray's traceback."""
    text = str(e).strip()
    _, said, output = text.partition("Last 50 lines of stdout:")
    if said:
        lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
        keep = 12
    else:
        lines = [ln for ln in text.splitlines()
                 if ln.strip() and not ln.startswith(("Traceback", "  ", "[Node")) and not ln.strip().startswith("^")]
        keep = 4
    return "\n".join(lines[-keep:])[-3000:] or "Ray could not set up the runtime environment"


def package_exists(uri: str, keep_s: int) -> bool:
    """Whether Ray's store holds the package; kept `keep_s` longer either way (as Ray's
    job server does), so the job about to name it still finds it."""
    packaging.pin_runtime_env_uri(uri, expiration_s=keep_s)
    return packaging.package_exists(uri)


def package_put(uri: str, data: bytes, keep_s: int) -> None:
    """Store a package in Ray's store, where Ray's agent on any node fetches it."""
    packaging.upload_package_to_gcs(uri, data)
    packaging.pin_runtime_env_uri(uri, expiration_s=keep_s)


def keep_packages(uris: set[str], keep_s: int) -> None:
    """Pin the packages unfinished jobs name for another `keep_s`."""
    for uri in uris:
        try:
            packaging.pin_runtime_env_uri(uri, expiration_s=keep_s)
        except Exception as e:  # the next round tries again
            log.warning("could not keep package %s: %s", uri, e)
