"""Simulation results for people: a table, JSON, and a picture comparing policies."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from rich import box
from rich.table import Table

from orchestrator.core.durations import format_duration
from orchestrator.sim.simulator import Result


def table(results: Sequence[Result]) -> Table:
    t = Table(title="gpuq simulate — queue wait: avg, p50, p95, max", box=box.SIMPLE_HEAD)
    for col in ("policy", "jobs", "util", "avg", "p50", "p95", "max", "avg JCT", "makespan", "preempted"):
        t.add_column(col, justify="left" if col == "policy" else "right", no_wrap=True)
    for r in results:
        t.add_row(
            r.policy,
            f"{r.jobs:,}" + (f" +{r.dropped} dropped" if r.dropped else ""),
            f"{r.utilization:.1%}",
            *(
                format_duration(x)
                for x in (r.avg_wait_s, r.p50_wait_s, r.p95_wait_s, r.max_wait_s, r.avg_jct_s, r.makespan_s)
            ),
            str(r.preemptions),
        )
    return t


def write_json(results: Sequence[Result], path: str | Path) -> None:
    Path(path).write_text(json.dumps([r.summary() for r in results], indent=2) + "\n")


def write_plot(results: Sequence[Result], total_gpus: int, path: str | Path) -> None:
    """Utilization over time (hourly average) and the wait-time CDF, one line per policy."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt

    fig, (ax_util, ax_cdf) = plt.subplots(1, 2, figsize=(13, 4.5))
    for r in results:
        hours, util = _hourly_utilization(r.busy_series, total_gpus, r.makespan_s)
        ax_util.plot([h / 24 for h in hours], util, label=r.policy, linewidth=0.8)
        waits_h = [w / 3600 for w in r.waits]
        n = len(waits_h)
        ax_cdf.plot(waits_h, [(i + 1) / n for i in range(n)], label=r.policy)
    ax_util.set(
        title="GPU utilization (hourly mean)",
        xlabel="days since first submit",
        ylabel="utilization",
        ylim=(0, 1.02),
    )
    ax_cdf.set(title="Queue wait CDF", xlabel="wait (hours, log scale)", ylabel="fraction of jobs")
    ax_cdf.set_xscale("symlog", linthresh=0.1)
    for ax in (ax_util, ax_cdf):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _hourly_utilization(
    series: list[tuple[float, int]], total: int, end: float
) -> tuple[list[float], list[float]]:
    """Time-weighted mean of the busy-GPU step function, per hour."""
    hours = int(end // 3600) + 1
    busy_seconds = [0.0] * hours
    for (t, busy), (t_next, _) in zip(series, [*series[1:], (end, 0)], strict=True):
        while t < t_next:
            h = int(t // 3600)
            if h >= hours:
                break
            step = min(t_next, (h + 1) * 3600.0) - t
            busy_seconds[h] += busy * step
            t += step
    return list(range(hours)), [b / (3600.0 * total) for b in busy_seconds]
