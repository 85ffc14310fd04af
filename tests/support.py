"""Builders shared by the pure-core tests (no Ray)."""

from orchestrator.job import JobSpec

# The seed's "Priority Queue Example", time T0: (run id, user, GPUs, priority).
SEED_T0 = [
    ("job-101", "alice", 8, 4),
    ("job-102", "bob", 4, 3),
    ("job-103", "carol", 2, 3),
    ("job-104", "dave", 1, 2),
    ("job-105", "eve", 2, 2),
]


def make_spec(run_id="run", user="alice", gpus=1, priority=2, **extra) -> JobSpec:
    return JobSpec.parse({"run_id": run_id, "user": user, "command": "true", "gpu_count": gpus, "priority": priority, **extra})
