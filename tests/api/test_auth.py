"""Who may do what: tokens, roles, rights and the read switch (no server needed)."""

import json
import os

import pytest
from starlette.requests import Request

from orchestrator.core.errors import Forbidden, InvalidSpec
from orchestrator.core.priority import Priority
from orchestrator.core.rights import Caller, check_preemptible, check_priority
from serve_app import token_admin
from serve_app.auth import Principal, TokenFile, TokenRefused
from serve_app.errors import ApiError
from serve_app.gateway import Gateway
from serve_app.visibility import job_for

MAX = {"user": "HIGH", "admin": "CRITICAL"}


def request(token: str | None = None) -> Request:
    headers = [(b"authorization", f"Bearer {token}".encode())] if token else []
    return Request({"type": "http", "method": "GET", "path": "/", "headers": headers})


@pytest.fixture
def tokens(tmp_path) -> TokenFile:
    tf = TokenFile(tmp_path / "tokens.json")
    tf.create("alice", "user", by="test", token="a-token")
    tf.create("root", "admin", by="test", token="root-token")
    return tf


def test_tokens_are_kept_hashed_in_a_private_file(tokens):
    text = tokens.path.read_text()
    assert "a-token" not in text and "root-token" not in text
    assert os.stat(tokens.path).st_mode & 0o777 == 0o600
    assert {e["user"] for e in json.loads(text)["tokens"]} == {"alice", "root"}


def test_tokens_map_to_users_and_roles(tokens):
    assert tokens.authenticate("Bearer a-token").user == "alice"
    assert tokens.authenticate("Bearer root-token").admin
    assert tokens.authenticate(None) is None and tokens.authenticate("a-token") is None
    with pytest.raises(TokenRefused):
        tokens.authenticate("Bearer nope")


def test_a_revoked_token_is_refused_and_a_new_one_accepted_by_a_reader_of_the_same_file(tokens):
    api_side = TokenFile(tokens.path)  # another process's view, as the API replica has
    assert api_side.authenticate("Bearer a-token").user == "alice"
    alice_id = next(e["id"] for e in tokens.listing() if e["user"] == "alice")
    new, entry = tokens.create("bob", "user", by="root")
    tokens.revoke(alice_id)
    with pytest.raises(TokenRefused):
        api_side.authenticate("Bearer a-token")
    assert api_side.authenticate(f"Bearer {new}") == Principal("bob", "user", entry["id"])


def test_an_expired_token_is_refused_saying_so(tokens):
    token, _ = tokens.create("carol", "user", by="root", expires_at=1000.0)
    assert tokens.authenticate(f"Bearer {token}", now=999.0).user == "carol"
    with pytest.raises(TokenRefused, match="expired"):
        tokens.authenticate(f"Bearer {token}", now=1000.0)
    assert next(e for e in tokens.listing(now=1001.0) if e["user"] == "carol")["expired"]


def test_the_listing_never_shows_a_secret_or_hash(tokens):
    for entry in tokens.listing():
        assert set(entry) == {
            "id",
            "user",
            "role",
            "created_at",
            "created_by",
            "expires_at",
            "expired",
            "last_used_at",
        }


def test_an_older_plain_tokens_file_still_works_and_is_rewritten_hashed(tmp_path):
    path = tmp_path / "tokens.json"
    path.write_text(
        json.dumps({"old-token": {"user": "alice", "role": "user"}, "odd": {"user": "x", "role": "su"}})
    )
    tf = TokenFile(path)
    assert tf.authenticate("Bearer old-token").user == "alice"
    with pytest.raises(TokenRefused):
        tf.authenticate("Bearer odd")  # an unknown role is no role
    tf.upgrade()
    assert "old-token" not in path.read_text() and tf.authenticate("Bearer old-token").user == "alice"


def test_users_act_for_themselves_admins_for_everyone_readers_for_no_one():
    assert Principal("alice", "user").may_act_for("alice")
    assert not Principal("alice", "user").may_act_for("bob")
    assert Principal("root", "admin").may_act_for("bob")
    assert not Principal("prometheus", "reader").may_act_for("prometheus")


def test_others_see_a_jobs_shape_not_its_command_or_env():
    job = {
        "id": "j1",
        "user": "alice",
        "state": "running",
        "spec": {"run_id": "r", "user": "alice", "gpu_count": 2, "command": "secret", "env": {"K": "v"}},
    }
    assert job_for(Principal("alice", "user"), job) == job
    assert job_for(Principal("root", "admin"), job) == job
    seen = job_for(Principal("bob", "user"), job)
    assert seen["private"] and seen["spec"] == {"run_id": "r", "user": "alice", "gpu_count": 2}
    assert "secret" not in json.dumps(job_for(None, job))


@pytest.mark.parametrize("auth_reads", [False, True])
def test_reads_need_a_token_unless_the_site_opens_them(tokens, auth_reads):
    gw = Gateway(str(tokens.path), auth_reads)
    if auth_reads:
        with pytest.raises(ApiError) as exc:
            gw.who(request(), required=False)
        assert exc.value.status == 401
    else:
        assert gw.who(request(), required=False) is None
    assert gw.who(request("a-token"), required=False).user == "alice"
    with pytest.raises(ApiError):
        gw.who(request(), required=True)  # mutations: always
    with pytest.raises(ApiError) as exc:
        gw.who(request("wrong"), required=False)  # a bad token is never taken for none
    assert exc.value.status == 401


# --- priority rights (Slurm's QOS idea) -----------------------------------------------


def test_users_may_go_up_to_high_admins_to_critical():
    check_priority(Caller("alice", "user"), Priority.HIGH, None, MAX, {})
    with pytest.raises(Forbidden, match="up to HIGH") as exc:
        check_priority(Caller("alice", "user"), Priority.CRITICAL, None, MAX, {})
    assert exc.value.right == "priority"
    check_priority(Caller("root", "admin"), Priority.CRITICAL, None, MAX, {})


def test_a_grant_lifts_one_user_and_lowering_is_always_allowed():
    check_priority(Caller("alice", "user"), Priority.CRITICAL, None, MAX, {"alice": "CRITICAL"})
    with pytest.raises(Forbidden):
        check_priority(Caller("bob", "user"), Priority.CRITICAL, Priority.NORMAL, MAX, {"alice": "CRITICAL"})
    check_priority(Caller("bob", "user"), Priority.LOW, Priority.CRITICAL, MAX, {})


def test_only_admins_and_granted_users_may_refuse_preemption():
    check_preemptible(Caller("alice", "user"), True, {})
    with pytest.raises(Forbidden) as exc:
        check_preemptible(Caller("alice", "user"), False, {})
    assert exc.value.right == "non-preemptible"
    check_preemptible(Caller("alice", "user"), False, {"alice": "HIGH"})
    check_preemptible(Caller("root", "admin"), False, {})


# --- who may be given a token ------------------------------------------------------------


def test_a_single_user_install_refuses_tokens_for_others_unless_the_site_accepts_it(monkeypatch):
    monkeypatch.setattr(token_admin, "multi_user", lambda: False)
    monkeypatch.setattr(token_admin, "service_account", lambda: "svc")
    with pytest.raises(Forbidden, match="single-user install"):
        token_admin.check_new("alice", "user", {})
    token_admin.check_new("alice", "user", {"allow_shared_account": True})
    token_admin.check_new("svc", "admin", {})
    token_admin.check_new("prometheus", "reader", {})  # readers run nothing


def test_a_multi_user_install_refuses_a_token_for_a_name_with_no_account(monkeypatch):
    monkeypatch.setattr(token_admin, "multi_user", lambda: True)
    monkeypatch.setattr("orchestrator.host.accounts.multi_user", lambda: True)
    with pytest.raises(InvalidSpec) as exc:
        token_admin.check_new("no-such-account-here", "user", {})
    assert exc.value.errors[0][0] == "user" and "no Unix account" in exc.value.errors[0][1]
    for system in ("root", "daemon"):  # jobs run as people's accounts only
        with pytest.raises(InvalidSpec, match="root|system account"):
            token_admin.check_new(system, "user", {})
    token_admin.check_new(
        "daemon", "user", {"allowed_system_accounts": ["daemon"]}
    )  # unless the site says so
    token_admin.check_new("root", "reader", {})  # a reader runs nothing
    with pytest.raises(InvalidSpec):
        token_admin.check_new("alice", "superuser", {})
