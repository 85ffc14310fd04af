"""The REST API: a FastAPI app served by Ray Serve, talking to the orchestrator actor.

POST /queue/submit and GET /orchestrator/status keep the API's first shapes (README);
everything else is added under new paths and keys. The routes are in routes/, one
module per resource; request bodies in models.py; who may do what in gateway.py
(tokens: auth.py, what one user sees of another's job: visibility.py, priorities:
orchestrator/core/rights.py); every error body and status in errors.py; bounds checked
before any work in limits.py. /docs is the whole contract, served offline.
"""

from __future__ import annotations

from fastapi import Depends, FastAPI
from fastapi.exceptions import RequestValidationError
from ray import serve
from starlette.exceptions import HTTPException

from orchestrator.version import code_version
from serve_app import errors
from serve_app.admission import Admission
from serve_app.auth import tokens_path
from serve_app.gateway import Gateway, install, installed
from serve_app.limits import BodyLimits
from serve_app.models import strict_query
from serve_app.routes import cluster, jobs, nodes, packages, ray_jobs, tokens, web

app = FastAPI(
    title="gpuq",
    description="GPU job queue on Ray. Every route but /healthz, /api/version and the web "
    "page needs a bearer token (reads, unless the site opened them).",
    version="0.1.0",
    docs_url=None,
    redoc_url=None,
    dependencies=[Depends(strict_query)],
)
app.add_middleware(BodyLimits)
# Added last, so it runs first: the request's token and pace are judged before its body.
app.add_middleware(Admission, gateway=installed)
# Starlette types a handler as taking any Exception; each of these takes the one it is for.
app.add_exception_handler(errors.ApiError, errors.on_api_error)  # type: ignore[arg-type]
app.add_exception_handler(RequestValidationError, errors.on_validation)  # type: ignore[arg-type]
app.add_exception_handler(HTTPException, errors.on_http)  # type: ignore[arg-type]
app.add_exception_handler(Exception, errors.on_bug)


for module in (jobs, cluster, nodes, tokens, ray_jobs, packages, web):
    app.include_router(module.router)
web.mount(app)

# Each log follower holds a request for its whole life. Serve's default of 5 ongoing
# requests per replica let five followers freeze the API; the handlers
# are async and a follower costs little (follow.py), so the bound that matters is the
# stream cap in limits.py, not Serve's.
MAX_ONGOING_REQUESTS = 1000
# The control plane stays on the head, beside the orchestrator and its store: a GPU node's
# death must not take the API with it. The replica is pinned by the head's
# own resource; the proxy that owns the API's address runs on the head only.
ON_HEAD = {"node:__internal_head__": 0.001}


@serve.deployment(
    num_replicas=1,
    max_ongoing_requests=MAX_ONGOING_REQUESTS,
    ray_actor_options={"num_cpus": 0, "resources": ON_HEAD},
)
@serve.ingress(app)
class GpuqAPI:
    def __init__(self, tokens_file: str | None = None, auth_reads: bool = True, site: dict | None = None):
        # The replica runs in its own process: where the tokens are, and the site's rules
        # for them, are passed in, not inherited.
        install(Gateway(str(tokens_file or tokens_path()), auth_reads, site))
        self.code = code_version()

    def code_version(self) -> str:
        """The code this replica runs (deploy() asks it through a handle, not HTTP)."""
        return self.code


def deploy(
    host: str = "127.0.0.1",
    port: int = 8000,
    tokens_file: str | None = None,
    auth_reads: bool = True,
    site: dict | None = None,
) -> str:
    """Run the API on Ray Serve (loopback unless told otherwise); returns its URL.
    `site`: the site config's unix_users and allow_shared_account (token rules)."""
    serve.start(proxy_location="HeadOnly", http_options={"host": host, "port": port})
    try:  # `gpuq up` again replaces a running replica only when the code changed
        running = serve.get_app_handle("gpuq").code_version.remote().result(timeout_s=10)
    except Exception:
        running = None
    if running == code_version():
        return f"http://{host}:{port}"
    serve.run(
        GpuqAPI.bind(str(tokens_file or tokens_path()), auth_reads, site or {}),  # type: ignore[attr-defined]
        name="gpuq",
        route_prefix="/",
    )
    return f"http://{host}:{port}"
