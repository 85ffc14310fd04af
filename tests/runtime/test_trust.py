"""No byte a user supplies reaches root (issue #25), tried as a hostile user would: with
a shell on the node as a throwaway account, and through jobs and the API.

- Ray answers no call without its token, from a job or from a local user, and Ray
  Client does not listen;
- nothing under Ray's temp dir can be reached by a user;
- a user's package is unpacked by that user, without set-uid bits, and none of its
  code runs in a root process; a pip env is built by the user from the site's index;
- packages are their owners': nobody replaces or pre-claims another user's;
- requirements that are URLs or paths, and tokens for root or system accounts, are
  refused by name;
- each job has a private TMPDIR that goes with it.

One orchestrator for the module. The suite creates the accounts as root (CI runs as
root); as anyone else these cannot be run, and are skipped saying so.
"""

from __future__ import annotations

import io
import os
import pwd
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import httpx
import pytest

from tests.accounts import UNIX_USERS
from tests.orchestration import Harness
from tests.raycluster import wait_for
from tests.support import write_index, write_wheel

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="a multi-user install needs root (CI runs as root)")
]

ALICE = {"Authorization": "Bearer alice-token"}
BOB = {"Authorization": "Bearer bob-token"}
ADMIN = {"Authorization": "Bearer admin-token"}


@pytest.fixture(scope="module")
def shared():
    """A folder every account may read and write in (markers a user's code leaves), and
    the site's package index in it."""
    path = Path(tempfile.mkdtemp(prefix="gpuq-trust-"))
    os.chmod(path, 0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def marker(shared):
    """Where a user's hook leaves a file named after what it is and the uid it ran as."""
    path = shared / "ran"
    path.mkdir(mode=0o777)
    os.chmod(path, 0o777)
    return path


def hook(marker: Path, what: str) -> bytes:
    return (
        f"import os; open(os.path.join({str(marker)!r}, '{what}-%d' % os.getuid()), 'a').close()\n".encode()
    )


def ran(marker: Path, what: str) -> set[int]:
    """The uids a hook of that kind ran as."""
    return {int(p.name.rsplit("-", 1)[1]) for p in marker.iterdir() if p.name.rsplit("-", 1)[0] == what}


@pytest.fixture(scope="module")
def trust(ray_cluster, shared, marker, tmp_path_factory):
    """An orchestrator whose site installs pip envs from an index of one wheel, whose
    .pth file (which Python runs at start-up in any interpreter that has it in its
    site-packages) writes down the uid it runs as."""
    wheel = write_wheel(
        tmp_path_factory.mktemp("wheels"),
        "gpuq_hooked",
        code=b"WHO = 'hooked'\n",
        extra={"gpuq_hooked.pth": hook(marker, "pth")},
    )
    index = write_index(shared / "index", [wheel])
    harness = Harness(tmp_path_factory.mktemp("trust"), pip_index_url=index)
    yield harness
    harness.teardown()


@pytest.fixture(scope="module")
def http(api, trust):
    with httpx.Client(base_url=api, timeout=60) as client:
        yield client


def uid(name: str) -> int:
    return pwd.getpwnam(UNIX_USERS[name]).pw_uid


def as_user(name: str, *argv: str, **kwargs) -> subprocess.CompletedProcess:
    """A command run by a local user with a shell on the node (the system Python: gpuq's
    own is not theirs to run)."""
    return subprocess.run(
        ["runuser", "-u", UNIX_USERS[name], "--", *argv], capture_output=True, text=True, timeout=60, **kwargs
    )


def package(files: dict[str, tuple[int, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, (mode, data) in files.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFREG | mode) << 16
            z.writestr(info, data)
    return buf.getvalue()


def upload(http, who: dict, name: str, data: bytes) -> httpx.Response:
    return http.put(f"/api/packages/gcs/{name}", content=data, headers=who)


def submit(http, who: dict, command: str, **fields) -> str:
    r = http.post(
        "/queue/submit",
        json={"run_id": "trust", "command": command, "gpu_count": 1, "max_retries": 0, **fields},
        headers=who,
    )
    assert r.status_code == 200, r.text
    return r.json()["job_id"]


def agent_addresses() -> list[str]:
    """Every address Ray's dashboard agents listen on (HTTP, where their job endpoint is,
    and gRPC), as host:port a client on this node can reach."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    found = set()
    for line in out.splitlines():
        if "ray::DashboardA" in line:
            host, _, port = line.split()[3].rpartition(":")
            host = host.strip("[]").removeprefix("::ffff:")
            found.add(f"{'127.0.0.1' if host in ('*', '0.0.0.0', '::') else host}:{port}")
    return sorted(found)


POST_JOB = """
import sys, urllib.request, urllib.error
for address in sys.argv[2:]:
    body = ('{"entrypoint": "id > %s"}' % sys.argv[1]).encode()
    req = urllib.request.Request(f"http://{address}/api/job_agent/jobs/", data=body,
                                 headers={"content-type": "application/json"})
    try:
        print(urllib.request.urlopen(req, timeout=5).status)
    except urllib.error.HTTPError as e:
        print(e.code)
    except Exception:  # refused, or not HTTP at all (a gRPC port)
        print("closed")
"""


# --- Ray: its token, its temp dir, no Ray Client ----------------------------------------


def test_ray_answers_no_call_without_its_token(trust, http, shared):
    token = Path(os.environ["RAY_AUTH_TOKEN_PATH"])
    assert stat.S_IMODE(token.stat().st_mode) == 0o600 and token.stat().st_uid == 0
    assert "Permission denied" in as_user("alice", "cat", str(token)).stderr

    # The GCS: a caller without the token (any user, any job) is refused at once.
    import ray

    probe = (
        "from ray._raylet import GcsClient\n"
        f"GcsClient(address={ray.get_runtime_context().gcs_address!r}).internal_kv_get(b'x', None, timeout=5)"
    )
    tokenless = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    refused = subprocess.run(
        [sys.executable, "-c", probe], env=tokenless, capture_output=True, text=True, timeout=60
    )
    assert refused.returncode != 0 and "Authentication token is missing or incorrect" in refused.stderr
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=60).returncode == 0

    # The dashboard agents' job endpoint, which runs any command: from a local user, and from a job.
    ports = agent_addresses()
    assert len(ports) >= 3  # one agent per node at least
    said = as_user("alice", "python3", "-c", POST_JOB, str(shared / "agent-shell"), *ports).stdout.split()
    job = submit(http, ALICE, shlex.join(["python3", "-c", POST_JOB, str(shared / "agent-job"), *ports]))
    assert trust.wait_state(job, "completed", "failed")["state"] == "completed"
    for statuses in (said, trust.log(job).split()):
        # 401 from the job endpoints; other ports are not HTTP, or serve no such route (405).
        assert "401" in statuses and not [s for s in statuses if s.startswith("2")], statuses
    assert not (shared / "agent-shell").exists() and not (shared / "agent-job").exists()

    # Ray Client is off: nothing runs its server, nothing listens on its port.
    assert not subprocess.run(["pgrep", "-f", "ray.util.client.server"], capture_output=True).stdout
    assert ":10001 " not in subprocess.run(["ss", "-ltnH"], capture_output=True, text=True).stdout


def test_nothing_under_rays_temp_dir_is_reachable_by_a_user(ray_cluster):
    private = Path(os.environ["RAY_TMPDIR"])
    assert stat.S_IMODE(private.stat().st_mode) == 0o700 and private.stat().st_uid == 0
    folders = [str(Path(d)) for d, _, _ in os.walk(private)]
    assert any(f.endswith("sockets") for f in folders) and any("runtime_resources" in f for f in folders)
    # Ray makes its own folders 0777; from outside the private folder none of them can be reached.
    tries = (
        "import sys, os\n"
        "for d in sys.argv[1:]:\n"
        "    try:\n"
        "        open(os.path.join(d, 'planted'), 'x').close(); print('WROTE', d)\n"
        "    except OSError:\n"
        "        pass\n"
        "    try:\n"
        "        os.listdir(d); print('LISTED', d)\n"
        "    except OSError:\n"
        "        pass\n"
    )
    said = as_user("bob", "python3", "-c", tries, *folders)
    assert said.returncode == 0 and said.stdout == "", said.stdout[:2000]


# --- a user's content is handled as that user ------------------------------------------


def test_a_users_package_is_unpacked_as_them_without_set_uid_and_runs_no_code_as_root(trust, http, marker):
    """The package holds a copy of `id` marked set-uid, a sitecustomize.py and an
    argparse.py that would run in any Python with the package on its path: as root, in
    the runner or the launcher, that was a root shell."""
    data = package(
        {
            "idcopy": (0o4755, Path("/usr/bin/id").read_bytes()),
            "sitecustomize.py": (0o644, hook(marker, "sitecustomize")),
            "argparse.py": (0o644, hook(marker, "argparse")),
            "main.py": (0o644, b"print('ran main')\n"),
        }
    )
    assert upload(http, ALICE, "_ray_pkg_5e7a1d0000000001.zip", data).status_code == 200
    job = submit(
        http,
        ALICE,
        "./idcopy -u; stat -c '%a %U' idcopy; python3 main.py; sleep 300",
        runtime_env={"working_dir": "gcs://_ray_pkg_5e7a1d0000000001.zip"},
    )
    trust.wait_state(job, "running", timeout=120)
    wait_for(lambda: "ran main" in trust.log(job), 60, what="the job to run its package")
    euid, mode, _ = trust.log(job).splitlines()
    assert int(euid) == uid("alice") and mode == f"755 {UNIX_USERS['alice']}"  # no set-uid bit: alice's file

    # While it runs: no root Python has a user's folder on its path, as its directory, or open.
    scratch = Path(trust.config["scratch_dir"])
    offenders = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if proc.stat().st_uid != 0 or "python" not in os.readlink(proc / "exe"):
                continue
            environ = dict(
                e.split("=", 1)
                for e in (proc / "environ").read_bytes().decode(errors="replace").split("\0")
                if "=" in e
            )
            cwd = os.readlink(proc / "cwd")
            opened = [os.readlink(fd) for fd in (proc / "fd").iterdir()]
        except OSError:
            continue  # it ended meanwhile
        paths = environ.get("PYTHONPATH", "").split(os.pathsep) + [cwd] + opened
        if any(p.startswith(str(scratch)) for p in paths):
            offenders.append((proc.name, [p for p in paths if p.startswith(str(scratch))]))
    assert not offenders, offenders
    http.post(f"/jobs/{job}/cancel", headers=ALICE)
    trust.wait_state(job, "cancelled")
    assert ran(marker, "sitecustomize") == {uid("alice")}  # in alice's own python, and in no root process
    assert 0 not in ran(marker, "argparse")


def test_a_pip_env_is_built_by_its_user_from_the_sites_index_once(trust, marker):
    check = "python3 -c 'import gpuq_hooked; print(gpuq_hooked.WHO)'"
    first = trust.submit(check, runtime_env={"pip": ["gpuq-hooked==1.0"]}, user="bob", run_id="pip1")
    job = trust.wait_state(first, "completed", "failed", timeout=300)
    assert job["state"] == "completed" and trust.log(first) == "hooked\n", trust.log(first)
    envs = Path(trust.config["scratch_dir"]) / str(uid("bob")) / "envs"
    built = [p for p in envs.iterdir() if p.is_dir()]
    assert len(built) == 1 and built[0].stat().st_uid == uid("bob")
    ready = (built[0] / ".gpuq-ready").stat().st_mtime_ns
    again = trust.submit(check, runtime_env={"pip": ["gpuq-hooked==1.0"]}, user="bob", run_id="pip2")
    assert trust.wait_state(again, "completed", "failed", timeout=120)["state"] == "completed"
    assert (built[0] / ".gpuq-ready").stat().st_mtime_ns == ready  # the same env, not built again
    assert ran(marker, "pth") == {uid("bob")}  # its .pth ran in bob's python only


def test_packages_are_their_owners_alone(trust, http):
    name = "_ray_pkg_0b0e2a0000000002.zip"
    alices = package({"who.py": (0o644, b"print('alice wrote this')\n")})
    forged = package({"who.py": (0o644, b"print('bob wrote this')\n")})
    assert upload(http, ALICE, name, alices).status_code == 200
    assert upload(http, ALICE, name, alices).status_code == 200  # the same bytes again: nothing changes
    refused = upload(http, ALICE, name, forged)
    assert refused.status_code == 422 and refused.json()["detail"][0]["field"] == "package"
    assert upload(http, BOB, name, forged).status_code == 200  # into bob's own namespace, not over alice's
    runs = {
        who: submit(http, head, "python3 who.py", runtime_env={"working_dir": f"gcs://{name}"})
        for who, head in (("alice", ALICE), ("bob", BOB))
    }
    for who, job in runs.items():
        assert trust.wait_state(job, "completed", "failed", timeout=120)["state"] == "completed"
        assert trust.log(job) == f"{who} wrote this\n"
    trail = http.get("/audit", params={"action": "package"}, headers=ADMIN).json()["events"]
    assert {(e["who"], e["target"]) for e in trail} >= {("alice", f"gcs://{name}"), ("bob", f"gcs://{name}")}
    assert all(
        re.fullmatch(r"[0-9a-f]{64}", e["detail"]["sha256"]) for e in trail if e["target"] == f"gcs://{name}"
    )
    other = upload(http, ALICE, "_ray_pkg_0b0e2a0000000003.zip", alices)
    assert other.status_code == 200
    r = http.post(
        "/queue/submit",
        json={
            "run_id": "x",
            "command": "true",
            "gpu_count": 1,
            "runtime_env": {"working_dir": "gcs://_ray_pkg_0b0e2a0000000003.zip"},
        },
        headers=BOB,
    )
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "runtime_env.working_dir"


def test_a_package_that_is_not_a_zip_or_unpacks_too_big_is_refused(http):
    r = upload(http, ALICE, "_ray_pkg_0000000000000004.zip", b"#!/bin/sh\nid\n")
    assert r.status_code == 422 and "not a zip" in r.json()["detail"][0]["message"]


# --- what is refused by name ------------------------------------------------------------


@pytest.mark.parametrize(
    "req",
    [
        "https://evil.example/pkg-1.0-py3-none-any.whl",
        "pkg @ file:///etc/passwd",
        "/home/alice/pkg",
        "pkg-1.0.tar.gz",
    ],
)
def test_a_requirement_that_is_a_url_or_a_path_is_refused_and_nothing_queued(http, trust, req):
    before = trust.call("list_jobs", None, "alice", 1000, 0)["total"]
    r = http.post(
        "/queue/submit",
        json={"run_id": "u", "command": "true", "gpu_count": 1, "runtime_env": {"pip": ["numpy", req]}},
        headers=ALICE,
    )
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "runtime_env.pip[1]"
    assert trust.call("list_jobs", None, "alice", 1000, 0)["total"] == before


@pytest.mark.parametrize(
    "user, role", [("root", "user"), ("daemon", "user"), ("root", "admin"), ("admin", "user")]
)
def test_no_token_is_made_that_would_run_jobs_as_root_or_a_system_account(http, user, role):
    r = http.post("/tokens", json={"user": user, "role": role}, headers=ADMIN)
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "user", r.text


def test_a_job_for_a_system_account_is_refused_at_submit(trust):
    with pytest.raises(Exception, match="system account|root"):
        trust.submit("id", user="daemon")


# --- the job's own folder ----------------------------------------------------------------


def test_each_job_has_a_private_tmpdir_that_goes_with_it(trust):
    job = trust.submit(
        'echo "$TMPDIR"; stat -c "%U %a" "$TMPDIR"; touch "$TMPDIR/scratch-file"', user="alice"
    )
    assert trust.wait_state(job, "completed", "failed")["state"] == "completed"
    tmpdir, owner = trust.log(job).splitlines()
    assert owner == f"{UNIX_USERS['alice']} 700" and tmpdir.startswith(f"{trust.config['scratch_dir']}/")
    wait_for(lambda: not os.path.exists(tmpdir), 30, what="the job's TMPDIR to be removed")
