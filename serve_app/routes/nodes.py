"""The fleet: its events, and the admins' drains, returns and (simulated) faults."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from serve_app.auth import Principal
from serve_app.errors import ERRORS
from serve_app.gateway import Gateway, admin, gateway, reader
from serve_app.models import DrainRequest, FaultRequest, UndrainRequest

router = APIRouter(tags=["nodes"], responses=ERRORS)
Node = Annotated[str, Path(min_length=1, max_length=64, description="a GPU node's name, e.g. gmi-node-1")]


@router.get("/nodes/events")
async def events(
    limit: Annotated[int, Query(ge=1, le=1000)] = 100, _=Depends(reader), gw: Gateway = Depends(gateway)
):
    """The fleet's audit trail, newest first: drains, health findings, returns, job
    records the store set aside."""
    return {"events": await gw.call("fleet_events", limit)}


@router.post("/nodes/{node}/drain")
async def drain(
    node: Node, req: DrainRequest, who: Principal = Depends(admin), gw: Gateway = Depends(gateway)
):
    """Admin: take a node's GPUs (all, or `gpus`) out of service."""
    return await gw.call("drain", node, req.gpus, req.reason, who.user, req.requeue)


@router.post("/nodes/{node}/undrain")
async def undrain(
    node: Node, req: UndrainRequest, who: Principal = Depends(admin), gw: Gateway = Depends(gateway)
):
    """Admin: put a node's drained or unhealthy GPUs (all, or `gpus`) back in service."""
    return await gw.call("undrain", node, req.gpus, who.user, req.reason)


@router.post("/nodes/{node}/faults")
async def inject(node: Node, req: FaultRequest, _=Depends(admin), gw: Gateway = Depends(gateway)):
    """Admin: inject a fault into a *simulated* node's telemetry, to exercise the health
    path. Refused on real NVML."""
    return {"result": await gw.call("inject", node, req.fault, req.gpu, req.value)}
