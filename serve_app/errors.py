"""One error body for every 4xx and 5xx the API answers, and where each comes from.

Every answer that is not a success is `{"success": false, "detail": ...}`: a one-line
message, or for 422 a list of `{field, message}` naming each bad field and what is
allowed. Routes declare ERRORS, so the OpenAPI spec holds the whole contract.

No exception text from inside the service reaches a client: errors from the
orchestrator cross Ray as gpuq's own types (orchestrator/core/errors.py) and are mapped
to their message in gateway.py; anything else is a bug, logged here with a reference
and answered 500 with that reference only.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any, Literal

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

log = logging.getLogger("gpuq.api")
RETRY_AFTER_S = 2


class FieldError(BaseModel):
    field: str
    message: str


class ErrorBody(BaseModel):
    success: Literal[False] = False
    detail: str | list[FieldError]


class ApiError(Exception):
    def __init__(self, status: int, detail: str | list[dict], headers: dict | None = None):
        self.status, self.detail, self.headers = status, detail, headers or {}


def invalid(field: str, message: str) -> ApiError:
    return ApiError(422, [{"field": field, "message": message}])


def unavailable(message: str) -> ApiError:
    return ApiError(503, f"{message}; nothing was changed, try again", {"Retry-After": str(RETRY_AFTER_S)})


def _described(text: str) -> dict:
    return {"model": ErrorBody, "description": text}


# What any route may answer besides success. 401/403 come from the token check, 404 and
# 409 from the job or node named, 413/422 from the body, 429 from the stream caps, 503
# when the orchestrator cannot be reached (with Retry-After; nothing was accepted).
ERRORS: dict[int | str, dict[str, Any]] = {
    401: _described("no, unknown, revoked or expired bearer token"),
    403: _described(
        "the token lacks a right this needs (not your job, a priority above yours, admin only, "
        "a read-only token)"
    ),
    404: _described("no such job, node, token or page"),
    409: _described("the job's state does not allow this; nothing was changed"),
    413: _described("the request body is too large"),
    422: _described("invalid input: each bad field, with what is allowed"),
    429: _described("too many open log streams; retry after the time in Retry-After"),
    500: _described("a bug in gpuq: the answer names a reference to find in the API's log"),
    503: _described("the orchestrator is unavailable; nothing was changed; retry after Retry-After"),
}


def body(status: int, detail, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"success": False, "detail": detail}, status, headers=headers)


async def on_api_error(request: Request, exc: ApiError) -> JSONResponse:
    return body(exc.status, exc.detail, exc.headers)


async def on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
    return body(422, [{"field": _field(e["loc"]), "message": _message(e)} for e in exc.errors()])


async def on_http(request: Request, exc: HTTPException) -> JSONResponse:
    """Starlette's own: an unknown path (404), a method a path does not take (405, with
    its Allow header)."""
    if exc.status_code == 400:  # FastAPI's answer to a body it could not decode
        return body(422, [{"field": "body", "message": "is not valid JSON (UTF-8)"}])
    text = {404: "no such path; see /docs for the API", 405: "this path does not take that method"}
    return body(exc.status_code, text.get(exc.status_code, str(exc.detail)), getattr(exc, "headers", None))


async def on_bug(request: Request, exc: Exception) -> JSONResponse:
    ref = uuid.uuid4().hex[:12]
    log.error("internal error %s on %s %s", ref, request.method, request.url.path, exc_info=exc)
    return body(
        500, f"internal error in gpuq (reference {ref} in the API's log); nothing may have been changed"
    )


def _field(loc) -> str:
    """`body.env.X` -> `env.X`; `query.rank` -> `rank`: the name the client sent."""
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    return ".".join(parts) or "body"


def _message(e: dict) -> str:
    msg = e["msg"]
    if e["type"] == "extra_forbidden":
        return "is not a known field"
    if e["type"] == "missing":
        return "is required"
    return msg[len("Value error, ") :] if msg.startswith("Value error, ") else msg
