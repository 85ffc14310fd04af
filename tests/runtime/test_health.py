"""GPU health and idleness from telemetry reports: pure rules, no Ray."""

from orchestrator.core.health import FATAL_XIDS, HealthMonitor, HealthRules
from orchestrator.node.telemetry import GpuSample, NodeReport


def sample(index: int, util: float = 0.0, ecc: int = 0, xids: tuple = ()) -> GpuSample:
    return GpuSample(index, util, 0, 80, 30.0, 70.0, 0, ecc, xids)


def report(at: float, *gpus: GpuSample, node: str = "gmi-node-2") -> NodeReport:
    return NodeReport(node, at, "simulated", "test", gpus)


def test_a_fatal_xid_makes_exactly_that_gpu_unhealthy():
    m = HealthMonitor()
    found = m.observe(report(0, sample(2), sample(3, xids=((79, 1),))), {})
    assert [(f.node, f.gpu, f.kind) for f in found] == [("gmi-node-2", 3, "xid")]
    assert "XID 79" in found[0].reason


def test_an_application_xid_is_not_fatal():
    assert 13 not in FATAL_XIDS
    assert HealthMonitor().observe(report(0, sample(0, xids=((13, 4),))), {}) == []


def test_xids_are_running_totals_so_a_missed_report_loses_nothing_and_nothing_counts_twice():
    m = HealthMonitor()
    assert m.observe(report(0, sample(0, xids=((13, 1),))), {}) == []
    # The report in between was lost; the total still shows the XID 79 that came then.
    assert [f.kind for f in m.observe(report(10, sample(0, xids=((13, 1), (79, 1)))), {})] == ["xid"]
    assert m.observe(report(15, sample(0, xids=((13, 1), (79, 1)))), {}) == []
    # The agent restarted: its totals start again, and a new XID 79 is news.
    assert [f.kind for f in m.observe(report(20, sample(0, xids=((79, 1),))), {})] == []
    assert [f.kind for f in m.observe(report(25, sample(0, xids=((79, 2),))), {})] == ["xid"]


def test_uncorrected_ecc_errors_count_only_when_they_rise():
    m = HealthMonitor()
    assert [f.kind for f in m.observe(report(0, sample(0, ecc=2)), {})] == ["ecc"]
    assert m.observe(report(5, sample(0, ecc=2)), {}) == []  # same count: already reported
    assert [f.kind for f in m.observe(report(10, sample(0, ecc=3)), {})] == ["ecc"]


def test_a_node_that_stops_reporting_is_found_once():
    m = HealthMonitor(HealthRules(silent_after_s=30))
    m.observe(report(100, sample(0)), {})
    assert m.silence(129) == []
    found = m.silence(131)
    assert [(f.node, f.gpu, f.kind) for f in found] == [("gmi-node-2", None, "silent")]
    assert m.silence(200) == []  # not again while it stays silent
    m.observe(report(201, sample(0)), {})
    assert m.silence(232)  # silent again after it came back


def test_a_gpu_is_idle_only_after_a_whole_window_under_the_threshold_with_one_job():
    m = HealthMonitor(HealthRules(idle_utilization=0.05, idle_window_s=600))
    m.observe(report(0, sample(0, util=0.01)), {0: "job-a"})
    assert m.idle(599) == {}
    assert m.idle(600) == {("gmi-node-2", 0): ("job-a", 0)}
    m.observe(report(610, sample(0, util=0.5)), {0: "job-a"})  # it got busy: the clock restarts
    assert m.idle(2000) == {}
    m.observe(report(700, sample(0, util=0.0)), {0: "job-b"})  # another job: its own clock
    assert m.idle(1299) == {} and m.idle(1300) == {("gmi-node-2", 0): ("job-b", 700)}


def test_a_free_gpu_is_never_idle():
    m = HealthMonitor(HealthRules(idle_window_s=1))
    m.observe(report(0, sample(0, util=0.0)), {})
    assert m.idle(100) == {}
