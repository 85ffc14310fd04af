import pytest

from orchestrator.queue import JobQueue


@pytest.fixture
def queue() -> JobQueue:
    return JobQueue()


# --- the real Ray cluster (started only by tests that ask for it) -----------------------


@pytest.fixture(scope="session")
def ray_cluster():
    import ray

    from tests.raycluster import start_cluster

    cluster = start_cluster()
    yield cluster
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture
def orch(ray_cluster, tmp_path):
    """A fresh orchestrator with its own store and data folder; afterwards nothing of it
    is left: no gpuq actor, no placement group, no tagged process, all 16 GPUs free."""
    from tests.orchestration import Harness

    harness = Harness(tmp_path)
    yield harness
    harness.teardown()


@pytest.fixture(scope="session")
def api(ray_cluster, tmp_path_factory):
    """The REST API on Ray Serve (one per session), with three tokens: two users and an admin."""
    import json
    import socket

    from serve_app.api import deploy

    tokens = tmp_path_factory.mktemp("auth") / "tokens.json"
    tokens.write_text(json.dumps({
        "alice-token": {"user": "alice", "role": "user"},
        "bob-token": {"user": "bob", "role": "user"},
        "admin-token": {"user": "root", "role": "admin"},
    }))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return deploy("127.0.0.1", port, str(tokens))


@pytest.fixture(scope="session")
def prometheus(api, tmp_path_factory):
    """A real Prometheus (Debian's package) scraping the session's API every second."""
    from tests.promserver import Prometheus

    server = Prometheus(api, tmp_path_factory.mktemp("prometheus"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def private_api(api, tmp_path_factory):
    """A second copy of the API under /private, deployed with api_auth_reads: every read
    needs a token there. Returns the page's URL (the trailing slash matters: the page's
    paths are relative)."""
    import json

    from ray import serve

    from serve_app.api import GpuqAPI

    tokens = tmp_path_factory.mktemp("private-auth") / "tokens.json"
    tokens.write_text(json.dumps({"alice-token": {"user": "alice", "role": "user"}}))
    serve.run(GpuqAPI.bind(str(tokens), True), name="gpuq-private", route_prefix="/private")
    return f"{api}/private/"
