"""How a plan words things for people: job names, places and clock times in the
reasons a waiting job shows (`gpuq show`, the web page, Slurm-like `squeue` reasons).
Kept apart from the decisions in policy.py: wording changes; decisions are tested."""

from __future__ import annotations

import time
from collections.abc import Mapping

from orchestrator.core.durations import format_duration
from orchestrator.core.ordering import Waiting
from orchestrator.core.placement import Counts


def gpus(n: int) -> str:
    return f"{n:,} GPU" if n == 1 else f"{n:,} GPUs"


def unplaceable(job: Waiting, sizes: Mapping[str, int]) -> str:
    shape = "" if job.multi_node or job.gpus > max(sizes.values()) else " on one node"
    have = max(sizes.values()) if shape else sum(sizes.values())
    return f"needs {gpus(job.gpus)}{shape}; only {have} in service"


def short_of(job: Waiting, free: Mapping[str, int], one_node: bool) -> str:
    """Why a job does not fit in what is free now, in words ("none free", not "0 free
    but at most 0 on any node")."""
    total, most = sum(free.values()), max(free.values(), default=0)
    where = " on one node" if one_node else ""
    if not total:
        return f"needs {gpus(job.gpus)}{where}; none free"
    if one_node and most < total:
        return f"needs {gpus(job.gpus)}{where}; {total} free, at most {most} on any one node"
    return f"needs {gpus(job.gpus)}{where}; only {total} free"


def names(labels: list[str]) -> str:
    if len(labels) <= 2:
        return " and ".join(labels)
    return f"{labels[0]} and {len(labels) - 1} others"


def where(counts: Counts) -> str:
    return " and ".join(counts)


def clock(t: float, now: float) -> str:
    """A time in a message: UTC, said so, whatever the server's timezone (a client that
    wants local time has the number in `estimated_start`)."""
    fmt = "%H:%M UTC" if t - now < 86400 else "%a %d %b %H:%M UTC"
    return f"{time.strftime(fmt, time.gmtime(t))} (in {format_duration(t - now)})"
