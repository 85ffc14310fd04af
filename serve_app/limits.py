"""Bounds checked before any work: body size and JSON nesting on the way in, and how
many log streams may be open at once.

A request that breaks a bound is answered here, in milliseconds, before FastAPI
parses it: Python's json module recurses once per level, so 8,000 nested brackets
(16 KB) would otherwise end in a RecursionError deep inside the framework.
"""

from __future__ import annotations

import json
import re
from collections import Counter

from serve_app.errors import ApiError

MAX_BODY_BYTES = 64 * 1024
PACKAGES = "/api/packages/"  # Ray's package uploads: zips, bounded by the site's max_package_bytes
MAX_JSON_DEPTH = 32  # a job spec is 3 deep; Ray's runtime_env a few more
# Open log streams (HTTP follow and WebSocket tails) per user and in all. Each is cheap
# here (followers of one log share one reader, follow.py) but not free.
MAX_STREAMS_PER_USER = 16
MAX_STREAMS = 256

_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"')
_BRACKETS = re.compile(rb"[\[\]{}]")


def json_depth(raw: bytes, stop_at: int) -> int:
    """How deep the brackets of a JSON text nest (strings skipped), counted only up to
    `stop_at`: a regex pass, linear in the size, with no recursion."""
    depth = most = 0
    for m in _BRACKETS.finditer(_STRINGS.sub(b'""', raw)):
        if m.group() in (b"[", b"{"):
            depth += 1
            if depth > most:
                most = depth
                if most > stop_at:
                    break
        else:
            depth -= 1
    return most


class BodyLimits:
    """Pure ASGI middleware: reads a request body up to MAX_BODY_BYTES (413 past it, as
    soon as Content-Length says so or the bytes pass it) and refuses JSON nested deeper
    than MAX_JSON_DEPTH (422), then hands the body on as it came."""

    def __init__(self, app, max_bytes: int = MAX_BODY_BYTES, max_depth: int = MAX_JSON_DEPTH):
        self.app, self.max_bytes, self.max_depth = app, max_bytes, max_depth

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        if scope["method"] == "PUT" and scope["path"].startswith(PACKAGES):
            return await self.app(scope, receive, send)  # not JSON; the route bounds it (routes/packages.py)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            return await refuse(send, 413, f"request body is larger than {self.max_bytes} bytes")
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return await refuse(send, 413, f"request body is larger than {self.max_bytes} bytes")
            chunks.append(chunk)
            more = message.get("more_body", False)
        raw = b"".join(chunks)
        if json_depth(raw, self.max_depth) > self.max_depth:
            return await refuse(
                send, 422, [{"field": "body", "message": f"JSON nests deeper than {self.max_depth} levels"}]
            )
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": raw, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


async def refuse(send, status: int, detail, headers: dict[str, str] | None = None) -> None:
    """Answer with the API's error body (errors.ErrorBody) and close the connection."""
    payload = json.dumps({"success": False, "detail": detail}).encode()
    extra = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"connection", b"close"),
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class StreamGate:
    """Counts open streams. `enter(user)` refuses with 429 past a cap, like a server's
    connection limit, so a script that leaks followers hurts only itself; it returns
    the stream's release, which may be called more than once."""

    def __init__(self, per_user: int = MAX_STREAMS_PER_USER, total: int = MAX_STREAMS):
        self.per_user, self.total = per_user, total
        self.open_by: Counter[str] = Counter()

    def enter(self, user: str):
        if self.open_by.total() >= self.total:
            raise ApiError(
                429,
                f"the API has {self.total} log streams open, its limit; try again later",
                {"Retry-After": "10"},
            )
        if self.open_by[user] >= self.per_user:
            raise ApiError(
                429,
                f"{user} has {self.per_user} log streams open, the limit per user; close one "
                "(or read without follow)",
                {"Retry-After": "10"},
            )
        self.open_by[user] += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.open_by[user] -= 1
                if not self.open_by[user]:
                    del self.open_by[user]

        return release
