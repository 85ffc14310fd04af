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
