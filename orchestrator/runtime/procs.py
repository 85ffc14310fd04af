"""The processes of gpuq's jobs on this machine, found by the tags in their environment.

Every job process inherits GPUQ_CLUSTER and GPUQ_JOB_ID from its supervisor (and
GPUQ_NODE, CUDA_VISIBLE_DEVICES): the node agent reaps by them (agent.py) and the
simulated telemetry reads which GPUs a process was given (telemetry.py).
"""

from __future__ import annotations

import os

KEPT = (b"GPUQ_", b"CUDA_VISIBLE_DEVICES=")


def tagged(cluster_id: str) -> dict[int, dict[str, str]]:
    """pid -> its GPUQ_* and CUDA_VISIBLE_DEVICES variables, for every process tagged
    with this cluster and a job id."""
    found: dict[int, dict[str, str]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                raw = f.read().split(b"\0")
        except OSError:
            continue
        env = dict(e.decode("utf-8", "replace").split("=", 1) for e in raw if e.startswith(KEPT) and b"=" in e)
        if env.get("GPUQ_CLUSTER") == cluster_id and "GPUQ_JOB_ID" in env:
            found[int(entry.name)] = env
    return found
