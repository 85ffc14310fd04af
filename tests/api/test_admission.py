"""The API's admission (serve_app/admission.py), driven as the ASGI app it is: slow
bodies get 408, unauthenticated requests are capped per address, tokens are paced. No
Ray: the middleware sees the replica's gateway through one callable."""

import asyncio
import json

import pytest

from serve_app.admission import Admission
from serve_app.auth import TokenFile

SITE = {
    "api_body_deadline_s": 0.3,
    "api_unauthenticated_per_address": 3,
    "api_rate_per_token": 5.0,
    "api_burst_per_token": 10,
}


class Gw:
    def __init__(self, tmp_path):
        self.site = SITE
        self.tokens = TokenFile(tmp_path / "tokens.json")
        self.alice = self.tokens.create("alice", "user", by="test")[0]
        self.admin = self.tokens.create("root", "admin", by="test")[0]


async def echo(scope, receive, send):
    """The app behind: reads the whole body, answers 200 with its length."""
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(len(body)).encode()})


def request(admission, token=None, parts=(b"{}",), gap=0.0, client="10.0.0.7", path="/queue/submit"):
    """Send one request whose body comes in `parts`, `gap` seconds apart; its status."""
    headers = [(b"authorization", f"Bearer {token}".encode())] if token else []
    scope = {"type": "http", "method": "POST", "path": path, "headers": headers, "client": (client, 5000)}
    left = list(parts)
    said = {}

    async def receive():
        if gap:
            await asyncio.sleep(gap)
        chunk = left.pop(0) if left else b""
        return {"type": "http.request", "body": chunk, "more_body": bool(left)}

    async def send(message):
        if message["type"] == "http.response.start":
            said["status"] = message["status"]
            said["headers"] = dict(message["headers"])
        else:
            said.setdefault("body", message.get("body", b""))

    async def run():
        await admission(scope, receive, send)
        return said

    return run()


@pytest.fixture
def gw(tmp_path):
    return Gw(tmp_path)


def test_a_body_that_does_not_arrive_in_time_gets_408(gw):
    admission = Admission(echo, lambda: gw)
    slow = asyncio.run(request(admission, gw.alice, parts=[b"{", b"}"], gap=0.2))
    assert slow["status"] == 408 and b"did not arrive within 0.3 s" in slow["body"]
    assert asyncio.run(request(admission, gw.alice, parts=[b"{", b"}"], gap=0.05))["status"] == 200


def test_requests_without_a_token_are_capped_per_address_not_for_others(gw):
    admission = Admission(echo, lambda: gw)

    async def crowd():
        held = [asyncio.create_task(request(admission, parts=[b"{", b"}"], gap=0.1)) for _ in range(3)]
        await asyncio.sleep(0.02)  # the three hold their slots, sending slowly
        over = await request(admission)
        elsewhere = await request(admission, client="10.0.0.8")
        with_token = await request(admission, gw.alice)
        return over, elsewhere, with_token, await asyncio.gather(*held)

    over, elsewhere, with_token, held = asyncio.run(crowd())
    assert over["status"] == 429 and b"limit per address" in over["body"]
    assert elsewhere["status"] == 200 and with_token["status"] == 200
    assert [h["status"] for h in held] == [200, 200, 200]
    assert admission.in_flight == {}  # every slot given back


def test_a_token_past_its_rate_gets_429_with_retry_after_and_an_admin_is_not_paced(gw):
    admission = Admission(echo, lambda: gw)

    async def burst(token, n):
        return [await request(admission, token) for _ in range(n)]

    alice = asyncio.run(burst(gw.alice, 12))
    assert [a["status"] for a in alice] == [200] * 10 + [429] * 2
    assert alice[-1]["headers"][b"retry-after"] == b"1"
    assert "api_rate_per_token" in json.loads(alice[-1]["body"])["detail"]
    assert {a["status"] for a in asyncio.run(burst(gw.admin, 30))} == {200}
