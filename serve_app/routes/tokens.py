"""Tokens (admins): create, list, revoke. Every change is audited (token_admin.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path

from orchestrator.core.errors import Forbidden, InvalidSpec
from orchestrator.core.rights import Caller
from serve_app import token_admin
from serve_app.auth import Principal
from serve_app.errors import ERRORS, ApiError
from serve_app.gateway import Gateway, admin, gateway
from serve_app.models import TokenRequest

router = APIRouter(tags=["tokens"], responses=ERRORS)


@router.post("/tokens")
async def create(req: TokenRequest, who: Principal = Depends(admin), gw: Gateway = Depends(gateway)):
    """Admin: a new token for `user` with `role`, expiring after `expires`. The token is
    in the answer this once only."""
    return await _change(token_admin.create(gw.tokens, who, req.fields(), gw.site, _recorder(gw)))


@router.get("/tokens")
async def listing(_=Depends(admin), gw: Gateway = Depends(gateway)):
    """Admin: every token's id, user, role, creation, expiry and last use; never a secret."""
    return {"tokens": gw.tokens.listing()}


@router.delete("/tokens/{token_id}")
async def revoke(
    token_id: Annotated[str, Path(min_length=1, max_length=64)],
    who: Principal = Depends(admin),
    gw: Gateway = Depends(gateway),
):
    """Admin: revoke a token; it is refused from the next request on."""
    return await _change(token_admin.revoke(gw.tokens, who, token_id, _recorder(gw)))


def _recorder(gw: Gateway):
    async def record(by: Caller, action: str, target: str, detail: dict) -> None:
        await gw.call("record", by, action, target, detail)

    return record


async def _change(change):
    try:
        return await change
    except InvalidSpec as e:
        raise ApiError(422, [{"field": f, "message": m} for f, m in e.errors]) from None
    except Forbidden as e:
        raise ApiError(403, str(e)) from None
    except token_admin.UnknownToken as e:
        raise ApiError(404, str(e)) from None
