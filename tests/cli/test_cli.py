"""The `gpuq` command end to end, as a subprocess, against the REST API."""

import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.noleaks import assert_clean

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def gpuq(api, orch):
    env = {**os.environ, "GPUQ_URL": api, "GPUQ_TOKEN": "alice-token"}

    def run(*args, timeout=120):
        out = subprocess.run(
            [sys.executable, "-m", "orchestrator.cli", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
        )
        assert_clean(out.stdout + out.stderr, f"gpuq {' '.join(args)}")
        return out

    return run


def test_submit_wait_exits_with_the_jobs_exit_code(gpuq):
    ok = gpuq("submit", "--wait", "--gpus", "2", "--", "echo", "fine")
    assert ok.returncode == 0, ok.stderr
    bad = gpuq("submit", "--wait", "--retries", "0", "--", "bash", "-c", "exit 7")
    assert bad.returncode == 7, bad.stdout + bad.stderr


def test_logs_follow_prints_the_whole_output(gpuq):
    out = gpuq("submit", "--json", "--", "bash", "-c", "for i in 1 2 3; do echo line $i; sleep 0.5; done")
    import json

    job_id = json.loads(out.stdout)["job_id"]
    follow = gpuq("logs", "-f", job_id)
    assert follow.returncode == 0 and follow.stdout == "line 1\nline 2\nline 3\n"


def test_cancel_and_refusals_without_a_traceback(gpuq):
    import json

    job_id = json.loads(gpuq("submit", "--json", "--gpus", "16", "--", "sleep", "60").stdout)["job_id"]
    cancelled = gpuq("cancel", job_id)
    assert cancelled.returncode == 0 and "cancelled" in cancelled.stdout
    again = gpuq("cancel", job_id)
    assert again.returncode == 1 and "cannot cancel" in again.stderr and "Traceback" not in again.stderr
    bad = gpuq("submit", "--gpus", "99", "--", "true")
    assert bad.returncode == 1 and "gpu_count" in bad.stderr
    shown = gpuq("jobs", "--json")
    assert job_id in shown.stdout


def test_unreachable_api_is_exit_code_3(gpuq, monkeypatch):
    r = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "status"],
        capture_output=True,
        text=True,
        env={**os.environ, "GPUQ_URL": "http://127.0.0.1:9", "GPUQ_TOKEN": "x"},
        timeout=60,
    )
    assert r.returncode == 3 and "cannot reach gpuq" in r.stderr


def test_status_nodes_and_top_show_the_cluster(gpuq):
    status = gpuq("status")
    assert status.returncode == 0 and "16 total" in status.stdout
    nodes = gpuq("nodes")
    assert "gmi-node-1" in nodes.stdout and "gmi-node-2" in nodes.stdout
    top = gpuq("top", "--once")
    assert top.returncode == 0 and "Active jobs" in top.stdout and "total 16" in top.stdout


def test_fleet_commands_drain_undrain_events_and_usage(gpuq, api):
    import json

    env = {**os.environ, "GPUQ_URL": api, "GPUQ_TOKEN": "admin-token"}
    admin = lambda *args: subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    refused = gpuq("drain", "gmi-node-2:3", "--reason", "mine now")
    assert refused.returncode == 1 and "only an admin" in refused.stderr and "Traceback" not in refused.stderr
    bad = admin("drain", "gmi-node-2:x", "--reason", "typo")
    assert bad.returncode == 1 and "NODE:GPU" in bad.stderr
    drained = admin("drain", "gmi-node-2:3,4", "--reason", "cabling")
    assert drained.returncode == 0 and "GPUs 3,4 drained" in drained.stdout
    events = json.loads(admin("events", "--json").stdout)
    assert [(e["gpu"], e["action"], e["by"], e["reason"]) for e in events] == [
        (4, "drained", "root", "cabling"),
        (3, "drained", "root", "cabling"),
    ]
    assert "14 available" in gpuq("status").stdout and "out of service: 2 drained" in gpuq("status").stdout
    assert "3,4" in admin("undrain", "gmi-node-2").stdout
    assert "out of service" not in gpuq("status").stdout
    assert gpuq("submit", "--wait", "--gpus", "2", "--", "sleep", "1").returncode == 0
    usage = json.loads(gpuq("usage", "--since", "1h", "--json").stdout)
    assert [u["user"] for u in usage["users"]] == ["alice"] and usage["total_gpu_hours"] > 0


def test_down_refuses_while_jobs_run_and_says_how_many(gpuq, api, orch, tmp_path):
    """`gpuq down` against a cluster with a running job stops nothing without --drain or
    --force. (The cluster here is the test session's: were the refusal to fail, this
    test would stop it.)"""
    job_id = orch.submit("sleep 120", gpus=2)
    orch.wait_state(job_id, "running")
    (tmp_path / "cluster.json").write_text(json.dumps({"api": api}))
    env = {**os.environ, "GPUQ_HOME": str(tmp_path), "GPUQ_TOKEN": "admin-token"}
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "down"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 2 and "1 job(s) are running" in out.stderr + out.stdout, out
    assert "--drain" in out.stderr + out.stdout
    assert orch.job(job_id)["state"] == "running"


def test_show_keeps_another_users_command_private_and_shows_ones_own_runtime_env(gpuq, orch):
    mine = json.loads(
        gpuq(
            "submit",
            "--json",
            "--gpus",
            "16",
            "--runtime-env-json",
            '{"env_vars": {"SEED": "7"}}',
            "--",
            "sleep",
            "60",
        ).stdout
    )["job_id"]
    theirs = orch.submit("sleep 60", gpus=16, user="bob", run_id="bobs")
    shown = gpuq("show", mine)
    assert shown.returncode == 0 and 'runtime env: {"env_vars": {"SEED": "7"}}' in shown.stdout
    other = gpuq("show", theirs)
    assert (
        other.returncode == 0
        and "(visible to its owner and admins)" in other.stdout
        and "sleep" not in other.stdout
    )


def test_bad_runtime_env_flags_are_refused_by_name_before_anything_is_sent(gpuq, orch, tmp_path):
    before = orch.call("list_jobs", None, None, 10, 0)["total"]
    bad_json = gpuq("submit", "--runtime-env-json", "{not json", "--", "true")
    assert bad_json.returncode == 2 and "--runtime-env-json" in bad_json.stderr
    missing = gpuq("submit", "--working-dir", str(tmp_path / "nowhere"), "--", "true")
    assert missing.returncode == 2 and "runtime_env" in missing.stderr and "nowhere" in missing.stderr
    refused = gpuq("submit", "--runtime-env-json", '{"conda": "env.yaml"}', "--", "true")
    assert refused.returncode == 1 and "runtime_env.conda" in refused.stderr
    assert orch.call("list_jobs", None, None, 10, 0)["total"] == before


def test_one_command_cancels_a_1000_job_array_and_the_queue_says_how_many_wait(gpuq, orch):
    orch.submit("sleep 300", gpus=16, run_id="blocker", user="bob")  # everything else waits
    out = json.loads(gpuq("submit", "--json", "--array", "0-999", "--", "true").stdout)
    array_id = out["array"]["id"]
    line = gpuq("queue")
    assert "1,000 waiting (first 100 shown)" in line.stdout, line.stdout
    one = gpuq("cancel", f"{array_id}_7")  # ARRAY_INDEX: one member
    assert one.returncode == 0 and orch.job(out["array"]["job_ids"][7])["state"] == "cancelled"
    r = gpuq("cancel", array_id)
    assert (
        r.returncode == 0 and "cancel: 999 of 1,000 matching jobs (unchanged: 1 is cancelled)" in r.stdout
    ), r.stdout
    assert orch.call("list_jobs", "queued", "alice", 1, 0)["total"] == 0


def test_user_and_state_selectors_touch_only_the_callers_jobs(gpuq, orch):
    blocker = orch.submit("sleep 300", gpus=16, run_id="blocker", user="bob")
    mine = [orch.submit("true", run_id=f"mine{i}") for i in range(3)]
    theirs = [orch.submit("true", run_id=f"theirs{i}", user="bob") for i in range(2)]
    orch.wait_state(blocker, "running")
    held = gpuq("hold", "--state", "queued")  # alice's token: her waiting jobs, nobody else's
    assert held.returncode == 0 and "hold: 3 of 3 matching jobs" in held.stdout, held.stdout
    assert {orch.job(j)["state"] for j in mine} == {"held"} and {orch.job(j)["state"] for j in theirs} == {
        "queued"
    }
    refused = gpuq("cancel", "--user", "bob")
    assert refused.returncode == 1 and "only an admin" in refused.stderr
    assert orch.job(blocker)["state"] == "running" and {orch.job(j)["state"] for j in theirs} == {"queued"}
    released = gpuq("release", "--name", "mine")
    assert released.returncode == 0 and {orch.job(j)["state"] for j in mine} == {"queued"}


def test_a_dependency_makes_the_second_step_wait_for_the_first(gpuq, orch):
    first = gpuq("submit", "--parsable", "--", "bash", "-c", "sleep 2; echo one").stdout.strip()
    second = gpuq("submit", "--json", "--dependency", f"afterok:{first[:8]}", "--", "echo", "two")
    assert second.returncode == 0, second.stderr
    second_id = json.loads(second.stdout)["job_id"]
    job = orch.wait_state(second_id, "completed", timeout=60)
    assert job["started_at"] >= orch.job(first)["ended_at"]
    unknown = gpuq("submit", "--dependency", "afterok:ffffffff", "--", "true")
    assert unknown.returncode == 1 and "dependency" in unknown.stderr and "ffffffff" in unknown.stderr


# --- the client for every user ------------------------------------------------------------


@pytest.mark.skipif(os.geteuid() != 0, reason="throwaway accounts need root (CI runs as root)")
def test_every_account_runs_gpuq_from_path_signs_in_and_runs_as_itself(api, orch):
    """As a researcher with a shell on the head: `gpuq` and `ray` on PATH (the links
    `gpuq up --link-commands` makes, here in a folder of the test's), a token of their
    own kept by `gpuq login`, and jobs that run as their account."""
    from orchestrator.deploy import commands
    from serve_app.auth import TokenFile
    from tests.accounts import UNIX_USERS

    bin_dir = Path(tempfile.mkdtemp(prefix="gpuq-bin-"))
    try:
        bin_dir.chmod(0o755)
        offered = commands.offer(bin_dir)
        assert offered["why_not"] == "" and offered["linked"] == [str(bin_dir / "gpuq"), str(bin_dir / "ray")]
        token, _ = TokenFile(api.tokens).create(
            "carol", "user", by="tests", expires_at=time.time() + 30 * 86400
        )
        account = pwd.getpwnam(UNIX_USERS["carol"])

        def as_carol(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
            env = [f"HOME={account.pw_dir}", f"PATH={bin_dir}:/usr/bin:/bin", "LANG=C.UTF-8"]
            return subprocess.run(
                ["runuser", "-u", account.pw_name, "--", "env", "-i", *env, *args],
                input=stdin,
                capture_output=True,
                text=True,
                timeout=120,
            )

        login = as_carol("gpuq", "login", api, "--name", "lab", stdin=f"{token}\n")
        assert login.returncode == 0 and "as carol (user)" in login.stdout, login.stdout + login.stderr
        config = Path(account.pw_dir) / ".config" / "gpuq" / "config.toml"
        assert (config.stat().st_uid, stat.S_IMODE(config.stat().st_mode)) == (account.pw_uid, 0o600)
        me = as_carol("gpuq", "whoami")
        assert me.stdout.splitlines()[:2] == [
            "carol (user)",
            f"cluster: lab {api} (from the config's default)",
        ]
        assert "(in 29 days)" in me.stdout
        ran = as_carol("gpuq", "run", "--", "id", "-un")
        assert (ran.returncode, ran.stdout) == (0, f"{account.pw_name}\n"), ran.stderr
        waited = as_carol("gpuq", "submit", "--wait", "--json", "--", "id", "-un")
        assert waited.returncode == 0, waited.stderr
        job_id = json.loads(waited.stdout)["job_id"]
        assert as_carol("gpuq", "logs", job_id).stdout == f"{account.pw_name}\n"
        assert orch.job(job_id)["user"] == "carol"
        ray_cli = as_carol("ray", "--version")
        assert ray_cli.returncode == 0 and "ray, version" in ray_cli.stdout, ray_cli.stderr
    finally:
        subprocess.run(["rm", "-rf", str(bin_dir)], check=False)


def test_a_client_only_install_talks_to_the_cluster_without_the_server(api, orch, tmp_path):
    """`pip install gpuq` (no extra) in a fresh venv, from a copy of the checkout: no Ray,
    FastAPI, pydantic or NVML installed, and `gpuq status` and `submit` work against the
    cluster over HTTP, as on a laptop."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("orchestrator", "serve_app"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / "client"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(src)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert pip.returncode == 0, pip.stderr
    listed = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "list", "--format=json"], capture_output=True, text=True
    )
    installed = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert "gpuq" in installed and not installed & {"ray", "fastapi", "starlette", "pydantic", "pynvml"}

    def client(*args: str) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GPUQ_", "PYTHON"))}
        return subprocess.run(
            [str(venv / "bin" / "gpuq"), *args],
            capture_output=True,
            text=True,
            cwd=tmp_path,  # not the checkout: the installed copy alone
            env={**env, "GPUQ_URL": api, "GPUQ_TOKEN": "alice-token", "HOME": str(tmp_path)},
            timeout=120,
        )

    status = client("status")
    assert status.returncode == 0 and "16 total" in status.stdout, status.stderr
    done = client("submit", "--wait", "--", "echo", "from a laptop")
    assert done.returncode == 0, done.stderr
    upload = client("submit", "--working-dir", str(tmp_path), "--", "true")
    assert upload.returncode == 2 and "pip install 'gpuq[upload]'" in upload.stderr
    up = client("up")
    assert up.returncode == 2 and "pip install 'gpuq[server]'" in up.stderr and "Traceback" not in up.stderr
