"""The policy suite: which traces, on how many nodes, and the targets the default must meet."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.core.policy import PolicyConfig
from orchestrator.sim.simulator import simulate
from orchestrator.sim.suite import (
    Targets,
    at_load,
    busy_while_waiting,
    cluster_for,
    nodes_for,
    offered_load,
    replay_one,
    standard_suite,
    variant,
)
from orchestrator.sim.traces import TraceJob
from tests.sim.test_simulator import PHILLY

TRACES = PHILLY.parent
REPO = Path(__file__).resolve().parents[2]


def test_offered_load_is_gpu_seconds_over_the_submit_span():
    jobs = [TraceJob(0, 100, 2), TraceJob(50, 300, 4), TraceJob(100, 10, 1)]
    assert offered_load(jobs) == pytest.approx((200 + 1200 + 10) / 100)


@pytest.mark.parametrize(
    ("largest", "load_gpus", "nodes"),
    [(1, 1.0, 2), (24, 1.0, 3), (1, 27.2, 4), (1, 27.3, 5), (64, 100.0, 15)],
)
def test_a_trace_gets_enough_nodes_for_its_largest_job_and_about_85_percent_load(largest, load_gpus, nodes):
    # Two jobs over 1000 s whose work makes the wanted offered load.
    jobs = [TraceJob(0, 1000 * load_gpus / largest, largest), TraceJob(1000, 0, 1)]
    assert nodes_for(jobs) == nodes
    assert cluster_for(jobs) == {f"node-{i + 1}": 8 for i in range(nodes)}


def test_a_trace_below_its_load_is_pressed_to_exactly_that_load():
    # 1-GPU jobs offering 2.2 GPUs: at 110 % they get the 2-node floor, 16 GPUs, so their
    # submits are pressed together to offer 17.6; durations, sizes and order are kept.
    jobs = [TraceJob(100 + 10 * i, 20.0, 1, user=f"u{i}") for i in range(11)]
    pressed, sizes = at_load(jobs, 1.1)
    assert sizes == cluster_for(jobs, load=1.1) and sum(sizes.values()) == 16
    assert offered_load(pressed) == pytest.approx(1.1 * 16)
    assert pressed[0].submit == 100 and [j.submit for j in pressed] == sorted(j.submit for j in pressed)
    assert [(j.duration, j.gpus, j.user) for j in pressed] == [(j.duration, j.gpus, j.user) for j in jobs]
    # A trace that already loads its cluster to the target is left as it is.
    busy = [TraceJob(0, 1000.0, 8), TraceJob(1000, 1000.0, 8)]
    assert at_load(busy, 1.0) == (busy, {"node-1": 8, "node-2": 8})


def test_the_suite_is_every_philly_vc_with_1000_jobs_and_the_four_itp_clusters():
    names = [t.name for t in standard_suite(TRACES)]
    assert names[-4:] == ["itp-01", "itp-02", "itp-03", "itp-04"]
    philly = names[:-4]
    assert "philly-11cb48" in philly and "philly-ed69ec" in philly  # 16,091 and 1,137 jobs
    for t in standard_suite(TRACES)[:-4]:
        assert len(t.load()) >= 1000
    assert len(philly) == 8


def test_targets_compare_the_default_with_greedy_and_easy():
    trace = [TraceJob(0, 1000, 8), TraceJob(1, 100, 16), TraceJob(2, 500, 4)]
    two = {"a": 8, "b": 8}
    greedy, easy = (simulate(trace, PolicyConfig.preset(p), two) for p in ("greedy", "easy"))
    assert Targets().check(easy, greedy, easy) == {
        "avg wait <= greedy": easy.avg_wait_s <= greedy.avg_wait_s,
        "max wait <= EASY": True,
        "util >= EASY - 0.5 pt": True,
    }


def test_a_variant_changes_only_the_knobs_it_names():
    cfg = variant("age:1,short:0.25,sticky:0,depth:2")
    assert (cfg.weights.age_weight, cfg.weights.short_weight, cfg.weights.fairshare_weight) == (
        1.0,
        0.25,
        0.5,
    )
    assert not cfg.sticky_reservations and cfg.reservation_depth == 2
    with pytest.raises(ValueError, match="unknown key 'horizon'"):
        variant("horizon:30d")


def test_under_overload_the_targets_are_busy_while_waiting_makespan_and_max_wait():
    easy = {"utilization_while_waiting": 0.96, "makespan_s": 1000.0, "max_wait_s": 50.0}
    base = {"avg_wait_s": 1.0, "utilization": 0.9}
    names = Targets.names(1.2)
    assert names == Targets.OVERLOAD_NAMES and Targets.names(0.95) == Targets.NAMES
    met = {**base, "utilization_while_waiting": 0.957, "makespan_s": 1010.0, "max_wait_s": 50.0}
    assert Targets().check_values(met, {}, {**base, **easy}, load=1.2) == dict.fromkeys(names, True)
    missed = {**base, "utilization_while_waiting": 0.94, "makespan_s": 1011.0, "max_wait_s": 51.0}
    assert Targets().check_values(missed, {}, {**base, **easy}, load=1.2) == dict.fromkeys(names, False)
    # 95 % only where some policy reaches it: here none does, so 0.90 is not a miss of it.
    low = {**easy, "utilization_while_waiting": 0.905}
    checks = Targets().check_values(
        {**missed, "utilization_while_waiting": 0.90}, {}, low, load=1.2, best_busy=0.91
    )
    assert checks[names[0]] and checks[names[1]]


@pytest.mark.parametrize(("name", "load"), [("philly-0e4a51", 0.85), ("philly-0e4a51", 1.2), ("itp-02", 1.2)])
def test_the_default_meets_its_targets_on_these_suite_traces(name, load):
    """A guard, not a proof: small traces of the suite where the default meets every
    target of its load today (docs/BENCHMARKS.md has the whole suite). A change to the
    policy that loses one of them fails here."""
    trace = next(t for t in standard_suite(TRACES) if t.name == name)
    d, g, e = (replay_one(trace, p, load) for p in ("default", "greedy", "easy"))
    best = max(busy_while_waiting(r) for r in (d, g, e))
    assert Targets().check_values(d, g, e, load, best) == dict.fromkeys(Targets.names(load), True)


def test_the_suite_script_prints_the_targets_and_writes_json(tmp_path):
    out = tmp_path / "suite.json"
    run = subprocess.run(
        [
            sys.executable,
            "scripts/bench_policy_suite.py",
            "--traces",
            str(TRACES),
            "--only",
            "philly-ed69ec",
            "--load",
            "0.85",
            "1.2",
            "--with",
            "no-sticky=sticky:0",
            "--jobs",
            "1",
            "--json",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert "the default against its targets at 85% load" in run.stdout
    assert "busy|wait (best)" in run.stdout  # at 120 %, the overload targets
    data = json.loads(out.read_text())
    assert {(v["policy"], v["load"]) for v in data["verdicts"]} == {
        ("default", 0.85),
        ("no-sticky", 0.85),
        ("default", 1.2),
        ("no-sticky", 1.2),
    }
    assert {r["policy"] for r in data["replays"]} == {"greedy", "easy", "default", "no-sticky"}
