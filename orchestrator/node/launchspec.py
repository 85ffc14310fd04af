"""One attempt of a job, as its runners start it: what the service decides about a launch
(launches.py), carried unchanged through the backend (backend.py) to each rank's runner
(runner.py). Before, it was twelve parameters passed along three calls.

No Ray here: it crosses to the runners pickled, and the fake backend reads it too.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class LaunchSpec:
    job_id: str
    attempt: int
    command: str  # a shell command line, run with bash -c
    env: dict[str, str]  # the job's own and gpuq's variables (each rank adds its own)
    working_dir: str | None
    time_limit: float  # seconds from the command's start
    grace: float  # seconds between TERM and KILL
    account: str | None = None  # the Unix account it runs as (None: the runner's own)
    base_env: dict[str, str] = field(
        default_factory=dict
    )  # what its environment starts from (PATH, LANG, TZ)
    group_read: bool = False  # its log folder is readable by its group
    renv: dict | None = None  # its runtime env, as the node makes it (core/runtime_env.plan)
    limits: dict | None = None  # CPUs and memory (runner.rank_limits)
    lease_s: float | None = None  # the node lease (core/lease.py): None, no fence (an older head)
