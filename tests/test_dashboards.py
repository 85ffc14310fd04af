"""Dashboards as code, the scrape config and the alert rules — checked by the SDK's
generator, by promtool, and by a real Prometheus scraping a real workload."""

import importlib.util
import json
import shutil
import subprocess

import pytest

from tests.orchestration import Harness
from tests.promserver import DASHBOARDS
from tests.raycluster import wait_for


def _build_module():
    spec = importlib.util.spec_from_file_location("dashboards_build", DASHBOARDS / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build = _build_module()
# What Grafana fills in before a query reaches Prometheus.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "10m", "$node": ".*"}


def committed() -> dict[str, dict]:
    return {name: json.loads((DASHBOARDS / name).read_text()) for name in build.render()}


def test_committed_json_is_what_the_generator_makes():
    for name, text in build.render().items():
        assert (DASHBOARDS / name).read_text() == text, (
            f"{name} is stale: run .venv/bin/python dashboards/build.py"
        )


def test_the_overview_has_the_seeds_planned_panels():
    titles = {p["title"] for p in committed()["overview.json"]["panels"]}
    assert {
        "Total GPUs",
        "Available GPUs",
        "Allocated GPUs",
        "Allocation",
        "Queued",
        "Running",
        "Completed",
        "Failed",
        "GPU utilization",
        "Queue wait time",
        "Active jobs",
    } <= titles


def test_every_dashboard_has_a_unique_uid_and_a_datasource_variable():
    dashboards = committed().values()
    assert len({d["uid"] for d in dashboards}) == len(build.DASHBOARDS)
    for d in dashboards:
        assert d["templating"]["list"][0]["type"] == "datasource"
        for panel in d["panels"]:
            if panel["type"] != "row":
                assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


@pytest.mark.parametrize("what", ["config", "rules"])
def test_promtool_accepts_the_shipped_files(what):
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing; scripts/test installs Debian's prometheus package"
    path = DASHBOARDS / ("prometheus.yml" if what == "config" else "alerts.yml")
    # The config names Prometheus's token file, which exists only where an operator made
    # it: check its syntax here (the real Prometheus below loads it whole, with a token).
    syntax_only = ["--syntax-only"] if what == "config" else []
    out = subprocess.run([promtool, "check", what, *syntax_only, str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_alert_rules_behave_as_their_unit_tests_say():
    out = subprocess.run(
        [shutil.which("promtool"), "test", "rules", str(DASHBOARDS / "alerts_test.yml")],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr


# --- against a real Prometheus -------------------------------------------------------

WATCHED = dict(telemetry_interval_s=0.5, idle_window_s=2.0, node_silent_after_s=30.0)


@pytest.fixture
def workload(ray_cluster, api, prometheus, tmp_path):
    """A short workload: one job completed, one failed, one running (idle), one queued
    behind it, and an XID injected on the running job's node."""
    harness = Harness(tmp_path, **WATCHED)
    done = harness.submit("true", run_id="done")
    failed = harness.submit("exit 2", run_id="broken", max_retries=0)
    running = harness.submit("sleep 300", gpus=8, run_id="long", user="bob")
    harness.wait_state(done, "completed")
    harness.wait_state(failed, "failed")
    harness.wait_state(running, "running")
    harness.submit("sleep 300", gpus=16, run_id="waits")
    harness.call("inject", "gmi-node-2", "xid", 5, 79)
    yield harness
    harness.teardown()


def test_every_panel_query_returns_data_and_an_xid_fires_the_unhealthy_alert(workload, prometheus):
    # Prometheus has the workload once its scrape shows what the orchestrator says now.
    status = workload.call("status")
    wait_for(
        lambda: [r["value"][1] for r in prometheus.query('gpuq_jobs{state="completed"}')] == ["1"],
        30,
        what="Prometheus to scrape the finished job",
    )
    alert = wait_for(
        lambda: [
            a
            for a in prometheus.alerts()
            if a["labels"]["alertname"] == "GpuqGpuUnhealthy" and a["state"] == "firing"
        ],
        30,
        what="the GPU-unhealthy alert to fire",
    )
    assert [(a["labels"]["node"], a["labels"]["gpu"]) for a in alert] == [("gmi-node-2", "5")]
    assert (
        float(prometheus.query("gpuq_gpus_total")[0]["value"][1]) == status["resource_summary"]["total_gpus"]
    )

    empty = []
    for name, dashboard in committed().items():
        for title, expr in build.queries(dashboard):
            for var, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(var, value)
            try:
                wait_for(lambda expr=expr: prometheus.query(expr), 15, 0.5, what=expr)
            except AssertionError:
                empty.append(f"{name} / {title}: {expr}")
    assert not empty, "panels whose query returned no data:\n" + "\n".join(empty)
