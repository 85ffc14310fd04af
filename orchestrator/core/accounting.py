"""Usage accounting: GPU-hours per user and per day (Slurm's sacct/sreport). Pure.

A *run* is one attempt of a job on its GPUs, from RUNNING to its end; its usage is
GPUs × seconds. Finished runs are stored (orchestrator/head/store.py, table `usage`) and
loaded here at start; runs still going count up to `now` when asked. Days are UTC
calendar days, and a run that crosses midnight is split between them.

The same records feed fair-share (orchestrator/core/fairshare.py) after a restart, so a
user's recent usage is not forgotten when the orchestrator restarts.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

DAY_S = 86400.0


@dataclass(frozen=True)
class Run:
    job_id: str
    attempt: int
    user: str
    gpus: int
    start: float
    end: float

    @property
    def gpu_seconds(self) -> float:
        return self.gpus * max(0.0, self.end - self.start)


class Accounting:
    def __init__(self, runs: Iterable[Run] = ()):
        self.runs: list[Run] = []
        self.totals: dict[str, float] = defaultdict(float)  # user -> GPU-seconds of finished runs, all time
        for r in runs:
            self.add(r)

    def add(self, run: Run) -> None:
        self.runs.append(run)
        self.totals[run.user] += run.gpu_seconds

    def report(
        self, since: float, until: float, running: Iterable[Run] = (), user: str | None = None
    ) -> dict[str, Any]:
        """GPU-hours in [since, until) per user and per (UTC day, user)."""
        per_user: dict[str, float] = defaultdict(float)
        jobs: dict[str, set[str]] = defaultdict(set)
        per_day: dict[tuple[str, str], float] = defaultdict(float)
        for r in [*self.runs, *running]:
            if user is not None and r.user != user:
                continue
            lo, hi = max(r.start, since), min(r.end, until)
            if hi <= lo:
                continue
            per_user[r.user] += r.gpus * (hi - lo)
            jobs[r.user].add(r.job_id)
            for day, seconds in split_by_day(lo, hi):
                per_day[(day, r.user)] += r.gpus * seconds
        total = sum(per_user.values())
        return {
            "since": since,
            "until": until,
            "total_gpu_hours": total / 3600,
            "users": [
                {"user": u, "gpu_hours": s / 3600, "share": s / total if total else 0.0, "jobs": len(jobs[u])}
                for u, s in sorted(per_user.items(), key=lambda kv: -kv[1])
            ],
            "days": [{"day": d, "user": u, "gpu_hours": s / 3600} for (d, u), s in sorted(per_day.items())],
        }


def split_by_day(start: float, end: float) -> list[tuple[str, float]]:
    """[(YYYY-MM-DD, seconds)] of the interval [start, end) cut at UTC midnights."""
    out = []
    t = start
    while t < end:
        midnight = (t // DAY_S + 1) * DAY_S
        cut = min(end, midnight)
        out.append((datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d"), cut - t))
        t = cut
    return out
