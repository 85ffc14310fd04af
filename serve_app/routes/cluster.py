"""The cluster as a whole: health, the status, resources, metrics, usage, the
page's chart, who a token is, and the audit trail (admins)."""

from __future__ import annotations

import math
import time
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from orchestrator.core.durations import parse_duration
from serve_app.auth import Principal
from serve_app.errors import ERRORS, invalid
from serve_app.gateway import Gateway, admin, gateway, reader, signed_in
from serve_app.models import StartsChange

router = APIRouter(tags=["cluster"], responses=ERRORS)
Since = Annotated[
    str,
    Query(
        min_length=1,
        max_length=32,
        description="a duration back from now (7d, 12h, 30m, 3600) or epoch seconds",
    ),
]


def since_time(text: str, field: str = "since") -> float:
    try:
        value = float(text)
        if math.isfinite(value) and value > 1e9:  # epoch seconds; a smaller number is a duration in seconds
            return value
    except ValueError:
        pass
    try:
        return time.time() - parse_duration(text)
    except ValueError:
        raise invalid(field, "must be a duration back from now (7d, 12h, 30m) or epoch seconds") from None


@router.get("/healthz")
async def healthz(gw: Gateway = Depends(gateway)):
    """200 when the orchestrator answers; 503 when it does not."""
    await gw.call("ping")
    return {"ok": True}


@router.get("/orchestrator/status")
async def status(_=Depends(reader), gw: Gateway = Depends(gateway)):
    """The status: the queue, GPUs, running jobs and counters."""
    return await gw.call("status")


@router.get("/resources")
async def resources(_=Depends(reader), gw: Gateway = Depends(gateway)):
    """Every GPU: its state, holder and telemetry."""
    return await gw.call("resources")


@router.get("/whoami")
async def whoami(who: Principal = Depends(signed_in)):
    """Who the bearer token belongs to, and until when (the web page's sign-in, `gpuq
    login` and `gpuq whoami`)."""
    return {"user": who.user, "role": who.role, "token_id": who.token_id, "expires_at": who.expires_at}


@router.get("/history")
async def history(
    window: Annotated[float, Query(ge=60, le=3600, description="seconds")] = 3600,
    _=Depends(reader),
    gw: Gateway = Depends(gateway),
):
    """GPU allocation and measured utilization over the last hour, for the page's chart."""
    return await gw.call("history", window)


@router.get("/metrics", response_class=Response)
async def metrics(_=Depends(reader), gw: Gateway = Depends(gateway)):
    """Prometheus exposition of the orchestrator's registry (orchestrator/head/metrics.py)."""
    return Response(await gw.call("metrics_text"), media_type=CONTENT_TYPE_LATEST)


@router.get("/usage")
async def usage(
    since: Since = "7d",
    until: Annotated[float | None, Query(ge=0, le=1e11)] = None,
    user: Annotated[str | None, Query(max_length=64)] = None,
    _=Depends(reader),
    gw: Gateway = Depends(gateway),
):
    """GPU-hours per user and per UTC day since `since`."""
    return await gw.call("usage_report", since_time(since), until, user)


@router.put("/orchestrator/starts")
async def starts(change: StartsChange, who: Principal = Depends(admin), gw: Gateway = Depends(gateway)):
    """Admin: stop or resume starting jobs, cluster-wide (a maintenance window; `gpuq
    down --drain`). Submissions are still queued and running jobs go on. A site config
    with `start_jobs = false` stays stopped whatever this says."""
    return await gw.call("set_starts", change.enabled, who.caller)


@router.get("/webhooks/deliveries")
async def webhook_deliveries(
    limit: Annotated[int, Query(ge=1, le=200)] = 100, _=Depends(admin), gw: Gateway = Depends(gateway)
):
    """Admin: recent notification deliveries (delivered, failed, dropped), newest first,
    and how many events each webhook has waiting."""
    return await gw.call("webhook_deliveries", limit)


@router.get("/audit")
async def audit(
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    user: Annotated[str | None, Query(max_length=64)] = None,
    action: Annotated[str | None, Query(max_length=32)] = None,
    since: Since | None = None,
    _=Depends(admin),
    gw: Gateway = Depends(gateway),
):
    """Admin: every change anyone asked for (submit, cancel, hold, release, priority,
    drain, undrain, token changes): who, when, what; newest first."""
    return {"events": await gw.call("audit_trail", limit, user, action, since_time(since) if since else 0.0)}
