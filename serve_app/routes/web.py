"""The web page (serve_app/web) and the API's own docs, both served from this process:
nothing is fetched from anywhere else, so they work on an air-gapped cluster, and the
browser is told so (a Content-Security-Policy that allows only this origin).

Swagger UI's files come from the fastapi-offline package; the page that starts it is
ours (docs.html, docs.js), because the one FastAPI writes has an inline script that
this policy forbids."""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter
from fastapi.responses import FileResponse
from starlette.staticfiles import StaticFiles

WEB = Path(__file__).resolve().parent.parent / "web"
SWAGGER = Path(fastapi_offline.__file__).resolve().parent / "static"
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


class Files(StaticFiles):
    """Static files with the page's headers."""

    def file_response(self, *args, **kwargs):
        response = super().file_response(*args, **kwargs)
        response.headers.update(HEADERS)
        return response


@router.get("/")
async def page():
    """The web dashboard: static files over this same API."""
    return FileResponse(WEB / "index.html", headers=HEADERS)


@router.get("/docs")
async def docs():
    """The API's reference (Swagger UI over /openapi.json)."""
    return FileResponse(WEB / "docs.html", headers=HEADERS)


def mount(app) -> None:
    app.mount("/web", Files(directory=WEB), name="web")
    app.mount("/docs/assets", Files(directory=SWAGGER), name="swagger")
