import pytest

from orchestrator.queue import JobQueue


@pytest.fixture
def queue() -> JobQueue:
    return JobQueue()
