"""A shared install, tried as its users would: jobs run as their own Unix accounts, see a
clean environment, cannot read the service's secrets or each other's logs; rights
decide who may use which priority; tokens change live; reads need a token.

Real processes and real accounts: the suite runs as root in CI and creates throwaway
accounts (tests/accounts.py). Run as another user, gpuq is a single-user install and
these tests cannot be run (they are skipped, saying so).
"""

import asyncio
import grp
import json
import os
import pwd
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest
import websockets

from tests.accounts import LAB_GROUP, UNIX_USERS
from tests.orchestration import Harness, Shared
from tests.raycluster import wait_for

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="a multi-user install needs root (CI runs as root)")
]

ALICE = {"Authorization": "Bearer alice-token"}
BOB = {"Authorization": "Bearer bob-token"}
ADMIN = {"Authorization": "Bearer admin-token"}
READER = {"Authorization": "Bearer reader-token"}


@pytest.fixture(scope="module")
def open_dir():
    """A folder every account may enter (pytest's own are 0700, which would hide what is
    being tested: the modes gpuq gives its files)."""
    path = Path(tempfile.mkdtemp(prefix="gpuq-mu-"))
    os.chmod(path, 0o755)
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


@pytest.fixture(scope="module")
def shared_lab(ray_cluster, open_dir):
    shared = Shared(lambda: Harness(open_dir, priority_grants={"bob": "CRITICAL"}))
    yield shared
    shared.close()


@pytest.fixture
def lab(shared_lab):
    """An orchestrator whose store and job logs live in `open_dir`; bob has a CRITICAL grant.
    One for the module, idle at each test's start."""
    return shared_lab.get()


@pytest.fixture
def http(api, lab):
    with httpx.Client(base_url=api, timeout=30) as client:
        yield client


def output(harness: Harness, job_id: str) -> str:
    harness.wait_state(job_id, "completed", "failed")
    return harness.log(job_id)


def test_a_job_runs_as_its_user_with_their_groups_and_home(lab):
    job_id = lab.submit(
        'id -u; id -G; echo "home=$HOME user=$USER logname=$LOGNAME shell=$SHELL"; pwd', user="alice"
    )
    uid, groups, names, cwd = output(lab, job_id).splitlines()
    account = pwd.getpwnam(UNIX_USERS["alice"])
    assert int(uid) == account.pw_uid
    assert set(map(int, groups.split())) == {account.pw_gid, grp.getgrnam(LAB_GROUP).gr_gid}
    assert names == f"home={account.pw_dir} user={account.pw_name} logname={account.pw_name} shell=/bin/bash"
    assert cwd == account.pw_dir


def test_a_job_sees_a_clean_environment(lab):
    job_id = lab.submit("env -0", user="alice", env={"MY_SETTING": "42"})
    names = {kv.split("=", 1)[0]: kv.split("=", 1)[1] for kv in output(lab, job_id).split("\0") if "=" in kv}
    assert names["MY_SETTING"] == "42" and names["GPUQ_USER"] == "alice" and names["CUDA_VISIBLE_DEVICES"]
    gpuq_set = {"CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "MASTER_ADDR", "MASTER_PORT", "NODE_RANK"}
    base = {
        "PATH",
        "LANG",
        "TZ",
        "HOME",
        "USER",
        "LOGNAME",
        "SHELL",
        "PWD",
        "SHLVL",
        "_",
        "MY_SETTING",
        "TMPDIR",
    }
    unexpected = {n for n in names if n not in gpuq_set | base and not n.startswith(("GPUQ_", "PET_"))}
    assert not unexpected, f"the service's environment leaked into the job: {sorted(unexpected)}"
    assert not any(n.startswith("RAY_") for n in names)


def test_a_job_cannot_read_the_service_secrets_or_another_users_logs(lab, open_dir, monkeypatch):
    from serve_app.auth import ensure_admin_token

    monkeypatch.setenv("GPUQ_HOME", str(open_dir / "home"))
    admin_token = ensure_admin_token()
    secrets = [admin_token, open_dir / "home" / "tokens.json", open_dir / "gpuq.db"]
    for path in secrets:
        assert os.stat(path).st_mode & 0o077 == 0, f"{path} is readable by others"
    bobs = lab.submit("echo bob-secret-output", user="bob", run_id="bobs")
    assert output(lab, bobs) == "bob-secret-output\n"
    bob_dir = open_dir / "data" / lab.job(bobs)["placement"].split(":")[0] / "jobs" / bobs / "1" / "0"
    bob_log = bob_dir / "output.log"
    assert os.stat(bob_log).st_uid == pwd.getpwnam(UNIX_USERS["bob"]).pw_uid
    assert os.stat(bob_log).st_mode & 0o777 == 0o600 and os.stat(bob_dir).st_mode & 0o777 == 0o700

    tries = "; ".join(
        f"cat {p} > /dev/null 2>&1 && echo READ {p} || echo DENIED {p}" for p in [*secrets, bob_log]
    )
    attempt = lab.submit(tries, user="alice", run_id="snoop")
    lines = output(lab, attempt).splitlines()
    assert lines == [f"DENIED {p}" for p in [*secrets, bob_log]]
    assert (
        "Permission denied"
        in subprocess.run(
            ["runuser", "-u", UNIX_USERS["alice"], "--", "cat", str(bob_log)], capture_output=True, text=True
        ).stderr
    )


def test_a_log_swapped_for_a_link_to_a_secret_reads_as_nothing(lab, open_dir, monkeypatch):
    from serve_app.auth import ensure_admin_token

    monkeypatch.setenv("GPUQ_HOME", str(open_dir / "home"))
    secret = ensure_admin_token()
    job_id = lab.submit("echo first", user="alice")
    lab.wait_state(job_id, "completed")
    # The folder is alice's: she may replace her log with a link to the admin token, which
    # the root-run agent serves. It must not follow the link.
    folder = open_dir / "data" / lab.job(job_id)["placement"].split(":")[0] / "jobs" / job_id / "1" / "0"
    subprocess.run(
        ["runuser", "-u", UNIX_USERS["alice"], "--", "ln", "-sfn", str(secret), str(folder / "output.log")],
        check=True,
    )
    assert (folder / "output.log").is_symlink()
    assert lab.log(job_id) == ""


def test_a_user_without_a_home_folder_runs_in_the_jobs_private_folder_and_is_told(lab):
    job_id = lab.submit('pwd; echo "$TMPDIR"', user="drifter", max_retries=0)
    job = lab.wait_state(job_id, "completed", "failed")
    assert job["state"] == "completed" and job["retries"] == 0, lab.log(job_id)
    said, cwd, tmpdir = lab.log(job_id).splitlines()
    assert "has no home folder" in said and cwd == tmpdir.removesuffix("/tmp")
    assert any(e["trigger"] == "node" and "no home folder" in e["reason"] for e in job["events"])


def test_a_working_directory_that_is_not_there_fails_once_in_plain_words(lab):
    job_id = lab.submit("echo never", user="alice", working_dir="/no/such/place", max_retries=3)
    job = lab.wait_state(job_id, "failed", "completed")
    assert job["state"] == "failed" and job["attempts"] == 1 and job["retries"] == 0
    assert (
        job["failure_reason"]
        == "the working directory /no/such/place does not exist, or its user cannot enter it"
    )
    assert "never" not in lab.log(job_id)


def test_a_user_without_an_account_is_refused_at_submit(lab):
    with pytest.raises(Exception, match="no Unix account") as exc:
        lab.submit("true", user="nobody-at-all")
    assert "user" in str(exc.value)


def test_a_job_whose_account_is_gone_on_its_node_fails_and_is_not_retried(ray_cluster, open_dir):
    subprocess.run(["useradd", "--no-create-home", "gpuqt-ghost"], check=True, capture_output=True)
    try:
        ghost = Harness(open_dir, unix_users={**UNIX_USERS, "ghost": "gpuqt-ghost"})
        blocker = ghost.submit("sleep 300", gpus=16, user="alice")
        job_id = ghost.submit("true", user="ghost", max_retries=3, run_id="ghostly")  # its account exists now
    finally:
        subprocess.run(["userdel", "gpuqt-ghost"], check=True, capture_output=True)
    try:
        ghost.call("cancel", blocker)
        job = ghost.wait_state(job_id, "failed")
        assert (
            job["attempts"] == 1
            and job["retries"] == 0
            and "no Unix account for ghost" in job["failure_reason"]
        )
        assert "no Unix account 'gpuqt-ghost'" in ghost.log(job_id)
    finally:
        ghost.teardown()


# --- rights over the REST API ----------------------------------------------------------------


def test_alice_cannot_touch_bobs_job(http):
    job_id = http.post(
        "/queue/submit", json={"run_id": "bobs", "command": "sleep 300", "gpu_count": 16}, headers=BOB
    ).json()["job_id"]
    http.post("/queue/submit", json={"run_id": "bobs2", "command": "sleep 300", "gpu_count": 16}, headers=BOB)
    for method, path, body in [
        ("POST", "cancel", None),
        ("POST", "hold", None),
        ("PATCH", "", {"priority": "LOW"}),
    ]:
        r = http.request(method, f"/jobs/{job_id}/{path}".rstrip("/"), json=body, headers=ALICE)
        assert r.status_code == 403 and "belongs to bob" in r.json()["detail"]
    assert http.get(f"/jobs/{job_id}/logs", headers=ALICE).status_code == 403
    seen = http.get(f"/jobs/{job_id}", headers=ALICE).json()
    assert seen["private"] and "command" not in seen["spec"] and seen["gpu_count"] == 16
    assert http.get(f"/jobs/{job_id}", headers=BOB).json()["spec"]["command"] == "sleep 300"
    assert http.post(f"/jobs/{job_id}/cancel", headers=BOB).json()["state"] == "cancelled"


def test_critical_and_non_preemptible_need_a_grant(http, lab):
    spec = {"run_id": "urgent", "command": "sleep 300", "gpu_count": 16}
    r = http.post("/queue/submit", json={**spec, "priority": "CRITICAL"}, headers=ALICE)
    assert r.status_code == 403 and r.json()["detail"].startswith(
        "you are alice (user): you may use priorities up to HIGH"
    )
    assert "ray::" not in r.text and "Traceback" not in r.text  # the message, not Ray's wrapping of it
    r = http.post("/queue/submit", json={**spec, "preemptible": False}, headers=ALICE)
    assert r.status_code == 403 and "preemptible=false" in r.json()["detail"]
    mine = http.post("/queue/submit", json={**spec, "priority": "HIGH"}, headers=ALICE).json()["job_id"]
    r = http.patch(f"/jobs/{mine}", json={"priority": "CRITICAL"}, headers=ALICE)
    assert r.status_code == 403 and lab.job(mine)["priority_name"] == "HIGH"
    # Through Ray's Jobs API too.
    r = http.post(
        "/api/jobs/", json={"entrypoint": "true", "metadata": {"priority": "CRITICAL"}}, headers=ALICE
    )
    assert r.status_code == 403
    # bob has a grant (priority_grants), and so may.
    r = http.post("/queue/submit", json={**spec, "priority": "CRITICAL", "preemptible": False}, headers=BOB)
    assert r.status_code == 200, r.text
    listed = http.get("/jobs", headers=READER).json()["jobs"]
    assert [j["priority_name"] for j in listed if j["run_id"] == "urgent"] == ["CRITICAL", "HIGH"]


# --- tokens, live -------------------------------------------------------------------------


def test_tokens_made_and_revoked_by_an_admin_apply_within_two_seconds(http, api):
    r = http.post("/tokens", json={"user": "carol", "role": "user", "expires": "1d"}, headers=ADMIN)
    assert r.status_code == 200, r.text
    new = r.json()
    assert new["token"] not in api.tokens.read_text()  # hashed at rest
    who = {"Authorization": f"Bearer {new['token']}"}
    t0 = time.monotonic()
    wait_for(
        lambda: http.get("/whoami", headers=who).status_code == 200, 2, 0.05, what="the new token to work"
    )
    me = http.get("/whoami", headers=who).json()
    assert me == {"user": "carol", "role": "user", "token_id": new["id"], "expires_at": me["expires_at"]}
    assert 86_000 < me["expires_at"] - time.time() <= 86_400
    listed = {t["id"]: t for t in http.get("/tokens", headers=ADMIN).json()["tokens"]}
    assert listed[new["id"]]["user"] == "carol" and new["token"] not in json.dumps(listed)
    assert http.get("/tokens", headers=ALICE).status_code == 403
    assert http.delete(f"/tokens/{new['id']}", headers=ADMIN).json()["revoked"] == new["id"]
    t0 = time.monotonic()
    wait_for(
        lambda: http.get("/whoami", headers=who).status_code == 401, 2, 0.05, what="the revoked token to fail"
    )
    assert time.monotonic() - t0 < 2
    assert http.delete(f"/tokens/{new['id']}", headers=ADMIN).status_code == 404
    trail = http.get("/audit", params={"action": "token-revoke"}, headers=ADMIN).json()["events"]
    assert trail[0]["target"] == new["id"] and trail[0]["who"] == "root"


def test_a_token_for_a_name_without_an_account_is_refused(http):
    r = http.post("/tokens", json={"user": "nobody-at-all"}, headers=ADMIN)
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "user"


def test_the_cli_prints_the_new_token_alone_on_its_last_line(api, lab):
    env = {**os.environ, "GPUQ_URL": api, "GPUQ_TOKEN": "admin-token"}
    cli = [sys.executable, "-m", "orchestrator.cli", "token"]
    made = subprocess.run(
        [*cli, "create", "bob", "--expires", "90d"], capture_output=True, text=True, env=env, timeout=60
    )
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip().splitlines()[-1]
    assert httpx.get(f"{api}/whoami", headers={"Authorization": f"Bearer {token}"}).json()["user"] == "bob"
    listed = subprocess.run([*cli, "list", "--json"], capture_output=True, text=True, env=env, timeout=60)
    entry = next(t for t in json.loads(listed.stdout) if t["user"] == "bob" and t["expires_at"])
    assert token not in listed.stdout
    gone = subprocess.run([*cli, "revoke", entry["id"]], capture_output=True, text=True, env=env, timeout=60)
    assert (
        gone.returncode == 0
        and httpx.get(f"{api}/whoami", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    )
    refused = subprocess.run(
        [*cli, "list"], capture_output=True, text=True, timeout=60, env={**env, "GPUQ_TOKEN": "alice-token"}
    )
    assert refused.returncode == 1 and "only an admin" in refused.stderr and "Traceback" not in refused.stderr


# --- reads ----------------------------------------------------------------------------------


OPEN = {
    "/healthz",
    "/api/version",
    "/",
    "/web/{name}",
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
    "/openapi.json",
}


def test_every_read_route_needs_a_token(http, api, lab):
    job_id = lab.submit("sleep 300", user="alice")
    lab.wait_state(job_id, "running")
    schema = http.get("/openapi.json").json()
    reads = [p for p, ops in schema["paths"].items() if "get" in ops and p not in OPEN]
    assert len(reads) >= 14
    for path in reads:
        url = path.replace("{job_id}", job_id).replace("{token_id}", "x")
        assert http.get(url).status_code == 401, url
        assert http.get(url, headers={"Authorization": "Bearer revoked-or-never-was"}).status_code == 401, url
    assert http.get("/metrics", headers=READER).status_code == 200
    assert http.post("/queue/submit", json={"command": "true"}, headers=READER).status_code == 403


def tail(api: str, job_id: str, headers: dict) -> str:
    """What Ray's `ray job logs --follow` does: the log-tail WebSocket."""

    async def go():
        url = api.replace("http://", "ws://") + f"/api/jobs/{job_id}/logs/tail"
        try:
            async with websockets.connect(url, additional_headers=headers, open_timeout=30) as ws:
                return "".join([m async for m in ws])
        except websockets.InvalidStatus as e:
            return f"HTTP {e.response.status_code}"

    return asyncio.run(go())


def test_the_log_tail_websocket_needs_the_owners_token(api, lab):
    job_id = lab.submit("echo tailed", user="alice")
    lab.wait_state(job_id, "completed")
    assert tail(api, job_id, {}) == "HTTP 401"
    assert tail(api, job_id, BOB) == "HTTP 403"
    assert tail(api, job_id, ALICE) == "tailed\n"


def test_a_site_may_open_reads_but_not_the_private_parts(open_api, lab):
    job_id = lab.submit("echo mine", user="alice")
    lab.wait_state(job_id, "completed")
    assert httpx.get(f"{open_api}/orchestrator/status", timeout=30).status_code == 200
    assert "command" not in httpx.get(f"{open_api}/jobs/{job_id}", timeout=30).json()["spec"]
    assert httpx.get(f"{open_api}/jobs/{job_id}/logs", timeout=30).status_code == 401


def test_every_change_is_in_the_audit_trail(http, lab):
    job_id = http.post(
        "/queue/submit", json={"run_id": "audited", "command": "sleep 300", "gpu_count": 16}, headers=ALICE
    ).json()["job_id"]
    http.post(
        "/queue/submit", json={"run_id": "audited2", "command": "sleep 300", "gpu_count": 16}, headers=ALICE
    )
    http.patch(f"/jobs/{job_id}", json={"priority": "LOW"}, headers=ALICE)
    http.post(f"/jobs/{job_id}/cancel", headers=ADMIN)
    http.post("/nodes/gmi-node-2/drain", json={"reason": "reseat", "gpus": [3]}, headers=ADMIN)
    http.post("/nodes/gmi-node-2/undrain", json={"gpus": [3]}, headers=ADMIN)
    trail = http.get("/audit", headers=ADMIN).json()["events"]
    newest_first = [(e["who"], e["action"], e["target"]) for e in trail if e["action"] != "submit"][:4]
    assert newest_first == [
        ("root", "undrain", "gmi-node-2"),
        ("root", "drain", "gmi-node-2"),
        ("root", "cancel", job_id),
        ("alice", "priority", job_id),
    ]
    submitted = next(e for e in trail if e["action"] == "submit" and e["target"] == job_id)
    assert submitted["who"] == "alice" and submitted["detail"]["gpus"] == 16
    assert next(e for e in trail if e["action"] == "priority")["detail"] == {
        "user": "alice",
        "was": "NORMAL",
        "now": "LOW",
    }
    assert http.get("/audit", headers=ALICE).status_code == 403
