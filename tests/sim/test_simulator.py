"""The simulator: the same plan() replaying traces with a virtual clock."""

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestrator.cli.main import app
from orchestrator.core.policy import PolicyConfig
from orchestrator.sim.simulator import simulate, time_limit
from orchestrator.sim.traces import TraceError, TraceJob, load_trace, parse_columns

PHILLY = Path(
    os.environ.get("GPUQ_PHILLY_TRACE", Path(__file__).resolve().parents[3] / "shared/traces/philly.csv")
)
TWO = {"gmi-node-1": 8, "gmi-node-2": 8}


def test_small_replay_by_hand():
    trace = [TraceJob(0, 100, 2), TraceJob(10, 50, 1)]
    r = simulate(trace, PolicyConfig.preset("fifo"), {"n": 2})
    assert (r.jobs, r.max_wait_s, r.makespan_s) == (2, 90, 150)
    assert r.avg_wait_s == 45 and r.avg_jct_s == (100 + 140) / 2
    assert r.utilization == pytest.approx((2 * 100 + 1 * 50) / (2 * 150))


def test_jobs_larger_than_the_cluster_are_dropped_and_counted():
    r = simulate([TraceJob(0, 10, 32), TraceJob(0, 10, 1)], PolicyConfig.preset("easy"), TWO)
    assert (r.jobs, r.dropped) == (1, 1)


def test_backfill_beats_fifo_on_a_blocked_line():
    trace = [TraceJob(0, 1000, 8), TraceJob(1, 100, 16), TraceJob(2, 500, 4)]
    fifo = simulate(trace, PolicyConfig.preset("fifo"), TWO)
    easy = simulate(trace, PolicyConfig.preset("easy"), TWO)
    assert easy.avg_wait_s < fifo.avg_wait_s and easy.max_wait_s <= fifo.max_wait_s


def test_idle_gpus_while_jobs_wait_are_told_by_cause_and_sum_to_the_idle_time():
    """A node runs an 8-GPU job for 1000 s; a 16-GPU job waits for it; a 4-GPU job with a
    2000 s limit comes next. EASY drains the free node for the big job: its 8 GPUs idle
    999 s "for a reservation". Greedy backfills the small job instead, and the big one
    waits among GPUs no job in line fits: "fragmentation"."""
    trace = [TraceJob(0, 1000, 8), TraceJob(1, 100, 16), TraceJob(2, 2000, 4)]
    easy = simulate(trace, PolicyConfig.preset("easy"), TWO)
    waited = 16 * (999 + 100)  # GPU-seconds while a job waited: t = 1 to 1100
    assert easy.utilization_while_waiting == pytest.approx((8 * 999 + 16 * 100) / waited)
    assert easy.idle_while_waiting == {"reservation": pytest.approx(8 * 999 / waited)}
    greedy = simulate(trace, PolicyConfig.preset("greedy"), TWO)
    assert set(greedy.idle_while_waiting) == {"fragmentation"}
    assert greedy.utilization_while_waiting + sum(greedy.idle_while_waiting.values()) == pytest.approx(1.0)
    alone = simulate([TraceJob(0, 10, 1)], PolicyConfig(), TWO)
    assert alone.utilization_while_waiting is None and alone.idle_while_waiting == {}


def test_preemption_in_replay_requeues_the_victim():
    trace = [TraceJob(0, 1000, 16, "a", 1), TraceJob(10, 100, 8, "b", 4)]
    r = simulate(trace, PolicyConfig(), TWO)
    assert r.preemptions == 1
    assert r.max_wait_s == 110  # the victim restarts when the urgent job ends


@pytest.mark.parametrize(
    ("duration", "limit"),
    [(1, 3600), (3600, 3600), (3601, 7200), (86401, 3 * 86400), (40 * 86400 + 1, 41 * 86400)],
)
def test_coarse_time_limits_round_up_as_users_type_them(duration, limit):
    assert time_limit(duration, "coarse") == limit
    assert time_limit(duration, "exact") == duration


def test_generic_csv_with_a_column_map(tmp_path):
    f = tmp_path / "t.csv"
    f.write_text("t,run,n,who,prio\n5,10,2,alice,HIGH\n1,20,1,bob,1\n")
    jobs = load_trace(f, columns=parse_columns("submit=t,duration=run,gpus=n,user=who,priority=prio"))
    assert jobs == [TraceJob(1, 20, 1, "bob", 1), TraceJob(5, 10, 2, "alice", 3)]


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("submit=t,gpus=n", "missing duration"),
        ("submit=t,duration=d,gpus=n,size=x", "unknown key 'size'"),
        ("submit", "KEY=COLUMN"),
    ],
)
def test_bad_column_maps_are_named(spec, says):
    with pytest.raises(TraceError, match=says):
        parse_columns(spec)


def test_missing_columns_and_formats_are_named(tmp_path):
    f = tmp_path / "t.csv"
    f.write_text("a,b\n1,2\n")
    with pytest.raises(TraceError, match="not in the Philly format"):
        load_trace(f)
    with pytest.raises(TraceError, match="has no column t"):
        load_trace(f, columns=parse_columns("submit=t,duration=a,gpus=b"))


def philly():
    assert PHILLY.exists(), f"the Philly trace is expected at {PHILLY} (set GPUQ_PHILLY_TRACE)"
    return load_trace(PHILLY, vc="11cb48")


def test_philly_vc_11cb48_loads():
    jobs = philly()
    assert len(jobs) == 16091 and max(j.gpus for j in jobs) == 16
    assert [j.submit for j in jobs] == sorted(j.submit for j in jobs)


# An independent simulator's figures on this VC (2 x 8 GPUs, best fit, exact limits).
INDEPENDENT = {
    "fifo": (0.596, 466.6, 1260.2),
    "greedy": (0.737, 66.1, 962.3),
    "easy": (0.754, 73.4, 856.1),
}


@pytest.mark.parametrize("policy", sorted(INDEPENDENT))
def test_philly_replay_agrees_with_an_independent_simulator_within_5_percent(policy):
    r = simulate(philly(), PolicyConfig.preset(policy), TWO, limits="exact")
    util, avg_h, max_h = INDEPENDENT[policy]
    assert r.utilization == pytest.approx(util, rel=0.05)
    assert r.avg_wait_s / 3600 == pytest.approx(avg_h, rel=0.05)
    assert r.max_wait_s / 3600 == pytest.approx(max_h, rel=0.05)


def test_default_policy_with_coarse_limits_beats_greedy_average_and_easy_maximum():
    r = simulate(philly(), PolicyConfig(), TWO, limits="coarse")
    assert r.avg_wait_s / 3600 <= INDEPENDENT["greedy"][1]
    assert r.max_wait_s / 3600 <= INDEPENDENT["easy"][2]


def test_cli_simulate_writes_json_and_a_plot(tmp_path):
    trace = tmp_path / "t.csv"
    trace.write_text("s,d,g\n" + "".join(f"{i * 10},{100 + i},{1 + i % 4}\n" for i in range(40)))
    out, png = tmp_path / "r.json", tmp_path / "r.png"
    result = CliRunner().invoke(
        app,
        [
            "simulate",
            "--trace",
            str(trace),
            "--columns",
            "submit=s,duration=d,gpus=g",
            "--nodes",
            "1",
            "--policy",
            "fifo",
            "--policy",
            "default",
            "--time-limits",
            "coarse",
            "--json",
            str(out),
            "--plot",
            str(png),
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert [d["policy"] for d in data] == ["fifo", "default"]
    for key in (
        "jobs",
        "utilization",
        "avg_wait_s",
        "p50_wait_s",
        "p95_wait_s",
        "max_wait_s",
        "avg_jct_s",
        "makespan_s",
    ):
        assert key in data[0]
    assert 0 < data[0]["utilization"] <= 1
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_simulate_refuses_an_unknown_policy_without_a_traceback(tmp_path):
    trace = tmp_path / "t.csv"
    trace.write_text("s,d,g\n1,1,1\n")
    result = CliRunner().invoke(
        app, ["simulate", "--trace", str(trace), "--columns", "submit=s,duration=d,gpus=g", "--policy", "sjf"]
    )
    assert result.exit_code == 2
    assert "--policy 'sjf': use one of default, fifo, greedy, easy" in result.output
    assert "Traceback" not in result.output


def test_a_job_that_waits_for_another_starts_when_it_completes_and_holds_nothing_before(tmp_path):
    from orchestrator.sim.traces import load_trace, parse_columns

    trace = tmp_path / "pipeline.csv"
    trace.write_text(
        "id,t,d,g,after\npre,0,100,1,\ntrain,1,50,16,pre\neval,2,10,1,train\nother,3,20,1,\n"
        "orphan,4,5,1,nosuch\n"
    )
    jobs = load_trace(trace, columns=parse_columns("id=id,submit=t,duration=d,gpus=g,after=after"))
    result = simulate(jobs, PolicyConfig.preset("default"), {"gmi-node-1": 8, "gmi-node-2": 8})
    assert result.dropped == 1  # waits for a job the trace does not have
    # train waits for pre (100 s) though the GPUs are free; eval for train; `other` runs at once.
    assert result.jobs == 4 and result.max_wait_s == 148.0 and result.makespan_s == 160.0  # eval: 2 -> 150 s
