"""The simulator predicts the live scheduler (issue #32): a burst of real Philly jobs
(durations scaled down to seconds) through the session cluster, and the same arrivals
through the simulator, agree on how busy the GPUs were while jobs waited.

The issue's bound, 2 points, is measured on 200 jobs by scripts/bench_live_vs_sim.py
(docs/BENCHMARKS.md: +0.2 and +0.3 pt in two runs). A burst short enough for the suite
(40 jobs of about 2 s) is a small sample: one reservation made a second earlier or
later moves its figure by points. Measured on this machine, live minus the replay
ranged from +0.4 to +2.3 pt over three runs. So this asserts 4 points: enough to catch
live accounting or decisions gone wrong (those miss by tens of points), not a coin toss.

The replay holds each job's GPUs as long as they were held live: two-second jobs on
this cluster (no warm slots) spend about 0.6 s of it being launched, which the
simulator does not model and jobs of hours do not notice. What is compared is then
the decisions: when each job started, and what was kept free for whom."""

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
    live, sim = got["live"]["utilization_while_waiting"], got["as_held"]["utilization_while_waiting"]
    assert live is not None and sim is not None  # the burst made jobs wait, live and simulated
    assert abs(got["as_held"]["live_minus_sim_pt"]) <= 4.0, run.stdout
