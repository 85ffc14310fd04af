"""Job traces for the simulator: the Philly CSV and a generic CSV with a column map.

Philly (../shared/traces/philly.csv): timestamp (YYYY-MM-DD HH:MM:SS, submit time),
duration (s), num_gpus, gpu_time, cluster (the virtual cluster). It has no users or
priorities. A generic CSV names its columns with a mapping:
submit=COL,duration=COL,gpus=COL[,user=COL,priority=COL]; submit is in seconds.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from orchestrator.core.errors import GpuqError
from orchestrator.core.priority import Priority

PHILLY_COLUMNS = ("timestamp", "duration", "num_gpus", "gpu_time", "cluster")
REQUIRED = ("submit", "duration", "gpus")
OPTIONAL = ("user", "priority", "id", "after")  # after: ids of jobs it waits for, ':'-separated (afterok)


class TraceError(GpuqError):
    pass


@dataclass(frozen=True)
class TraceJob:
    submit: float
    duration: float
    gpus: int
    user: str = "-"
    priority: int = int(Priority.NORMAL)
    id: str = ""  # the trace's own id, for `after`
    after: tuple[str, ...] = ()  # ids of jobs that must complete first (Slurm's afterok)
    limit: float | None = None  # the time limit it was submitted with, where known (a live replay's)


def parse_columns(text: str) -> dict[str, str]:
    """`submit=ts,duration=run_s,gpus=n` -> {"submit": "ts", ...}; names every problem."""
    mapping: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, col = part.partition("=")
        if not sep or not col:
            raise TraceError(f"--columns: {part!r} should look like KEY=COLUMN")
        if key not in REQUIRED + OPTIONAL:
            raise TraceError(f"--columns: unknown key {key!r}; use {', '.join(REQUIRED + OPTIONAL)}")
        mapping[key] = col
    missing = [k for k in REQUIRED if k not in mapping]
    if missing:
        raise TraceError(f"--columns: missing {', '.join(missing)}")
    return mapping


def load_trace(
    path: str | Path, vc: str | None = None, columns: dict[str, str] | None = None
) -> list[TraceJob]:
    """Jobs sorted by submit time (stable: ties keep file order)."""
    path = Path(path)
    if not path.exists():
        raise TraceError(f"no trace at {path}")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        if columns is None:
            if not set(PHILLY_COLUMNS) <= set(header):
                raise TraceError(
                    f"{path} is not in the Philly format (columns {', '.join(PHILLY_COLUMNS)}); "
                    "give --columns submit=COL,duration=COL,gpus=COL"
                )
            jobs = [
                _philly_row(row, n)
                for n, row in enumerate(reader, start=2)
                if vc is None or row["cluster"] == vc
            ]
        else:
            absent = [c for c in columns.values() if c not in header]
            if absent:
                raise TraceError(f"{path} has no column {', '.join(absent)} (it has {', '.join(header)})")
            if vc is not None:
                raise TraceError("--vc applies to the Philly format only")
            jobs = [_generic_row(row, columns, n) for n, row in enumerate(reader, start=2)]
    jobs.sort(key=lambda j: j.submit)
    return jobs


def _philly_row(row: dict[str, str], line: int) -> TraceJob:
    try:
        submit = datetime.strptime(row["timestamp"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()
        return TraceJob(submit, float(row["duration"]), int(row["num_gpus"]))
    except (ValueError, KeyError) as e:
        raise TraceError(f"line {line}: {e}") from None


def _generic_row(row: dict[str, str], cols: dict[str, str], line: int) -> TraceJob:
    try:
        prio = int(Priority.parse(row[cols["priority"]])) if "priority" in cols else int(Priority.NORMAL)
        return TraceJob(
            float(row[cols["submit"]]),
            float(row[cols["duration"]]),
            int(float(row[cols["gpus"]])),
            row[cols["user"]] if "user" in cols else "-",
            prio,
            row[cols["id"]] if "id" in cols else "",
            tuple(filter(None, row[cols["after"]].split(":"))) if "after" in cols else (),
        )
    except ValueError as e:
        raise TraceError(f"line {line}: {e}") from None
