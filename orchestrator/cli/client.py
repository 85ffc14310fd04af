"""A small client of gpuq's REST API, for the CLI (which talks only to the API).

Where: GPUQ_URL (default http://127.0.0.1:8000). Who: GPUQ_TOKEN, else the token file
`$GPUQ_HOME/admin.token` that `gpuq up` writes.
"""

from __future__ import annotations

import os

import httpx

from orchestrator.core.paths import gpuq_home


class ApiUnavailable(Exception):
    pass


class ApiRefused(Exception):
    def __init__(self, status: int, detail):
        self.status, self.detail = status, detail
        if isinstance(detail, list):
            text = "; ".join(f"{d.get('field')}: {d.get('message')}" for d in detail)
        else:
            text = str(detail)
        super().__init__(text)


def default_url() -> str:
    return os.environ.get("GPUQ_URL", "http://127.0.0.1:8000").rstrip("/")


def default_token() -> str | None:
    if os.environ.get("GPUQ_TOKEN"):
        return os.environ["GPUQ_TOKEN"]
    path = gpuq_home() / "admin.token"
    return path.read_text().strip() if path.exists() else None


class Client:
    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 30.0):
        headers = {}
        token = token or default_token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.url = url or default_url()
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def request(self, method: str, path: str, **kwargs):
        try:
            r = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as e:
            raise ApiUnavailable(f"cannot reach gpuq at {self.url} ({e.__class__.__name__}); is it up? (scripts/up)") from None
        if r.status_code >= 400:
            self._refuse(r)
        return r.json()

    @staticmethod
    def _refuse(r: httpx.Response):
        try:
            detail = r.json().get("detail", r.text)
        except ValueError:
            detail = r.text
        if r.status_code == 503:
            raise ApiUnavailable(detail or "gpuq is unavailable; try again")
        raise ApiRefused(r.status_code, detail)

    def stream(self, path: str, **params):
        """A streamed answer's text, chunk by chunk, as the server writes it (a log
        follow). No read time-out: a quiet job may write nothing for hours."""
        params = {k: v for k, v in params.items() if v is not None}
        try:
            with self.http.stream("GET", path, params=params, timeout=httpx.Timeout(30.0, read=None)) as r:
                if r.status_code >= 400:
                    r.read()
                    self._refuse(r)
                yield from r.iter_text()
        except httpx.HTTPError as e:
            raise ApiUnavailable(f"lost gpuq at {self.url} ({e.__class__.__name__}); is it up? (scripts/up)") from None

    def get(self, path: str, **params):
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, json=None, headers=None):
        return self.request("POST", path, json=json or {}, headers=headers)

    def patch(self, path: str, json):
        return self.request("PATCH", path, json=json)
