"""The jobs' Python: which interpreter a Ray job's `python` is, and whether every user
may run it.

A Ray job needs a Python with the cluster's own Ray (the same version as gpuq's Ray,
whose wire format its nodes speak). gpuq's own venv interpreter is that Python, when
every account may execute it and read its packages: `scripts/up` builds the venv from
a system Python at a world-readable path for this. A venv made from a Python under
/root (pyenv's, on this machine's image) is not: then the site names one
(`job_python`), or Ray jobs are refused at submit with the fix.
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from orchestrator.host.accounts import closed_to_others


@dataclass(frozen=True)
class JobPython:
    path: str | None  # the interpreter jobs are given (None: none found)
    ray_ready: bool  # every account that runs jobs may run it, and it is gpuq's (so has its Ray)
    why_not: str = ""  # for a refused Ray job: what to fix


FIX = (
    "run scripts/up with a Python every user may run (PYTHON=/usr/bin/python3.11 scripts/up rebuilds .venv "
    "from "
    "it), or set job_python in the site config to a Python with Ray {version} that every user may run"
)


def resolve(configured: str | None, job_path: str) -> JobPython:
    import ray

    fix = FIX.format(version=ray.__version__)
    if configured:
        found = configured if os.path.isabs(configured) else shutil.which(configured, path=job_path)
        if not found:
            return JobPython(None, False, f"job_python {configured} is not on the job's PATH; {fix}")
        blocked = closed_to_others(found)
        return JobPython(found, not blocked, f"job_python {found}: {blocked}; {fix}" if blocked else "")
    own = str(
        Path(sys.prefix) / "bin" / "python"
    )  # gpuq's venv (not sys.executable: that is the resolved link)
    blocked = closed_to_others(own) or closed_to_others(sysconfig.get_paths()["purelib"], "read and run")
    if not blocked:
        return JobPython(own, True)
    return JobPython(shutil.which("python3", path=job_path), False, f"gpuq's Python {own}: {blocked}; {fix}")
