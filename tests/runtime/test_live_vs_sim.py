"""The simulator predicts the live scheduler (issue #32): a burst of real Philly jobs
(durations scaled down to seconds) through the session cluster, and the same arrivals
through the simulator, agree on how busy the GPUs were while jobs waited.

The issue's bound, 2 points, is measured on 200 jobs by scripts/bench_live_vs_sim.py
(docs/BENCHMARKS.md: +0.2 and +0.3 pt in two runs). A burst short enough for the suite
(40 jobs of about 2 s) is a small sample: one reservation made a second earlier or
later moves its figure by points, and against either replay alone it missed 2 points
in about half the runs here (live minus predicted −2.8 to +1.2, minus as held +0.4 to +5.7).
The two replays bracket it, though: one ignores the launch each job pays, the other
replays those longer holds with the simulator's own, earlier decisions. So this
asserts that the live figure lies within 3 points of the range between them. In the
seven runs measured with both (six of 40 jobs, one of 200) it lay at most 1.2 points
outside it. That catches live accounting or decisions gone wrong, which miss by tens
of points; the 2-point agreement itself is the 200-job script's.

Two-second jobs on this cluster (no warm slots) spend about 0.6 s more holding their
GPUs than sleeping, being launched and ended; jobs of hours do not notice it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.sim.test_simulator import PHILLY

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_a_live_burst_is_as_busy_while_jobs_wait_as_the_simulator_says(api, orch, tmp_path):
    out = tmp_path / "agreement.json"
    run = subprocess.run(
        [
            sys.executable,
            "scripts/bench_live_vs_sim.py",
            *("--trace", str(PHILLY), "--jobs", "40", "--mean-s", "2", "--max-s", "8"),
            *("--url", api, "--token", "alice-token", "--json", str(out)),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    got = json.loads(out.read_text())
    live = got["live"]["utilization_while_waiting"]
    replays = [got[k]["utilization_while_waiting"] for k in ("predicted", "as_held")]
    assert live is not None and None not in replays  # the burst made jobs wait, live and simulated
    assert min(replays) - 0.03 <= live <= max(replays) + 0.03, run.stdout
