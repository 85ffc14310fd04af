"""No client ever sees a traceback: every HTTP answer the suite receives through httpx,
and every CLI run, is scanned for the marks of one (conftest installs the scan)."""

from __future__ import annotations

import httpx

MARKS = ("Traceback", 'File "', "ray::")


def assert_clean(text: str, where: str) -> None:
    found = [m for m in MARKS if m in text]
    assert not found, f"{where} shows a traceback ({', '.join(found)}): {text[:2000]}"


def _check(response: httpx.Response) -> None:
    # A job's output is its own and may hold anything (a Python job's traceback): a
    # streamed answer (log follow) or a log read is not gpuq's message.
    if not response.is_closed or "/logs" in response.request.url.path:
        return
    if (
        response.headers.get("content-type", "").startswith(("application/json", "text/html"))
        or response.is_error
    ):
        assert_clean(
            response.text, f"{response.request.method} {response.request.url.path} ({response.status_code})"
        )


def install(monkeypatch) -> None:
    send, asend = httpx.Client.send, httpx.AsyncClient.send

    def checked(self, request, **kwargs):
        response = send(self, request, **kwargs)
        _check(response)
        return response

    async def achecked(self, request, **kwargs):
        response = await asend(self, request, **kwargs)
        _check(response)
        return response

    monkeypatch.setattr(httpx.Client, "send", checked)
    monkeypatch.setattr(httpx.AsyncClient, "send", achecked)
