"""Ray's package routes: where `ray job submit --working-dir DIR` (and `gpuq submit
--working-dir DIR`) upload the zipped directory before submitting the job that names it
(`runtime_env.working_dir = gcs://_ray_pkg_<hash>.zip`), as Ray's Jobs server has them.

The same token rules as a submit. Each user's packages are their own
(core/packages.py): asking whether one exists asks whether *you* uploaded it, and a
job reads only its own user's. Asking also keeps it a while longer for the job about
to name it; the orchestrator keeps it while any unfinished job does (node/packagestore.py).
The body is bounded by the site's `max_package_bytes` (413 past it), checked as the
bytes arrive; it must be a zip (or wheel) that unpacks to at most
`max_package_unpacked_bytes` (422 otherwise), and a name already holding other bytes
is not replaced (422)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Request

from orchestrator.core import packages
from orchestrator.core.config import Config
from serve_app.auth import Principal
from serve_app.errors import ERRORS, ApiError
from serve_app.gateway import Gateway, gateway, writer

router = APIRouter(prefix="/api/packages", tags=["ray jobs"], responses=ERRORS)
Protocol = Literal["gcs"]
PackageName = Annotated[
    str,
    Path(
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9._+-]{0,199}\.(zip|whl)$",
        description="Ray's name for it: _ray_pkg_<hash>.zip, or a wheel's file name",
    ),
]
DEFAULT_MAX = Config.model_fields["max_package_bytes"].default
DEFAULT_UNPACKED = Config.model_fields["max_package_unpacked_bytes"].default


@router.get("/{protocol}/{package_name}")
async def exists(
    protocol: Protocol,
    package_name: PackageName,
    who: Principal = Depends(writer),
    gw: Gateway = Depends(gateway),
):
    """200 if this cluster holds the package, 404 if it must be uploaded."""
    uri = f"{protocol}://{package_name}"
    if not await gw.call("package_exists", uri, who.caller):
        raise ApiError(404, f"package {uri} is not on this cluster; upload it with PUT")
    return {"exists": True, "uri": uri}


@router.put("/{protocol}/{package_name}")
async def upload(
    protocol: Protocol,
    package_name: PackageName,
    request: Request,
    who: Principal = Depends(writer),
    gw: Gateway = Depends(gateway),
):
    """Store a package (a zip of a directory, or a wheel) for jobs to name."""
    cap = int(gw.site.get("max_package_bytes") or DEFAULT_MAX)
    too_big = ApiError(
        413,
        f"the package is larger than {cap} bytes, this site's max_package_bytes: leave data and "
        "checkpoints out (runtime_env excludes, or .gitignore) and read them from shared storage",
    )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > cap:
        raise too_big
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise too_big
        chunks.append(chunk)
    if not size:
        raise ApiError(422, [{"field": "body", "message": "is empty: send the package's bytes"}])
    uri, data = f"{protocol}://{package_name}", b"".join(chunks)
    unpacked = int(gw.site.get("max_package_unpacked_bytes") or DEFAULT_UNPACKED)
    try:
        await asyncio.to_thread(packages.check, package_name, data, unpacked)
    except packages.PackageError as e:
        raise ApiError(422, [{"field": "package", "message": str(e)}]) from None
    await gw.call("package_put", uri, data, who.caller)
    return {"uploaded": True, "uri": uri, "bytes": size}
