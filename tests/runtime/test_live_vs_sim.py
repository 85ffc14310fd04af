"""The simulator predicts the live scheduler: a burst of real Philly jobs (durations
scaled down to seconds) through the session cluster, and the same arrivals through the
simulator, agree on how busy the GPUs were while jobs waited, within 2 points (issue
#32). scripts/bench_live_vs_sim.py does it with 200 jobs for docs/BENCHMARKS.md; this
is a short one, in the slow tier."""

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
    live, sim = got["live"]["utilization_while_waiting"], got["sim"]["utilization_while_waiting"]
    assert live is not None and sim is not None  # the burst made jobs wait, live and simulated
    assert abs(got["difference_pt"]) <= 2.0, run.stdout
