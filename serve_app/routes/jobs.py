"""Jobs: submit (POST /queue/submit), the line, listings, one job, its
changes (cancel, hold, release, priority) and its output.

A job id in a path may be a unique prefix of at least 4 characters, as `gpuq jobs`
prints them; the orchestrator resolves it (JobQueue.resolve)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Body, Depends, Header, Path, Query, Request
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from orchestrator.core.states import StateName
from orchestrator.core.submission import MAX_KEY_CHARS, MAX_LOG_OFFSET
from serve_app.auth import Principal
from serve_app.errors import ERRORS, ApiError
from serve_app.gateway import Gateway, gateway, reader, writer
from serve_app.models import BulkRequest, PriorityChange, SubmitRequest
from serve_app.visibility import job_for

router = APIRouter(tags=["jobs"], responses=ERRORS)
JobId = Annotated[
    str, Path(min_length=1, max_length=64, description="a job id, or a unique prefix of 4+ characters")
]


@router.post("/queue/submit")
async def submit(
    spec: Annotated[SubmitRequest, Body()],
    who: Principal = Depends(writer),
    gw: Gateway = Depends(gateway),
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", min_length=1, max_length=MAX_KEY_CHARS)
    ] = None,
):
    """Submit a job. `user` defaults to the token's user.
    An `Idempotency-Key` header makes a retried submit return the first job."""
    fields = spec.fields()
    fields.setdefault("user", who.user)
    if not who.may_act_for(fields["user"]):
        raise ApiError(403, f"you are {who.user}: you may submit only as yourself")
    if idempotency_key is not None and not idempotency_key.isprintable():
        raise ApiError(
            422, [{"field": "Idempotency-Key", "message": f"must be 1-{MAX_KEY_CHARS} printable characters"}]
        )
    return await gw.call("submit", fields, idempotency_key, who.caller)


@router.get("/queue")
async def queue(
    limit: Annotated[int, Query(ge=1, le=1000)] = 100, _=Depends(reader), gw: Gateway = Depends(gateway)
):
    """Queued jobs in the order the policy considers them, with why and when, then held
    ones (at most `limit` of each); `total` and `held` count them all."""
    return await gw.call("queue_view", limit)


@router.get("/jobs")
async def jobs(
    state: StateName | None = None,
    user: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
    _=Depends(reader),
    gw: Gateway = Depends(gateway),
):
    """Jobs, newest first, with how many match (`total`)."""
    return await gw.call("list_jobs", state, user, limit, offset)


@router.get("/jobs/{job_id}")
async def job(job_id: JobId, who: Principal | None = Depends(reader), gw: Gateway = Depends(gateway)):
    """A job with its history; its command, env and working directory only for its
    owner and admins (serve_app/visibility.py)."""
    return job_for(who, await gw.call("get_job", job_id))


@router.post("/jobs/{action}")
async def bulk(
    action: Literal["cancel", "hold", "release", "priority"],
    body: Annotated[BulkRequest, Body()],
    who: Principal = Depends(writer),
    gw: Gateway = Depends(gateway),
):
    """Cancel, hold, release or re-prioritise every job the body selects, in one call
    and one commit (`scancel ARRAYID`, `scancel -u alice -t PENDING`). Your own jobs
    only, unless you are an admin; the answer counts what changed and what did not, and why."""
    selector = body.model_dump(exclude_none=True, exclude={"priority"})
    if action == "priority" and body.priority is None:
        raise ApiError(422, [{"field": "priority", "message": "is required for action priority"}])
    return await gw.call("bulk", action, selector, who.caller, body.priority)


async def _owned(job_id: JobId, who: Principal = Depends(writer), gw: Gateway = Depends(gateway)) -> tuple:
    """A change to a job: its owner's and admins'. The job's whole id and who asks."""
    job = await gw.owner_or_admin(who, job_id, "change it")
    return job["id"], who


@router.post("/jobs/{job_id}/cancel")
async def cancel(owned=Depends(_owned), gw: Gateway = Depends(gateway)):
    job_id, who = owned
    return await gw.call("cancel", job_id, f"cancelled by {who.user}", who.caller)


@router.post("/jobs/{job_id}/hold")
async def hold(owned=Depends(_owned), gw: Gateway = Depends(gateway)):
    job_id, who = owned
    return await gw.call("hold", job_id, who.caller)


@router.post("/jobs/{job_id}/release")
async def release(owned=Depends(_owned), gw: Gateway = Depends(gateway)):
    job_id, who = owned
    return await gw.call("release", job_id, who.caller)


@router.patch("/jobs/{job_id}")
async def update(change: PriorityChange, owned=Depends(_owned), gw: Gateway = Depends(gateway)):
    """Change a job's priority (the only field that can change)."""
    job_id, who = owned
    return await gw.call("set_priority", job_id, change.priority, who.caller)


@router.get("/jobs/{job_id}/logs")
async def logs(
    request: Request,
    job_id: JobId,
    offset: Annotated[int, Query(ge=0, le=MAX_LOG_OFFSET, description="byte offset")] = 0,
    tail: Annotated[int | None, Query(ge=1, le=1_000_000, description="the last N lines")] = None,
    attempt: Annotated[int | None, Query(ge=1, le=1_000_000, description="default: the latest")] = None,
    rank: Annotated[int, Query(ge=0, le=4095, description="the bundle (node) of a multi-node job")] = 0,
    limit: Annotated[int, Query(ge=1, le=1 << 20, description="bytes")] = 65536,
    follow: bool = False,
    gw: Gateway = Depends(gateway),
):
    """A slice of a job's output ({data, offset, size, done}): its whole text (every
    attempt in order, a line between them) unless `attempt` names one; offsets are bytes.
    With follow=true, the output's bytes from `offset` as they are written, until the
    job ends. Its owner's and admins'."""
    who = gw.who(request, required=False)
    job = await gw.owner_or_admin(who, job_id, "read its command, environment and output")
    if not follow:
        return await gw.call("logs", job["id"], attempt, rank, offset, limit, tail)
    first = await gw.call("logs", job["id"], attempt, rank, offset, limit, tail, True)
    release = gw.streams.enter(who.user if who else request.client.host if request.client else "anyone")

    async def stream():
        try:
            if first["data"]:
                yield first["data"]
            if not first["done"]:
                async for chunk in gw.logs.follow(job["id"], attempt, rank, first["offset"]):
                    yield chunk
        finally:
            release()

    return StreamingResponse(
        stream(), media_type="text/plain; charset=utf-8", background=BackgroundTask(release)
    )
