"""The REST API: a FastAPI app served by Ray Serve, talking to the orchestrator actor.

Shapes follow the seed document (POST /queue/submit, GET /orchestrator/status);
everything else is added under new paths and keys. Every route but the health check,
Ray's version probe and the web page's static files needs a bearer token
(serve_app/auth.py) unless a site opens reads (`api_auth_reads = false`); what one
user may see of another's job is decided in serve_app/visibility.py, who may ask for
which priority in orchestrator/rights.py.
Errors: 401 no, unknown, revoked or expired token, 403 a right is missing (not your
job, a priority above yours, admin only), 404 unknown job, 409 illegal transition,
413 body too large, 422 invalid input naming the field, 503 orchestrator unavailable
(with Retry-After; nothing was accepted).
"""


import asyncio
import json
import time
from pathlib import Path

import ray
from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST
from ray import serve

from orchestrator.backend import NAMESPACE, ORCHESTRATOR_NAME
from orchestrator.durations import parse_duration
from orchestrator.errors import Forbidden, GpuqError, IllegalTransition, InvalidSpec, JobNotFound
from orchestrator.rights import Caller
from serve_app import rayjobs, token_admin
from serve_app.auth import Principal, TokenFile, TokenRefused, tokens_path
from serve_app.visibility import job_for

MAX_BODY_BYTES = 64 * 1024
RETRY_AFTER_S = 2

app = FastAPI(title="gpuq", description="GPU job queue on Ray", version="0.1.0")


class ApiError(Exception):
    def __init__(self, status: int, detail, headers: dict | None = None):
        self.status, self.detail, self.headers = status, detail, headers or {}


@app.exception_handler(ApiError)
async def _api_error(request: Request, exc: ApiError):
    return JSONResponse({"success": False, "detail": exc.detail}, exc.status, headers=exc.headers)


@app.exception_handler(RequestValidationError)
async def _validation(request: Request, exc: RequestValidationError):
    errors = [{"field": ".".join(str(p) for p in e["loc"] if p != "body") or "body", "message": e["msg"]} for e in exc.errors()]
    return JSONResponse({"success": False, "detail": errors}, 422)


def _message(e: Exception) -> str:
    """The error's own message. An error raised in the orchestrator arrives wrapped by
    Ray, whose text is a traceback (pids, addresses, paths): never shown to a client."""
    return str(getattr(e, "cause", None) or e)


def _errors(e: InvalidSpec) -> list[dict]:
    return [{"field": f, "message": m} for f, m in e.errors]


def _only(body: dict, allowed: set[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ApiError(422, [{"field": f, "message": f"is not a field here (allowed: {', '.join(sorted(allowed))})"}
                             for f in unknown])


def _gpus(body: dict) -> list[int] | None:
    gpus = body.get("gpus")
    if gpus is None:
        return None
    if not isinstance(gpus, list) or not all(isinstance(g, int) and not isinstance(g, bool) for g in gpus):
        raise ApiError(422, [{"field": "gpus", "message": "must be a list of GPU indices, e.g. [3] or [0, 1]"}])
    return gpus


WEB = Path(__file__).resolve().parent / "web"
WEB_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
# The page loads nothing from anywhere else, and the browser is told so.
WEB_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


def _web_file(name: str) -> Response:
    path = WEB / name
    if path.parent != WEB or path.suffix not in WEB_TYPES or not path.is_file():
        raise ApiError(404, f"no page {name}")
    return Response(path.read_bytes(), media_type=WEB_TYPES[path.suffix], headers=WEB_HEADERS)


def _since(text: str) -> float:
    try:
        value = float(text)
        if value > 1e9:  # epoch seconds; a smaller number is a duration in seconds
            return value
    except ValueError:
        pass
    try:
        return time.time() - parse_duration(text)
    except ValueError:
        raise ApiError(422, [{"field": "since", "message": "must be a duration back from now (7d, 12h, 30m) "
                                                           "or epoch seconds"}]) from None


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0})
@serve.ingress(app)
class GpuqAPI:
    def __init__(self, tokens_file: str | None = None, auth_reads: bool = True, site: dict | None = None):
        # The replica runs in its own process: where the tokens are, and the site's rules
        # for them, are passed in, not inherited.
        self._tokens = TokenFile(tokens_file)
        self._read_auth = auth_reads
        self._site = site or {}

    # --- plumbing -------------------------------------------------------------------

    async def _call(self, method: str, *args):
        try:
            orch = ray.get_actor(ORCHESTRATOR_NAME, namespace=NAMESPACE)
            return await asyncio.wait_for(getattr(orch, method).remote(*args), 30)
        except InvalidSpec as e:
            raise ApiError(422, _errors(e)) from None
        except JobNotFound as e:
            raise ApiError(404, _message(e)) from None
        except Forbidden as e:
            raise ApiError(403, _message(e)) from None
        except IllegalTransition as e:
            raise ApiError(409, _message(e)) from None
        except GpuqError as e:
            raise ApiError(503, f"{_message(e)}; nothing was changed, try again",
                           {"Retry-After": str(RETRY_AFTER_S)}) from None
        except (ValueError, asyncio.TimeoutError, ray.exceptions.RayError):
            raise ApiError(503, "the orchestrator is unavailable; nothing was changed, try again",
                           {"Retry-After": str(RETRY_AFTER_S)}) from None

    def _who(self, request: Request | WebSocket, required: bool = True) -> Principal | None:
        """The token's principal. `required=False` is a read: it needs a token unless the
        site opened reads, and then None stands for anyone."""
        try:
            who = self._tokens.authenticate(request.headers.get("authorization"))
        except TokenRefused as e:
            raise ApiError(401, str(e), {"WWW-Authenticate": 'Bearer error="invalid_token"'}) from None
        if who is None and (required or self._read_auth):
            raise ApiError(401, "a valid bearer token is required (Authorization: Bearer <token>)",
                           {"WWW-Authenticate": "Bearer"})
        return who

    def _writer(self, request: Request) -> Principal:
        """A token that may change things: readers only read."""
        who = self._who(request)
        if who.role == "reader":
            raise ApiError(403, f"token {who.token_id} is read-only (role reader)")
        return who

    async def _private(self, request: Request | WebSocket, job_id: str) -> Principal:
        """A read of a job's private parts (command, env, output): its owner's and admins'."""
        return await self._owner_or_admin(self._who(request, required=False), job_id,
                                          "read its command, environment and output")

    async def _own(self, request: Request, job_id: str) -> Principal:
        """A change to a job: its owner's and admins'."""
        return await self._owner_or_admin(self._writer(request), job_id, "change it")

    async def _owner_or_admin(self, who: Principal | None, job_id: str, doing: str) -> Principal:
        job = await self._call("get_job", job_id)
        if who is None or not who.may_act_for(job["user"]):
            raise ApiError(403 if who else 401, f"job {job_id} belongs to {job['user']}; only its owner or an admin "
                                                f"may {doing}")
        return who

    async def _body(self, request: Request) -> dict:
        raw = await request.body()
        if len(raw) > MAX_BODY_BYTES:
            raise ApiError(413, f"request body is larger than {MAX_BODY_BYTES} bytes")
        try:
            data = json.loads(raw or b"{}")
        except ValueError:
            raise ApiError(422, [{"field": "body", "message": "is not valid JSON"}]) from None
        if not isinstance(data, dict):
            raise ApiError(422, [{"field": "body", "message": "must be a JSON object"}])
        return data

    def _admin(self, request: Request) -> Principal:
        who = self._who(request)
        if not who.admin:
            raise ApiError(403, f"you are {who.user}: only an admin may do this")
        return who

    # --- the web page ---------------------------------------------------------------

    @app.get("/", include_in_schema=False)
    async def page(self):
        """The web dashboard (serve_app/web): static files over this same API."""
        return _web_file("index.html")

    @app.get("/web/{name}", include_in_schema=False)
    async def web(self, name: str):
        return _web_file(name)

    @app.get("/whoami")
    async def whoami(self, request: Request):
        """Who the bearer token belongs to (the web page's sign-in)."""
        who = self._who(request)
        return {"user": who.user, "role": who.role}

    @app.get("/history")
    async def history(self, request: Request, window: float = 3600):
        """GPU allocation and measured utilization over the last hour, for the page's chart."""
        self._who(request, required=False)
        return await self._call("history", max(60.0, min(window, 3600.0)))

    # --- the seed's endpoints -------------------------------------------------------

    @app.post("/queue/submit")
    async def submit(self, request: Request):
        """Submit a job (the seed's body and answer). `user` defaults to the token's user.
        An `Idempotency-Key` header makes a retried submit return the first job."""
        who = self._writer(request)
        body = await self._body(request)
        body.setdefault("user", who.user)
        if not who.may_act_for(str(body["user"])):
            raise ApiError(403, f"you are {who.user}: you may submit only as yourself")
        key = request.headers.get("idempotency-key")
        if key is not None and not (0 < len(key) <= 200 and key.isprintable()):
            raise ApiError(422, [{"field": "Idempotency-Key", "message": "must be 1-200 printable characters"}])
        return await self._call("submit", body, key, who.caller)

    @app.get("/orchestrator/status")
    async def status(self, request: Request):
        self._who(request, required=False)
        return await self._call("status")

    # --- more ------------------------------------------------------------------------

    @app.get("/healthz")
    async def healthz(self):
        await self._call("ping")
        return {"ok": True}

    @app.get("/queue")
    async def queue(self, request: Request, limit: int = 100):
        self._who(request, required=False)
        return {"jobs": await self._call("queue_view", max(1, min(limit, 1000)))}

    @app.get("/jobs")
    async def jobs(self, request: Request, state: str | None = None, user: str | None = None, limit: int = 50, offset: int = 0):
        self._who(request, required=False)
        states = ("queued", "held", "scheduled", "allocating", "running", "preempted", "completed", "failed", "cancelled")
        if state is not None and state not in states:
            raise ApiError(422, [{"field": "state", "message": f"must be one of {', '.join(states)}"}])
        return await self._call("list_jobs", state, user, max(1, min(limit, 500)), max(0, offset))

    @app.get("/jobs/{job_id}")
    async def job(self, request: Request, job_id: str):
        """A job with its history; its command, env and working directory only for its
        owner and admins (serve_app/visibility.py)."""
        who = self._who(request, required=False)
        return job_for(who, await self._call("get_job", job_id))

    @app.post("/jobs/{job_id}/cancel")
    async def cancel(self, request: Request, job_id: str):
        who = await self._own(request, job_id)
        return await self._call("cancel", job_id, f"cancelled by {who.user}", who.caller)

    @app.post("/jobs/{job_id}/hold")
    async def hold(self, request: Request, job_id: str):
        who = await self._own(request, job_id)
        return await self._call("hold", job_id, who.caller)

    @app.post("/jobs/{job_id}/release")
    async def release(self, request: Request, job_id: str):
        who = await self._own(request, job_id)
        return await self._call("release", job_id, who.caller)

    @app.patch("/jobs/{job_id}")
    async def update(self, request: Request, job_id: str):
        who = await self._own(request, job_id)
        body = await self._body(request)
        unknown = set(body) - {"priority"}
        if unknown or "priority" not in body:
            raise ApiError(422, [{"field": f, "message": "is not a field you can change (only priority)"} for f in unknown]
                           or [{"field": "priority", "message": "is required"}])
        try:
            from orchestrator.job import Priority

            Priority.parse(body["priority"])
        except ValueError as e:
            raise ApiError(422, [{"field": "priority", "message": str(e)}]) from None
        return await self._call("set_priority", job_id, body["priority"], who.caller)

    @app.get("/jobs/{job_id}/logs")
    async def logs(self, request: Request, job_id: str, offset: int = 0, tail: int | None = None,
                   attempt: int | None = None, rank: int = 0, limit: int = 65536, follow: bool = False):
        """A slice of a job's output ({data, offset, size, done}); with follow=true, the
        output as a text stream from `offset` until the job ends. Its owner's and admins'."""
        await self._private(request, job_id)
        first = await self._call("logs", job_id, attempt, rank, max(0, offset), max(1, min(limit, 1 << 20)), tail)
        if not follow:
            return first

        async def stream():
            out = first
            while True:
                if out["data"]:
                    yield out["data"]
                if out.get("done") and not out["data"]:
                    return
                if not out["data"]:
                    await asyncio.sleep(0.25)
                out = await self._call("logs", job_id, attempt, rank, out["offset"], 1 << 20, None)

        return StreamingResponse(stream(), media_type="text/plain")

    @app.get("/metrics")
    async def metrics(self, request: Request):
        """Prometheus exposition of the orchestrator's registry (orchestrator/metrics.py)."""
        self._who(request, required=False)
        return Response(await self._call("metrics_text"), media_type=CONTENT_TYPE_LATEST)

    @app.get("/usage")
    async def usage(self, request: Request, since: str = "7d", until: float | None = None, user: str | None = None):
        """GPU-hours per user and per UTC day since `since` (a duration back from now,
        like 7d, 12h or 3600, or epoch seconds)."""
        self._who(request, required=False)
        return await self._call("usage_report", _since(since), until, user)

    @app.get("/nodes/events")
    async def node_events(self, request: Request, limit: int = 100):
        """The fleet's audit trail, newest first: drains, health findings, returns."""
        self._who(request, required=False)
        return {"events": await self._call("fleet_events", max(1, min(limit, 1000)))}

    @app.get("/audit")
    async def audit(self, request: Request, limit: int = 100, user: str | None = None, action: str | None = None,
                    since: str | None = None):
        """Admin: every change anyone asked for (submit, cancel, hold, release, priority,
        drain, undrain, token changes): who, when, what; newest first."""
        self._admin(request)
        return {"events": await self._call("audit_trail", max(1, min(limit, 10_000)), user, action,
                                           _since(since) if since else 0.0)}

    @app.post("/nodes/{node}/drain")
    async def drain(self, request: Request, node: str):
        """Admin: take a node's GPUs (all, or `gpus`) out of service. Body: reason
        (required), gpus, requeue (stop and requeue their jobs now; default: let them end)."""
        who = self._admin(request)
        body = await self._body(request)
        _only(body, {"reason", "gpus", "requeue"})
        if not isinstance(body.get("requeue", False), bool):
            raise ApiError(422, [{"field": "requeue", "message": "must be true or false"}])
        return await self._call("drain", node, _gpus(body), body.get("reason"), who.user, body.get("requeue", False))

    @app.post("/nodes/{node}/undrain")
    async def undrain(self, request: Request, node: str):
        """Admin: put a node's drained or unhealthy GPUs (all, or `gpus`) back in service."""
        who = self._admin(request)
        body = await self._body(request)
        _only(body, {"reason", "gpus"})
        return await self._call("undrain", node, _gpus(body), who.user, str(body.get("reason", "")))

    @app.post("/nodes/{node}/faults")
    async def inject(self, request: Request, node: str):
        """Admin: inject a fault into a *simulated* node's telemetry (xid, ecc,
        utilization, silent, resume), to exercise the health path. Refused on real NVML."""
        self._admin(request)
        body = await self._body(request)
        _only(body, {"fault", "gpu", "value"})
        gpu, value = body.get("gpu"), body.get("value")
        if gpu is not None and (not isinstance(gpu, int) or isinstance(gpu, bool)):
            raise ApiError(422, [{"field": "gpu", "message": "must be a GPU index"}])
        if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)):
            raise ApiError(422, [{"field": "value", "message": "must be a number"}])
        return {"result": await self._call("inject", node, str(body.get("fault")), gpu, value)}

    @app.get("/resources")
    async def resources(self, request: Request):
        self._who(request, required=False)
        return await self._call("resources")

    # --- tokens (admins) ---------------------------------------------------------------

    @app.post("/tokens")
    async def token_create(self, request: Request):
        """Admin: a new token for `user` with `role` (user, admin, reader), expiring after
        `expires` (90d, 12h; default never). The token is in the answer this once only."""
        who = self._admin(request)
        body = await self._body(request)
        _only(body, {"user", "role", "expires"})
        return await self._token_change(token_admin.create(self._tokens, who, body, self._site, self._record))

    @app.get("/tokens")
    async def token_list(self, request: Request):
        """Admin: every token's id, user, role, creation, expiry and last use; never a secret."""
        self._admin(request)
        return {"tokens": self._tokens.listing()}

    @app.delete("/tokens/{token_id}")
    async def token_revoke(self, request: Request, token_id: str):
        """Admin: revoke a token; it is refused from the next request on."""
        who = self._admin(request)
        return await self._token_change(token_admin.revoke(self._tokens, who, token_id, self._record))

    async def _record(self, by: Caller, action: str, target: str, detail: dict) -> None:
        await self._call("record", by, action, target, detail)

    async def _token_change(self, change):
        try:
            return await change
        except InvalidSpec as e:
            raise ApiError(422, _errors(e)) from None
        except Forbidden as e:
            raise ApiError(403, str(e)) from None
        except token_admin.UnknownToken as e:
            raise ApiError(404, str(e)) from None

    # --- Ray's Jobs API (what `ray job submit/status/logs/stop/list` call) -------------

    @app.get("/api/version")
    async def ray_version(self):
        return {"version": "4", "ray_version": ray.__version__, "ray_commit": getattr(ray, "__commit__", ""),
                "session_name": "gpuq"}

    @app.post("/api/jobs/")
    async def ray_submit(self, request: Request):
        who = self._writer(request)
        body = await self._body(request)
        try:
            spec, key = rayjobs.spec_from_ray(body, who.user)
        except rayjobs.Refused as e:
            raise ApiError(422, [{"field": e.field, "message": e.message}]) from None
        if not who.may_act_for(str(spec["user"])):
            raise ApiError(403, f"you are {who.user}: you may submit only as yourself")
        out = await self._call("submit", spec, key, who.caller)
        return {"job_id": out["job_id"], "submission_id": out["job_id"]}

    @app.get("/api/jobs/")
    async def ray_list(self, request: Request):
        who = self._who(request, required=False)
        listed = await self._call("list_jobs", None, None, 500, 0)
        return [rayjobs.details(job_for(who, await self._call("get_job", j["id"]))) for j in listed["jobs"]]

    @app.get("/api/jobs/{job_id}")
    async def ray_info(self, request: Request, job_id: str):
        who = self._who(request, required=False)
        return rayjobs.details(job_for(who, await self._call("get_job", job_id)))

    @app.get("/api/jobs/{job_id}/logs")
    async def ray_logs(self, request: Request, job_id: str):
        await self._private(request, job_id)
        out = await self._call("logs", job_id, None, 0, 0, 1 << 20, None)
        return {"logs": out["data"]}

    @app.post("/api/jobs/{job_id}/stop")
    async def ray_stop(self, request: Request, job_id: str):
        who = await self._own(request, job_id)
        job = await self._call("get_job", job_id)
        if rayjobs.STATUS[job["state"]] in rayjobs.TERMINAL:
            return {"stopped": False}
        await self._call("cancel", job_id, f"stopped by {who.user} (ray job stop)", who.caller)
        return {"stopped": True}

    @app.delete("/api/jobs/{job_id}")
    async def ray_delete(self, request: Request, job_id: str):
        await self._own(request, job_id)
        raise ApiError(400, "gpuq keeps every job's record (its history is the audit trail); nothing was deleted")

    @app.websocket("/api/jobs/{job_id}/logs/tail")
    async def ray_tail(self, ws: WebSocket, job_id: str):
        """Stream the job's output as it is written; close when the job is finished.
        Its owner's and admins' only, like every read of a job's output."""
        try:
            await self._private(ws, job_id)
        except ApiError as e:
            # Refused in the handshake, as an HTTP answer where the server can send one.
            await ws.send_denial_response(JSONResponse({"success": False, "detail": e.detail}, e.status,
                                                       headers=e.headers))
            return
        await ws.accept()
        offset, attempt = 0, None
        try:
            while True:
                job = await self._call("get_job", job_id)
                done = rayjobs.STATUS[job["state"]] in rayjobs.TERMINAL
                if job["attempts"] and attempt != job["attempts"]:
                    attempt, offset = job["attempts"], 0  # a retry: its output starts anew
                if attempt:
                    out = await self._call("logs", job_id, attempt, 0, offset, 1 << 20, None)
                    if out["data"]:
                        await ws.send_text(out["data"])
                    offset = out["offset"]
                    if done and out["data"]:
                        continue  # drain what the last read did not reach
                if done:
                    break
                await asyncio.sleep(0.25)
        except (ApiError, WebSocketDisconnect):
            pass
        await ws.close()


def deploy(host: str = "127.0.0.1", port: int = 8000, tokens_file: str | None = None, auth_reads: bool = True,
           site: dict | None = None) -> str:
    """Run the API on Ray Serve (loopback unless told otherwise); returns its URL.
    `site`: the site config's unix_users and allow_shared_account (token rules)."""
    serve.start(http_options={"host": host, "port": port})
    serve.run(GpuqAPI.bind(str(tokens_file or tokens_path()), auth_reads, site or {}), name="gpuq", route_prefix="/")
    return f"http://{host}:{port}"
