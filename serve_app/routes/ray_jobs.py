"""Ray's Jobs API on gpuq (the mapping is in serve_app/ray_mapping.py): what `ray job
submit/status/logs/stop/list` and JobSubmissionClient call."""

from __future__ import annotations

import asyncio
import codecs
from typing import Annotated

import ray
from fastapi import APIRouter, Depends, Path, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse

from serve_app import ray_mapping
from serve_app.auth import Principal
from serve_app.errors import ERRORS, ApiError
from serve_app.gateway import Gateway, gateway, reader, writer
from serve_app.models import RaySubmitRequest
from serve_app.visibility import job_for

router = APIRouter(prefix="/api", tags=["ray jobs"], responses=ERRORS)
JobId = Annotated[str, Path(min_length=1, max_length=64)]
RAY_LIST_LIMIT = 500


@router.get("/version")
async def version():
    """What Ray's client checks before it talks to a Jobs server."""
    return {
        "version": "4",
        "ray_version": ray.__version__,
        "ray_commit": getattr(ray, "__commit__", ""),
        "session_name": "gpuq",
    }


@router.post("/jobs/")
async def submit(req: RaySubmitRequest, who: Principal = Depends(writer), gw: Gateway = Depends(gateway)):
    spec, key = ray_mapping.spec_from_ray(req, who.user, bool(gw.site.get("ray_jobs_api_ray", True)))
    if not who.may_act_for(spec["user"]):
        raise ApiError(403, f"you are {who.user}: you may submit only as yourself")
    try:
        out = await gw.call("submit", spec, key, who.caller)
    except ApiError as e:
        raise _ray_names(e) from None
    return {"job_id": out["job_id"], "submission_id": out["job_id"]}


@router.get("/jobs/")
async def listing(who: Principal | None = Depends(reader), gw: Gateway = Depends(gateway)):
    """The newest 500 jobs as Ray's JobDetails, in one call to the orchestrator."""
    listed = await gw.call("list_jobs", None, None, RAY_LIST_LIMIT, 0, True)
    return [ray_mapping.details(job_for(who, j)) for j in listed["jobs"]]


@router.get("/jobs/{job_id}")
async def info(job_id: JobId, who: Principal | None = Depends(reader), gw: Gateway = Depends(gateway)):
    return ray_mapping.details(job_for(who, await gw.call("get_job", job_id)))


@router.get("/jobs/{job_id}/logs")
async def logs(job_id: JobId, who: Principal | None = Depends(reader), gw: Gateway = Depends(gateway)):
    job = await gw.owner_or_admin(who, job_id, "read its command, environment and output")
    out = await gw.call("logs", job["id"], None, 0, 0, 1 << 20, None)
    return {"logs": out["data"]}


@router.post("/jobs/{job_id}/stop")
async def stop(job_id: JobId, who: Principal = Depends(writer), gw: Gateway = Depends(gateway)):
    job = await gw.owner_or_admin(who, job_id, "change it")
    if ray_mapping.STATUS[job["state"]] in ray_mapping.TERMINAL:
        return {"stopped": False}
    await gw.call("cancel", job["id"], f"stopped by {who.user} (ray job stop)", who.caller)
    return {"stopped": True}


@router.delete("/jobs/{job_id}", responses={400: ERRORS[409]})
async def delete(job_id: JobId, who: Principal = Depends(writer), gw: Gateway = Depends(gateway)):
    await gw.owner_or_admin(who, job_id, "change it")
    raise ApiError(400, "gpuq keeps every job's record (its history is the audit trail); nothing was deleted")


@router.websocket("/jobs/{job_id}/logs/tail")
async def tail(ws: WebSocket, job_id: str):
    """The job's output as it is written, every attempt's (a line between them); closed
    when the job has finished. Its owner's and admins' only."""
    try:
        gw = await gateway()
        who = gw.who(ws, required=False)
        job = await gw.owner_or_admin(who, job_id[:64], "read its command, environment and output")
        release = gw.streams.enter(who.user if who else "anyone")
    except ApiError as e:
        # Refused in the handshake, as an HTTP answer where the server can send one.
        await ws.send_denial_response(
            JSONResponse({"success": False, "detail": e.detail}, e.status, headers=e.headers)
        )
        return
    await ws.accept()
    decode = codecs.getincrementaldecoder("utf-8")(
        errors="replace"
    ).decode  # a character cut by a read: whole

    async def copy() -> None:
        try:
            async for chunk in gw.logs.follow(job["id"], None, 0, 0):
                if text := decode(chunk):
                    await ws.send_text(text)
        except (ApiError, WebSocketDisconnect):
            pass

    # A client that goes away ends the tail now. Sending alone would notice only at the
    # job's next write, hours off for a quiet job, and until then the tail would hold
    # one of its user's stream slots (measured: 16 killed tails locked alice out).
    copying, gone = asyncio.ensure_future(copy()), asyncio.ensure_future(_disconnected(ws))
    try:
        ended, _ = await asyncio.wait({copying, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        copying.cancel()
        gone.cancel()
        release()
    if gone not in ended:  # the job ended: say so, as before
        await ws.close()


async def _disconnected(ws: WebSocket) -> None:
    """Returns when the client has gone; what it sends before that means nothing here."""
    while (await ws.receive())["type"] != "websocket.disconnect":
        pass


def _ray_names(e: ApiError) -> ApiError:
    """The orchestrator names gpuq's fields; a Ray client sent Ray's."""
    if isinstance(e.detail, list):
        names = {
            "command": "entrypoint",
            "gpu_count": "entrypoint_num_gpus",
            "idempotency_key": "submission_id",
            "run_id": "submission_id",
        }
        for d in e.detail:
            head, dot, rest = d["field"].partition(".")
            if head in names:
                d["field"] = names[head] + dot + rest
            elif head in ("priority", "user", "time_limit", "max_retries", "name"):
                d["field"] = f"metadata.{d['field']}"
    return e
