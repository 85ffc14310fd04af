"""A small client of gpuq's REST API, for the CLI (which talks only to the API).

Where and who: the cluster and token clusters.py resolves (`gpuq --cluster NAME`,
GPUQ_URL and GPUQ_TOKEN, the user's config file, or this machine's admin token).

It is the standard library's http.client, not httpx: a CLI command should answer like
a shell tool (150 ms), and importing httpx costs 50-90 ms on this machine
because it loads its own command line (click and rich) at import. One keep-alive
connection serves every request of a command.
"""

from __future__ import annotations

import http.client
import json as _json
from urllib.parse import urlencode, urlsplit

from orchestrator.cli import clusters

# A laptop's user cannot start gpuq: they can check where they point.
NOT_THERE = "is gpuq up there, and is it the cluster you meant? (gpuq whoami, gpuq clusters)"


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


class Client:
    """The API at `url` with `token`; with neither, the cluster this command was pointed
    at (clusters.resolve)."""

    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 30.0):
        self.target: clusters.Target | None = None  # where and why, when resolved here
        if url is None:
            self.target = clusters.resolve()  # ConfigError: the CLI says why, exit 2
            url, token, where = self.target.url, token or self.target.token, self.target.url_from
        else:
            where = "the URL"
        self.url = url.rstrip("/")
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ApiUnavailable(f"{where} {self.url!r} should look like http://HOST:PORT")
        self._where = (parts.scheme, parts.hostname, parts.port, parts.path.rstrip("/"))
        self.timeout = timeout
        self.headers = {"Accept": "application/json", "User-Agent": "gpuq-cli"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            scheme, host, port, _ = self._where
            kind = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
            self._conn = kind(host, port, timeout=self.timeout)
        return self._conn

    def _send(
        self, method: str, path: str, params=None, json=None, headers=None, data: bytes | None = None
    ) -> http.client.HTTPResponse:
        target = self._where[3] + path + (f"?{urlencode(params, doseq=True)}" if params else "")
        body = data if json is None else _json.dumps(json).encode()
        kind = (
            {"Content-Type": "application/json"}
            if json is not None
            else ({"Content-Type": "application/octet-stream"} if data is not None else {})
        )
        head = {**self.headers, **(headers or {}), **kind}
        while True:
            reused = self._conn is not None
            conn = self._connection()
            try:
                conn.request(method, target, body=body, headers=head)
                return conn.getresponse()
            except (OSError, http.client.HTTPException) as e:
                self.close()
                # A kept-alive connection the server has closed fails at once: send again on a
                # new one. A fresh connection that fails is an answer: gpuq is not there.
                if not reused or isinstance(e, TimeoutError):
                    raise ApiUnavailable(
                        f"cannot reach gpuq at {self.url} ({e.__class__.__name__}); {NOT_THERE}"
                    ) from None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def request(
        self, method: str, path: str, params=None, json=None, headers=None, data: bytes | None = None
    ):
        r = self._send(method, path, params=params, json=json, headers=headers, data=data)
        try:
            data = r.read()
        except (OSError, http.client.HTTPException) as e:
            self.close()
            raise ApiUnavailable(f"lost gpuq at {self.url} ({e.__class__.__name__}); try again") from None
        if r.status >= 400:
            self._refuse(r.status, data)
        try:
            return _json.loads(data)
        except ValueError:
            raise ApiUnavailable(
                f"gpuq at {self.url} answered {r.status} with no JSON; is GPUQ_URL gpuq's API?"
            ) from None

    @staticmethod
    def _refuse(status: int, data: bytes):
        text = data.decode(errors="replace")
        try:
            detail = _json.loads(text).get("detail", text)
        except (ValueError, AttributeError):
            detail = text
        if status == 503:
            raise ApiUnavailable(detail or "gpuq is unavailable; try again")
        raise ApiRefused(status, detail)

    def stream(self, path: str, **params):
        """A streamed answer's bytes, chunk by chunk, as the server writes them (a log
        follow: a job's bytes, whatever their encoding). No read time-out once the
        answer starts: a quiet job may write nothing for hours. A stream cut before its
        end raises ApiUnavailable; whoever counted the bytes may ask again from there."""
        params = {k: v for k, v in params.items() if v is not None}
        r = self._send("GET", path, params=params)
        if r.status >= 400:
            self._refuse(r.status, r.read())
        if self._conn is not None and self._conn.sock is not None:
            self._conn.sock.settimeout(None)
        try:
            while chunk := r.read1(65536):
                yield chunk
        except (OSError, http.client.HTTPException) as e:
            raise ApiUnavailable(f"lost gpuq at {self.url} ({e.__class__.__name__}); {NOT_THERE}") from None
        finally:
            self.close()

    def get(self, path: str, **params):
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, json=None, headers=None):
        return self.request("POST", path, json=json or {}, headers=headers)

    def patch(self, path: str, json):
        return self.request("PATCH", path, json=json)

    def put(self, path: str, data: bytes):
        return self.request("PUT", path, data=data)

    def exists(self, path: str) -> bool:
        """GET that answers 200 (True) or 404 (False)."""
        try:
            self.request("GET", path)
        except ApiRefused as e:
            if e.status == 404:
                return False
            raise
        return True
