"""What a node says of its GPUs: one sample per GPU, and the node's report.

Plain data: the node agent makes them (node/telemetry.py, from NVML or the simulation),
the head judges them (core/health.py, core/fleet.py).
"""

from __future__ import annotations

from dataclasses import dataclass

NVML = "nvml"
SIMULATED = "simulated"


@dataclass(frozen=True)
class GpuSample:
    index: int
    utilization: float  # 0..1, the share of the last sample period a kernel ran
    memory_used_bytes: int
    memory_total_bytes: int
    temperature_celsius: float
    power_watts: float
    ecc_corrected: int  # volatile counts: since the driver last loaded
    ecc_uncorrected: int
    # XID events since the agent started, as ((xid, count), ...): a running total, like the
    # ECC counts, so that a report the orchestrator misses loses no event.
    xids: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class NodeReport:
    node: str
    at: float
    source: str  # NVML or SIMULATED
    detail: str  # the driver and model, or why this node is simulated
    gpus: tuple[GpuSample, ...]
    containment: str = ""  # how this node contains jobs (node/cgroups.py), in words
