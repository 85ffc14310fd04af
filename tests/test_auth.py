"""Who may do what: tokens, roles and the read switch (no server needed)."""

import asyncio
import json

import pytest
from starlette.requests import Request

from serve_app.api import ApiError, GpuqAPI
from serve_app.auth import Principal, authenticate, load_tokens


def request(token: str | None = None) -> Request:
    headers = [(b"authorization", f"Bearer {token}".encode())] if token else []
    return Request({"type": "http", "method": "GET", "path": "/", "headers": headers})


@pytest.fixture
def tokens(tmp_path):
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"a-token": {"user": "alice"}, "root-token": {"user": "root", "role": "admin"},
                                "odd-token": {"user": "eve", "role": "superuser"}}))
    return path


def test_tokens_map_to_users_and_roles_and_unknown_roles_are_ignored(tokens):
    known = load_tokens(tokens)
    assert known["a-token"] == Principal("alice", "user") and known["root-token"].admin
    assert "odd-token" not in known
    assert authenticate("Bearer a-token", known).user == "alice"
    assert authenticate("Bearer nope", known) is None and authenticate("a-token", known) is None


def test_users_act_for_themselves_admins_for_everyone():
    assert Principal("alice", "user").may_act_for("alice")
    assert not Principal("alice", "user").may_act_for("bob")
    assert Principal("root", "admin").may_act_for("bob")


@pytest.mark.parametrize("auth_reads", [False, True])
def test_reads_need_a_token_only_when_the_site_says_so(tokens, auth_reads):
    cls = GpuqAPI.func_or_class
    api = cls.__new__(cls)
    init = cls.__init__(api, str(tokens), auth_reads)  # Serve's ingress makes __init__ a coroutine
    if init is not None:
        asyncio.run(init)
    if auth_reads:
        with pytest.raises(ApiError) as exc:
            api._who(request(), required=False)
        assert exc.value.status == 401
    else:
        assert api._who(request(), required=False) is None
    assert api._who(request("a-token"), required=False).user == "alice"
    with pytest.raises(ApiError):
        api._who(request(), required=True)  # mutations: always
