"""Who gets in, and how fast: the API's guard against clients that hold it up.

Pure ASGI middleware, before any body is read:
- a request without a valid token may have at most `api_unauthenticated_per_address`
  requests in flight from its address (429 past it): 1,100 slow unauthenticated
  requests from one host once filled the replica's every slot, and /healthz with them;
- a token may make `api_rate_per_token` requests a second, in bursts of
  `api_burst_per_token` (429 with Retry-After past it), like Slurm's per-user RPC rate
  limit; admins' tokens are not limited (an operator's scripts, and gpuq's own);
- a request's body must arrive within `api_body_deadline_s` of its start (408 past
  it; a package upload gets PACKAGE_DEADLINE_FACTOR times as long).

The header check is the tokens file's lookup only (auth.TokenFile.holder): the route
authenticates again, with its rights. Uvicorn reads the headers before this runs; it
bounds their size, not their time.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from orchestrator.core.config import Config
from serve_app.limits import PACKAGES, refuse

PACKAGE_DEADLINE_FACTOR = 6
KEYS = ("api_unauthenticated_per_address", "api_rate_per_token", "api_burst_per_token", "api_body_deadline_s")
DEFAULTS = {k: Config.model_fields[k].default for k in KEYS}  # a site dict without them (a test's)


class Buckets:
    """A token bucket per key: `rate` a second, up to `burst` saved."""

    def __init__(self) -> None:
        self._state: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def take(self, key: str, rate: float, burst: float, now: float) -> float:
        """0 if a request may go now (and it is counted), else the seconds to wait."""
        tokens, at = self._state.get(key, (burst, now))
        tokens = min(burst, tokens + (now - at) * rate)
        if tokens < 1:
            self._state[key] = (tokens, now)
            return (1 - tokens) / rate
        self._state[key] = (tokens - 1, now)
        return 0.0


class Admission:
    def __init__(self, app, gateway):
        self.app = app
        self.gateway = gateway  # the replica's Gateway once installed (gateway.installed), else None
        self.in_flight: Counter[str] = Counter()
        self.buckets = Buckets()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        gw = self.gateway()
        site, tokens = (gw.site, gw.tokens) if gw is not None else ({}, None)
        rule = {**DEFAULTS, **{k: v for k, v in site.items() if k in KEYS}}
        now = time.monotonic()
        header = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
        entry = tokens.holder(header, time.time()) if tokens is not None and header else None
        if entry is not None and entry.get("role") != "admin":
            wait = self.buckets.take(
                entry["id"], float(rule["api_rate_per_token"]), float(rule["api_burst_per_token"]), now
            )
            if wait:
                return await refuse(
                    send,
                    429,
                    f"{entry['user']}'s token made more than {rule['api_rate_per_token']:g} "
                    "requests a second (api_rate_per_token); slow down",
                    {"Retry-After": str(max(1, round(wait)))},
                )
        address = None
        if entry is None:
            address = (scope.get("client") or ("unknown",))[0]
            if self.in_flight[address] >= int(rule["api_unauthenticated_per_address"]):
                return await refuse(
                    send,
                    429,
                    f"{address} has {self.in_flight[address]} requests without a valid "
                    "token in flight, the limit per address; send a token, or wait",
                    {"Retry-After": "5"},
                )
            self.in_flight[address] += 1
        deadline = now + float(rule["api_body_deadline_s"]) * (
            PACKAGE_DEADLINE_FACTOR if scope["path"].startswith(PACKAGES) else 1
        )
        started = False

        async def timed_receive():
            try:
                return await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise BodyTooSlow() from None

        async def watched_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, timed_receive, watched_send)
        except BodyTooSlow:
            if not started:
                await refuse(
                    send, 408, f"the request's body did not arrive within {rule['api_body_deadline_s']:g} s"
                )
        finally:
            if address is not None:
                self.in_flight[address] -= 1
                if not self.in_flight[address]:
                    del self.in_flight[address]


class BodyTooSlow(Exception):
    """The client did not send its body in time."""
