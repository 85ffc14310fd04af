"""Test tiers (README, "Tests"): a test is `ray` when it uses the session's Ray cluster
(any fixture that builds on `ray_cluster`), and `fault` when it is in a module that
breaks things on purpose; everything else is the fast tier. The markers are applied
here from what a test uses, never by hand, so a test cannot be put in the wrong tier.

Hypothesis runs its full example counts unless HYPOTHESIS_PROFILE=fast (scripts/test
--fast): then a fifth of them (tests/support.py, examples)."""

import os
from pathlib import Path

import pytest
from hypothesis import settings

from orchestrator.core.queue import JobQueue

# Modules whose tests kill nodes, orchestrators, disks or accounts: the fault tier.
FAULT_MODULES = {
    "test_chaos.py",
    "test_partition.py",
    "test_upgrade.py",
    "test_store_faults.py",
    "test_multiuser.py",
}

settings.register_profile("ci", deadline=None)
settings.register_profile("fast", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "ray_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.ray)
        if Path(str(item.fspath)).name in FAULT_MODULES:
            item.add_marker(pytest.mark.fault)


@pytest.fixture
def queue() -> JobQueue:
    return JobQueue()


@pytest.fixture(scope="session", autouse=True)
def no_tracebacks_to_clients():
    """Every HTTP answer a test receives is scanned for a traceback (tests/noleaks.py)."""
    from tests import noleaks

    with pytest.MonkeyPatch.context() as mp:
        noleaks.install(mp)
        yield


# --- the real Ray cluster (started only by tests that ask for it) -----------------------


@pytest.fixture(scope="session")
def unix_accounts():
    """The test run's throwaway Unix accounts (tests/accounts.py), when the suite runs as
    root (CI does): then gpuq is a multi-user install and every job runs as its user.
    Not root, gpuq is a single-user install and the jobs run as whoever runs the tests."""
    from tests import accounts

    if not accounts.can_create():
        yield {}
        return
    accounts.create()
    yield accounts.UNIX_USERS
    accounts.remove()


@pytest.fixture(scope="session")
def ray_cluster(unix_accounts):
    import ray

    from tests.raycluster import start_cluster

    cluster = start_cluster()
    yield cluster
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture(scope="module")
def module_orch(ray_cluster, tmp_path_factory):
    """One orchestrator per test module (tests/orchestration.py, Shared), with its own
    store and data folder; afterwards nothing of it is left: no gpuq actor, no placement
    group, no tagged process, all 16 GPUs free."""
    from tests.orchestration import Harness, Shared

    shared = Shared(lambda: Harness(tmp_path_factory.mktemp("orch")))
    yield shared
    shared.close()


@pytest.fixture
def orch(module_orch):
    """The module's orchestrator on an idle cluster: each test sees earlier tests' finished
    jobs in the store, so it counts what changed, not what is there."""
    return module_orch.get()


@pytest.fixture(scope="session")
def api(ray_cluster, tmp_path_factory):
    """The REST API on Ray Serve (one per session), deployed as `gpuq up` deploys it (reads
    need a token), with four tokens: two users, an admin and a reader. Its tokens file
    is at `api.tokens`."""
    import socket

    from serve_app.api import deploy
    from serve_app.auth import TokenFile
    from tests.accounts import UNIX_USERS

    tokens = TokenFile(tmp_path_factory.mktemp("auth") / "tokens.json")
    for token, user, role in TEST_TOKENS:
        tokens.create(user, role, by="tests", token=token)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = deploy("127.0.0.1", port, str(tokens.path), site={"unix_users": UNIX_USERS})
    return ApiUrl(url, tokens.path)


# token, user, role
TEST_TOKENS = [
    ("alice-token", "alice", "user"),
    ("bob-token", "bob", "user"),
    ("admin-token", "root", "admin"),
    ("reader-token", "prometheus", "reader"),
]


class ApiUrl(str):
    """The API's URL (a str, as tests use it), with where its tokens file is."""

    def __new__(cls, url: str, tokens):
        self = super().__new__(cls, url)
        self.tokens = tokens
        return self


@pytest.fixture(scope="session")
def prometheus(api, tmp_path_factory):
    """A real Prometheus (Debian's package) scraping the session's API every second."""
    from tests.promserver import Prometheus

    server = Prometheus(api, tmp_path_factory.mktemp("prometheus"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def private_api(api, tmp_path_factory):
    """A second copy of the API under /private (as behind a proxy's path prefix), with
    the same tokens. Returns the page's URL (the trailing slash matters: the page's
    paths are relative)."""
    from ray import serve

    from serve_app.api import GpuqAPI

    serve.run(GpuqAPI.bind(str(api.tokens), True), name="gpuq-private", route_prefix="/private")
    return f"{api}/private/"


@pytest.fixture(scope="session")
def open_api(api):
    """A copy of the API under /open for a site that opened reads (api_auth_reads = false)."""
    from ray import serve

    from serve_app.api import GpuqAPI

    serve.run(GpuqAPI.bind(str(api.tokens), False), name="gpuq-open", route_prefix="/open")
    return f"{api}/open"
