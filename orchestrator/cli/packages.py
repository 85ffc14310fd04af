"""`gpuq submit --working-dir DIR` and a runtime env naming local code: packaged and
uploaded exactly as Ray's own `ray job submit` does (Ray's packaging functions: the
same content hash, the same .gitignore and `excludes` rules), to the same routes
(PUT /api/packages/gcs/<name>, serve_app/routes/packages.py), so a package uploaded by
either is found by the other. Ray is imported only here, only when code is uploaded."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from orchestrator.cli.client import Client


def upload_local_code(client: Client, runtime_env: dict) -> dict:
    """The runtime env with its local working_dir and py_modules replaced by the URIs
    of packages on the cluster, each uploaded unless the cluster already has it."""
    from ray._private import ray_constants
    from ray._private.runtime_env.py_modules import upload_py_modules_if_needed
    from ray._private.runtime_env.working_dir import upload_working_dir_if_needed

    include_gitignore = os.environ.get(ray_constants.RAY_RUNTIME_ENV_IGNORE_GITIGNORE, "0") != "1"

    def uploader(include_parent_dir: bool):
        def upload(path: str, excludes: list[str] | None, is_file: bool = False) -> None:
            _upload(client, path, include_gitignore, include_parent_dir, excludes, is_file)

        return upload

    runtime_env = upload_working_dir_if_needed(
        dict(runtime_env), include_gitignore=include_gitignore, upload_fn=uploader(False)
    )
    return upload_py_modules_if_needed(
        runtime_env, include_gitignore=include_gitignore, upload_fn=uploader(True)
    )


def _upload(
    client: Client,
    path: str,
    include_gitignore: bool,
    include_parent_dir: bool,
    excludes: list[str] | None,
    is_file: bool,
) -> None:
    from ray._private.runtime_env.packaging import create_package, get_uri_for_directory, get_uri_for_package

    uri = (
        get_uri_for_package(Path(path))
        if is_file
        else get_uri_for_directory(path, include_gitignore, excludes)
    )
    protocol, name = uri.split("://", 1)
    route = f"/api/packages/{protocol}/{name}"
    if client.exists(route):
        return
    if is_file:
        client.put(route, Path(path).read_bytes())
        return
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / name
        create_package(
            path,
            target,
            include_gitignore=include_gitignore,
            include_parent_dir=include_parent_dir,
            excludes=excludes,
        )
        client.put(route, target.read_bytes())
