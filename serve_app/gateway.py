"""The API replica's link to the rest of gpuq: its tokens, the site's rules, the
orchestrator actor, and the checks every route makes (FastAPI dependencies).

A Serve replica is one process; the deployment's constructor installs one Gateway
there (`install`) and the routes reach it through `gateway()`. Who may do what:
a token for every change and, unless the site opened them, every read (auth.py); a
job's private parts and changes are its owner's and the admins' (visibility.py);
admin routes need an admin token.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Literal, overload

import ray
from fastapi import Depends, Request, Security
from fastapi.security import HTTPBearer
from starlette.requests import HTTPConnection

from orchestrator.core.errors import (
    AmbiguousJobId,
    Forbidden,
    GpuqError,
    IllegalTransition,
    InvalidSpec,
    JobNotFound,
    OverLimit,
)
from orchestrator.head.names import NAMESPACE, ORCHESTRATOR_NAME
from serve_app.auth import Principal, TokenFile, TokenRefused
from serve_app.errors import ApiError, invalid, unavailable
from serve_app.follow import LogReader
from serve_app.limits import StreamGate

log = logging.getLogger("gpuq.api")
CALL_TIMEOUT_S = 30
# Declares the bearer scheme in the OpenAPI spec; the check itself is TokenFile's.
bearer = HTTPBearer(auto_error=False, description="a gpuq token (gpuq token create)")


class Gateway:
    def __init__(self, tokens_file: str, auth_reads: bool = True, site: dict | None = None):
        self.tokens = TokenFile(tokens_file)
        self.auth_reads = auth_reads
        self.site = site or {}
        self.streams = StreamGate()
        self.logs = LogReader(self.call)

    async def call(self, method: str, *args):
        """Ask the orchestrator; its errors become the API's, by type, with their own
        one-line message. Ray wraps an error raised in the actor in a RayTaskError that
        is also an instance of the original type; its text is a traceback (pids,
        addresses, paths), so only `.cause` is ever read."""
        try:
            orch = ray.get_actor(ORCHESTRATOR_NAME, namespace=NAMESPACE)
            return await asyncio.wait_for(getattr(orch, method).remote(*args), CALL_TIMEOUT_S)
        except ray.exceptions.RayTaskError as e:
            raise _mapped(e.cause if e.cause is not None else e) from None
        except (TimeoutError, ValueError, ray.exceptions.RayError):
            # ValueError: no actor of that name (the orchestrator is down or restarting)
            raise unavailable("the orchestrator is unavailable") from None

    @overload
    def who(self, conn: HTTPConnection, required: Literal[True] = True) -> Principal: ...
    @overload
    def who(self, conn: HTTPConnection, required: bool) -> Principal | None: ...

    def who(self, conn: HTTPConnection, required: bool = True) -> Principal | None:
        """The token's principal. `required=False` is a read: it needs a token unless the
        site opened reads, and then None stands for anyone."""
        try:
            who = self.tokens.authenticate(conn.headers.get("authorization"))
        except TokenRefused as e:
            raise ApiError(401, str(e), {"WWW-Authenticate": 'Bearer error="invalid_token"'}) from None
        if who is None and (required or self.auth_reads):
            raise ApiError(
                401,
                "a valid bearer token is required (Authorization: Bearer <token>)",
                {"WWW-Authenticate": "Bearer"},
            )
        return who

    async def owner_or_admin(self, who: Principal | None, job_id: str, doing: str) -> dict:
        """The job, if `who` is its owner or an admin."""
        job = await self.call("get_job", job_id)
        if who is None or not who.may_act_for(job["user"]):
            raise ApiError(
                403 if who else 401,
                f"job {job['id']} belongs to {job['user']}; only its owner or an admin may {doing}",
            )
        return job


def _mapped(e: BaseException) -> ApiError:
    if isinstance(e, InvalidSpec):
        return ApiError(422, [{"field": f, "message": m} for f, m in e.errors])
    if isinstance(e, AmbiguousJobId):
        return invalid("job_id", str(e))
    if isinstance(e, JobNotFound):
        return ApiError(404, str(e))
    if isinstance(e, Forbidden):
        return ApiError(403, str(e))
    if isinstance(e, IllegalTransition):
        return ApiError(409, str(e))
    if isinstance(e, OverLimit):
        return ApiError(429, str(e), {"Retry-After": str(max(1, round(e.retry_after_s)))})
    if isinstance(e, GpuqError):  # the store could not commit, a node did not answer: try again
        return unavailable(str(e))
    # Not one of gpuq's errors: a bug in the orchestrator. The traceback goes to the log.
    log.error("orchestrator error: %r", e)
    return ApiError(500, f"internal error in the orchestrator ({type(e).__name__}); see its log")


_installed: Gateway | None = None


def install(gateway: Gateway) -> None:
    global _installed
    _installed = gateway


def installed() -> Gateway | None:
    """The replica's gateway once its constructor ran (the admission middleware's)."""
    return _installed


async def gateway() -> Gateway:
    # Dependencies are `async def` although they never await: FastAPI runs a plain `def`
    # dependency in its thread pool, a hand-off per request that cost the API ~1 ms.
    if _installed is None:  # a route reached before the deployment's constructor ran
        raise unavailable("the API is starting")
    return _installed


# --- who is asking (dependencies) ------------------------------------------------------


async def reader(request: Request, _=Security(bearer), gw: Gateway = Depends(gateway)) -> Principal | None:
    """Anyone allowed to read: a token, unless the site opened reads (then maybe None)."""
    return gw.who(request, required=False)


async def signed_in(request: Request, _=Security(bearer), gw: Gateway = Depends(gateway)) -> Principal:
    return gw.who(request)


async def writer(who: Principal = Depends(signed_in)) -> Principal:
    """A token that may change things: readers only read."""
    if who.role == "reader":
        raise ApiError(403, f"token {who.token_id} is read-only (role reader)")
    return who


async def admin(who: Principal = Depends(signed_in)) -> Principal:
    if not who.admin:
        raise ApiError(403, f"you are {who.user}: only an admin may do this")
    return who
