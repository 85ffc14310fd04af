"""`gpuq login`, named clusters, and which token goes where: the `gpuq` command as a
subprocess, with a home folder of its own, against small local HTTP servers that stand
in for two clusters' APIs. No Ray: the same against the real API, as a throwaway
account, is in tests/cli/test_cli.py."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from orchestrator.cli import clusters

STATUS = {
    "resource_summary": {"total_gpus": 16, "available_gpus": 16, "allocated_gpus": 0},
    "queue_summary": {"queued": 0, "running": 0, "completed": 0, "failed": 0},
    "details": {},
}


class Api:
    """One cluster's API: knows some tokens, and notes the token each request carried."""

    def __init__(self, tokens: dict[str, dict]):
        self.tokens, self.seen = tokens, []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                auth = self.headers.get("Authorization")
                api.seen.append(auth)
                me = api.tokens.get((auth or "")[len("Bearer ") :])
                status, body = (200, me if self.path == "/whoami" else STATUS) if me else (401, {})
                if not me:
                    body = {"detail": "this token is not valid (unknown or revoked)"}
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


GPUQ = (sys.executable, "-m", "orchestrator.cli")
ALICE = {"user": "alice", "role": "user", "token_id": "a1", "expires_at": time.time() + 90 * 86400}
BOB = {"user": "bob", "role": "admin", "token_id": "b2", "expires_at": None}


@pytest.fixture
def apis():
    lab, other, stranger = Api({"tok-a": ALICE}), Api({"tok-b": BOB}), Api({})
    yield lab, other, stranger
    for api in (lab, other, stranger):
        api.close()


@pytest.fixture
def gpuq(tmp_path):
    """`gpuq` as a user whose home is `tmp_path`: no GPUQ_URL, GPUQ_TOKEN or admin token."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GPUQ_", "XDG_"))}
    env.update(HOME=str(tmp_path), GPUQ_HOME=str(tmp_path / ".gpuq"))

    def run(*args, stdin: str = "", gpuq=GPUQ, **extra) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*gpuq, *args],
            input=stdin,
            capture_output=True,
            text=True,
            env={**env, **extra},
            timeout=60,
        )

    run.config = tmp_path / ".config" / "gpuq" / "config.toml"
    return run


def test_login_checks_the_token_and_keeps_it_in_a_file_only_its_user_reads(gpuq, apis):
    lab = apis[0]
    out = gpuq("login", lab.url, "--name", "lab", stdin="tok-a\n")
    assert out.returncode == 0, out.stderr
    assert "Signed in to lab" in out.stdout and "as alice (user)" in out.stdout and "expires" in out.stdout
    assert stat.S_IMODE(gpuq.config.stat().st_mode) == 0o600
    assert stat.S_IMODE(gpuq.config.parent.stat().st_mode) == 0o700
    me = gpuq("whoami")
    assert me.returncode == 0, me.stderr
    assert me.stdout.splitlines()[0] == "alice (user)"
    assert f"cluster: lab {lab.url} (from the config's default)" in me.stdout
    assert "token:   a1, expires" in me.stdout and "(in 89 days" in me.stdout
    status = gpuq("status")
    assert status.returncode == 0 and "16 total" in status.stdout
    assert lab.seen[-1] == "Bearer tok-a"


def test_a_refused_or_missing_token_is_not_kept(gpuq, apis):
    lab = apis[0]
    refused = gpuq("login", lab.url, stdin="tok-wrong\n")
    assert refused.returncode == 1 and "did not take this token" in _words(refused.stderr)
    assert "nothing stored" in _words(refused.stderr) and "Traceback" not in refused.stderr
    empty = gpuq("login", lab.url, stdin="")
    assert empty.returncode == 2 and "no token given" in empty.stderr
    gone = gpuq("login", "http://127.0.0.1:9", stdin="tok-a\n")
    assert gone.returncode == 3 and "cannot reach gpuq" in _words(gone.stderr)
    assert not gpuq.config.exists()


def test_named_clusters_and_which_token_goes_where(gpuq, apis):
    lab, other, stranger = apis
    assert gpuq("login", lab.url, "--name", "lab", stdin="tok-a\n").returncode == 0
    assert gpuq("login", other.url, "--name", "other", stdin="tok-b\n").returncode == 0
    listed = gpuq("clusters")
    assert [line.split()[:2] for line in listed.stdout.splitlines()[1:]] == [["lab", lab.url], ["*", "other"]]
    assert gpuq("whoami", "--json").stdout and json.loads(gpuq("whoami", "--json").stdout)["user"] == "bob"
    # One command elsewhere: --cluster, before the command's name.
    assert json.loads(gpuq("--cluster", "lab", "whoami", "--json").stdout)["cluster"] == "lab"
    assert json.loads(gpuq("--cluster=lab", "whoami", "--json").stdout)["user"] == "alice"
    # The environment overrides the default; a stored token goes only to its own URL.
    assert json.loads(gpuq("whoami", "--json", GPUQ_URL=lab.url).stdout)["user"] == "alice"
    refused = gpuq("status", GPUQ_URL=stranger.url)
    assert refused.returncode == 1 and stranger.seen == [None] and "gpuq login" in _words(refused.stderr)
    assert gpuq("whoami", GPUQ_TOKEN="tok-a").returncode == 1  # bob's cluster, alice's token
    assert (
        json.loads(gpuq("--cluster", "lab", "whoami", "--json", GPUQ_TOKEN="tok-b").stdout)["user"] == "alice"
    )
    unknown = gpuq("--cluster", "nope", "status")
    assert (
        unknown.returncode == 2
        and "no such cluster" in unknown.stderr
        and "lab, other" in _words(unknown.stderr)
    )
    # A new default, then forgetting one.
    assert gpuq("clusters", "--use", "lab").returncode == 0
    assert json.loads(gpuq("whoami", "--json").stdout)["user"] == "alice"
    assert "the default is now other" in gpuq("logout").stdout
    assert "tok-a" not in gpuq.config.read_text()
    assert json.loads(gpuq("clusters", "--json").stdout)["default"] == "other"
    assert "tok-b" not in gpuq("clusters", "--json").stdout


def _words(text: str) -> str:
    """Text as one line: rich wraps what it prints to a pipe at 80 columns."""
    return " ".join(text.split())


def test_a_config_others_may_read_is_used_with_a_warning_and_a_broken_one_says_where(gpuq, apis):
    lab = apis[0]
    assert gpuq("login", lab.url, stdin="tok-a\n").returncode == 0
    gpuq.config.chmod(0o644)
    loose = gpuq("status")
    assert loose.returncode == 0 and "may be read by others (mode 0644)" in _words(loose.stderr)
    gpuq.config.write_text("default = [")
    broken = gpuq("status")
    assert broken.returncode == 2 and f"{gpuq.config} is not valid TOML" in _words(broken.stderr)
    assert "Traceback" not in broken.stderr


@pytest.fixture
def home(tmp_path, monkeypatch):
    for name in ("GPUQ_URL", "GPUQ_TOKEN", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("GPUQ_HOME", str(tmp_path / ".gpuq"))
    clusters.choose(None)
    (tmp_path / ".gpuq").mkdir(mode=0o700)
    token = tmp_path / ".gpuq" / "admin.token"
    token.write_text("the-admin-token\n")
    token.chmod(0o600)
    return tmp_path


def test_the_admin_token_is_read_only_by_the_account_that_owns_it(home, monkeypatch, capsys):
    mine = clusters.resolve()
    assert (mine.url, mine.token) == (clusters.LOCAL_URL, "the-admin-token")
    monkeypatch.setattr(os, "geteuid", lambda: os.getuid() + 4242)  # another account, same GPUQ_HOME
    theirs = clusters.resolve()
    assert theirs.token is None and theirs.token_from is None
    assert "belongs to another account" in capsys.readouterr().err
    # ... nor sent anywhere but this machine's API.
    monkeypatch.undo()
    monkeypatch.setenv("GPUQ_URL", "http://gmi-head:8000")
    assert clusters.resolve().token is None


def test_a_link_in_place_of_the_config_is_not_followed(home, tmp_path, capsys):
    secret = tmp_path / "elsewhere.toml"
    secret.write_text('default = "x"\n[clusters.x]\nurl = "http://evil:1"\ntoken = "t"\n')
    clusters.config_path().parent.mkdir(parents=True)
    clusters.config_path().symlink_to(secret)
    assert clusters.resolve().url == clusters.LOCAL_URL
    assert "not used" in capsys.readouterr().err


def test_the_client_imports_nothing_of_the_server(gpuq, apis):
    """A client-only install has no Ray, FastAPI, pydantic or NVML: the commands a user
    runs must not need them (in the full venv as much as in the client's)."""
    lab = apis[0]
    assert gpuq("login", lab.url, stdin="tok-a\n").returncode == 0
    server = ("ray", "fastapi", "starlette", "pydantic", "pynvml", "prometheus_client", "sortedcontainers")
    for args in (("status",), ("whoami",), ("submit", "--help"), ("clusters",)):
        out = _importing(gpuq, *args)
        assert out.returncode == 0, out.stderr
        loaded = {
            line.split("|")[-1].strip().split(".")[0] for line in out.stderr.splitlines() if "|" in line
        }
        assert "orchestrator" in loaded and not loaded & set(server), (args, loaded & set(server))


def _importing(gpuq, *args) -> subprocess.CompletedProcess:
    """`gpuq ARGS` with every import it makes listed on stderr (`python -X importtime`)."""
    return gpuq(*args, gpuq=[sys.executable, "-X", "importtime", "-m", "orchestrator.cli"])


def test_shell_completion_is_typers_and_completes_cluster_names(gpuq, apis):
    assert gpuq("login", apis[0].url, "--name", "lab", stdin="tok-a\n").returncode == 0
    installed = [str(Path(sys.executable).parent / "gpuq")]  # completion goes by the program's name
    script = gpuq("--show-completion", "bash", gpuq=installed)
    assert script.returncode == 0 and "complete -o default -F _gpuq_completion gpuq" in script.stdout
    names = gpuq(
        _GPUQ_COMPLETE="complete_bash", COMP_WORDS="gpuq --cluster l", COMP_CWORD="2", gpuq=installed
    )
    assert names.stdout.split() == ["lab"]
    commands = gpuq(_GPUQ_COMPLETE="complete_bash", COMP_WORDS="gpuq who", COMP_CWORD="1", gpuq=installed)
    assert commands.stdout.split() == ["whoami"]


def test_gpuq_up_and_down_in_a_client_only_install_say_what_to_install(tmp_path):
    """Without the server's packages (as `pip install gpuq` leaves it): simulated by a
    path entry that makes `import ray` and `import pydantic` fail."""
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    for name in ("ray", "pydantic"):
        (blocker / name).mkdir()
        (blocker / name / "__init__.py").write_text(f"raise ModuleNotFoundError('blocked', name={name!r})\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker), str(Path.cwd())])}
    for args in (("up",), ("down",)):
        out = subprocess.run(
            [sys.executable, "-m", "orchestrator.cli", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert out.returncode == 2 and "pip install 'gpuq[server]'" in out.stderr, out.stderr
        assert "Traceback" not in out.stderr
