"""gpuq's Grafana dashboards, as code (grafana-foundation-sdk).

    .venv/bin/python dashboards/build.py           # writes dashboards/*.json
    .venv/bin/python dashboards/build.py --check   # exits 1 if a committed file is stale

Four dashboards over the metrics of orchestrator/head/metrics.py, through a Prometheus
data source chosen by the `datasource` variable:
- Overview: the seed's "Metrics Dashboard (Planned UI)": cluster status, job queue,
  GPU utilization, queue wait time, active jobs;
- GPUs: each GPU's state, utilization, memory, temperature, power, health, idleness;
- Scheduler: cycle latency, decisions, wait by priority, preemptions, retries;
- Users: GPU usage per user and their share.
The JSON files beside this script are what Grafana imports; tests/test_dashboards.py
fails if they differ from what this script generates, and runs every panel's query
against a real Prometheus.
"""

from __future__ import annotations

import sys
from pathlib import Path

from grafana_foundation_sdk.builders import bargauge, stat, table, timeseries
from grafana_foundation_sdk.builders.dashboard import Dashboard, DatasourceVariable, QueryVariable, Row
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef, DataTransformerConfig, VariableRefresh

HERE = Path(__file__).resolve().parent
DS = DataSourceRef(type_val="prometheus", uid="${datasource}")
SIMULATED_NOTE = (
    'Telemetry labelled source="simulated" comes from gpuq\'s simulation on nodes without NVML, '
    "not from GPUs."
)


def q(
    expr: str, legend: str | None = None, instant: bool = False, table_format: bool = False, ref: str = "A"
) -> Dataquery:
    query = Dataquery().expr(expr).ref_id(ref)
    if legend:
        query = query.legend_format(legend)
    if instant:
        query = query.instant()
    if table_format:
        query = query.format("table")
    return query


def number(title: str, expr: str, unit: str = "none", width: int = 4, description: str = "") -> stat.Panel:
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DS)
        .unit(unit)
        .span(width)
        .height(4)
        .with_target(q(expr, instant=True))
    )


def graph(
    title: str,
    *targets: Dataquery,
    unit: str = "none",
    width: int = 12,
    description: str = "",
    max_val: float | None = None,
) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DS)
        .unit(unit)
        .span(width)
        .height(8)
    )
    if max_val is not None:
        panel = panel.min(0).max(max_val)
    for t in targets:
        panel = panel.with_target(t)
    return panel


def organize(hide: list[str], rename: dict[str, str]) -> DataTransformerConfig:
    return DataTransformerConfig(
        id_val="organize", options={"excludeByName": {name: True for name in hide}, "renameByName": rename}
    )


def base(uid: str, title: str, description: str) -> Dashboard:
    return (
        Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["gpuq"])
        .refresh("10s")
        .time("now-1h", "now")
        .timezone("browser")
        .with_variable(DatasourceVariable("datasource").label("Data source").type("prometheus"))
    )


def overview() -> Dashboard:
    active = (
        table.Panel()
        .title("Active jobs")
        .datasource(DS)
        .span(24)
        .height(8)
        .unit("s")
        .description("Running jobs: run id, user, GPUs, placement and runtime.")
        .with_target(q("time() - gpuq_job_start_time_seconds", instant=True, table_format=True))
        .with_transformation(
            organize(
                ["Time", "__name__", "instance", "job", "job_id"],
                {
                    "run_id": "Run ID",
                    "user": "User",
                    "gpus": "GPUs",
                    "placement": "Placement",
                    "Value": "Runtime",
                },
            )
        )
    )
    return (
        base(
            "gpuq-overview",
            "gpuq / Overview",
            "The seed's planned dashboard: cluster, queue, utilization, wait, active jobs.",
        )
        .with_row(Row("Cluster status"))
        .with_panel(number("Total GPUs", "gpuq_gpus_total"))
        .with_panel(number("Available GPUs", "gpuq_gpus_available"))
        .with_panel(number("Allocated GPUs", "gpuq_gpus_allocated"))
        .with_panel(
            number(
                "Allocation",
                "gpuq_gpus_allocated / gpuq_gpus_total",
                "percentunit",
                description="Share of all GPUs held by jobs (the seed's utilization %).",
            )
        )
        .with_panel(number("Unhealthy GPUs", "gpuq_gpus_unhealthy"))
        .with_panel(
            number(
                "Idle allocated GPUs",
                "gpuq_gpus_idle",
                description="Held by a job but under the idle threshold for the whole window.",
            )
        )
        .with_row(Row("Job queue"))
        .with_panel(number("Queued", 'gpuq_jobs{state="queued"}', width=6))
        .with_panel(number("Running", 'gpuq_jobs{state="running"}', width=6))
        .with_panel(number("Completed", 'gpuq_jobs{state="completed"}', width=6))
        .with_panel(number("Failed", 'gpuq_jobs{state="failed"}', width=6))
        .with_row(Row("Utilization and wait"))
        .with_panel(
            graph(
                "GPU utilization",
                q("gpuq_gpus_allocated / gpuq_gpus_total", "allocated"),
                q("avg(gpuq_gpu_utilization_ratio)", "measured (mean of all GPUs)", ref="B"),
                unit="percentunit",
                max_val=1,
                description=SIMULATED_NOTE,
            )
        )
        .with_panel(
            graph(
                "Queue wait time",
                q('gpuq_queue_wait_now_seconds{stat="avg"}', "avg (jobs waiting now)"),
                q('gpuq_queue_wait_now_seconds{stat="max"}', "max (jobs waiting now)", ref="B"),
                q(
                    "sum(rate(gpuq_queue_wait_seconds_sum[$__rate_interval])) / "
                    "sum(rate(gpuq_queue_wait_seconds_count[$__rate_interval]))",
                    "avg (jobs started)",
                    ref="C",
                ),
                unit="s",
            )
        )
        .with_row(Row("Active jobs"))
        .with_panel(active)
    )


def gpus() -> Dashboard:
    sel = '{node=~"$node"}'
    legend = "{{node}}:{{gpu}}"
    states = (
        table.Panel()
        .title("GPU state")
        .datasource(DS)
        .span(12)
        .height(10)
        .description("Each GPU: free, allocated, draining, drained or unhealthy, and who holds it.")
        .with_target(q(f"gpuq_gpu_state{sel} == 1", instant=True, table_format=True))
        .with_transformation(
            organize(
                ["Time", "__name__", "instance", "job", "Value"],
                {"node": "Node", "gpu": "GPU", "state": "State"},
            )
        )
    )
    holders = (
        table.Panel()
        .title("Holders")
        .datasource(DS)
        .span(12)
        .height(10)
        .with_target(q('gpuq_gpu_allocated{node=~"$node", user!=""} == 1', instant=True, table_format=True))
        .with_transformation(
            organize(
                ["Time", "__name__", "instance", "job", "Value"],
                {"node": "Node", "gpu": "GPU", "user": "User"},
            )
        )
    )
    source = (
        table.Panel()
        .title("Telemetry source")
        .datasource(DS)
        .span(24)
        .height(4)
        .description(SIMULATED_NOTE)
        .with_target(q("gpuq_node_telemetry_info", instant=True, table_format=True))
        .with_transformation(
            organize(
                ["Time", "__name__", "instance", "job", "Value"],
                {"node": "Node", "source": "Source", "detail": "Detail"},
            )
        )
    )
    return (
        base(
            "gpuq-gpus",
            "gpuq / GPUs",
            "Per node and GPU: state, utilization, memory, temperature, power, health.",
        )
        .with_variable(
            QueryVariable("node")
            .label("Node")
            .datasource(DS)
            .query("label_values(gpuq_gpu_state, node)")
            .multi(True)
            .include_all(True)
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        )
        .with_row(Row("State"))
        .with_panel(states)
        .with_panel(holders)
        .with_panel(source)
        .with_row(Row("Telemetry"))
        .with_panel(
            graph(
                "Utilization",
                q(f"gpuq_gpu_utilization_ratio{sel}", legend),
                unit="percentunit",
                max_val=1,
                description=SIMULATED_NOTE,
            )
        )
        .with_panel(
            graph(
                "Memory used",
                q(f"gpuq_gpu_memory_used_bytes{sel} / gpuq_gpu_memory_total_bytes{sel}", legend),
                unit="percentunit",
                max_val=1,
            )
        )
        .with_panel(graph("Temperature", q(f"gpuq_gpu_temperature_celsius{sel}", legend), unit="celsius"))
        .with_panel(graph("Power", q(f"gpuq_gpu_power_watts{sel}", legend), unit="watt"))
        .with_row(Row("Health"))
        .with_panel(
            graph(
                "Healthy (1) or out of service as unhealthy (0)",
                q(f"gpuq_gpu_healthy{sel}", legend),
                max_val=1,
                width=8,
            )
        )
        .with_panel(
            graph(
                "Idle allocated GPUs",
                q(f"gpuq_gpu_idle{sel} == 1", "{{node}}:{{gpu}} ({{user}})"),
                width=8,
                description="Held by a job, under the idle threshold for the whole window.",
            )
        )
        .with_panel(
            graph(
                "XID and ECC errors (1 h)",
                q(f"increase(gpuq_gpu_xid_errors_total{sel}[1h])", "{{node}}:{{gpu}} XID {{xid}}"),
                q(
                    'gpuq_gpu_ecc_errors_total{node=~"$node", type="uncorrected"}',
                    "{{node}}:{{gpu}} uncorrected ECC",
                    ref="B",
                ),
                width=8,
            )
        )
    )


def scheduler() -> Dashboard:
    rate = "[$__rate_interval]"
    return (
        base(
            "gpuq-scheduler",
            "gpuq / Scheduler",
            "Scheduling loop latency, decisions, waits by priority, preemptions, retries.",
        )
        .with_row(Row("Loop"))
        .with_panel(
            graph(
                "Scheduling cycle latency",
                q(
                    "histogram_quantile(0.5, sum by (le) "
                    f"(rate(gpuq_scheduling_cycle_seconds_bucket{rate})))",
                    "p50",
                ),
                q(
                    "histogram_quantile(0.99, sum by (le) "
                    f"(rate(gpuq_scheduling_cycle_seconds_bucket{rate})))",
                    "p99",
                    ref="B",
                ),
                unit="s",
            )
        )
        .with_panel(
            graph(
                "Cycles and decisions per second",
                q(f"rate(gpuq_scheduling_cycles_total{rate})", "cycles"),
                q(
                    f"sum by (decision) (rate(gpuq_scheduling_decisions_total{rate}))",
                    "{{decision}}",
                    ref="B",
                ),
                unit="ops",
            )
        )
        .with_row(Row("Busy while jobs wait"))
        .with_panel(
            number(
                "Busy while jobs waited (24 h)",
                "sum(increase(gpuq_gpu_busy_while_waiting_seconds_total[24h])) / "
                "sum(increase(gpuq_gpu_while_waiting_seconds_total[24h]))",
                unit="percentunit",
                description="Share of the cluster's GPU-time held by jobs while at least one job waited that "
                "could run on it: the utilization the lab feels. Idle GPU-time then, by cause, is beside.",
            )
        )
        .with_panel(
            graph(
                "While jobs wait: busy, and idle by cause",
                q(
                    f"sum(rate(gpuq_gpu_busy_while_waiting_seconds_total{rate})) / "
                    f"sum(rate(gpuq_gpu_while_waiting_seconds_total{rate}))",
                    "busy",
                ),
                q(
                    f"sum by (cause) (rate(gpuq_gpu_idle_while_waiting_seconds_total{rate})) / "
                    f"scalar(sum(rate(gpuq_gpu_while_waiting_seconds_total{rate})))",
                    "idle: {{cause}}",
                    ref="B",
                ),
                unit="percentunit",
                width=20,
                max_val=1,
                description="Causes (orchestrator/core/idleness.py): reservation (free GPUs drained for a "
                "big job), fragmentation (no waiting job fits where GPUs are free), limits (user caps), "
                "latency (a job fits and starts at the next cycle), stopped (starts stopped), "
                "out_of_service (drained, unhealthy or down).",
            )
        )
        .with_row(Row("Queue"))
        .with_panel(graph("Queue depth by priority", q("gpuq_queue_depth", "{{priority}}")))
        .with_panel(
            graph(
                "Queue wait p90 by priority (jobs started)",
                q(
                    "histogram_quantile(0.9, sum by (le, priority) "
                    f"(rate(gpuq_queue_wait_seconds_bucket{rate})))",
                    "{{priority}}",
                ),
                unit="s",
            )
        )
        .with_row(Row("Outcomes"))
        .with_panel(graph("Jobs by state", q("gpuq_jobs", "{{state}}"), width=8))
        .with_panel(
            graph(
                "Preemptions and retries (1 h)",
                q("increase(gpuq_jobs_preempted_total[1h])", "preempted"),
                q("increase(gpuq_jobs_retried_total[1h])", "retried", ref="B"),
                width=8,
            )
        )
        .with_panel(
            graph(
                "Failures (1 h)",
                q("increase(gpuq_jobs_failed_total[1h])", "failed attempts"),
                q(
                    "sum by (kind) (increase(gpuq_gpu_health_events_total[1h]))",
                    "GPU health: {{kind}}",
                    ref="B",
                ),
                width=8,
            )
        )
    )


def users() -> Dashboard:
    used = "sum by (user) (increase(gpuq_user_gpu_seconds_total[$__range]))"
    return (
        base(
            "gpuq-users",
            "gpuq / Users",
            "GPU usage per user over the dashboard's time range, and their share.",
        )
        .with_row(Row("Usage"))
        .with_panel(
            bargauge.Panel()
            .title("GPU-hours in range")
            .datasource(DS)
            .span(12)
            .height(8)
            .unit("h")
            .with_target(q(f"{used} / 3600", "{{user}}", instant=True))
        )
        .with_panel(
            bargauge.Panel()
            .title("Share of GPU time in range")
            .datasource(DS)
            .span(12)
            .height(8)
            .unit("percentunit")
            .min(0)
            .max(1)
            .with_target(
                q(
                    f"{used} / scalar(sum(increase(gpuq_user_gpu_seconds_total[$__range])))",
                    "{{user}}",
                    instant=True,
                )
            )
        )
        .with_panel(
            graph(
                "GPUs in use by user", q('sum by (user) (gpuq_gpu_allocated{user!=""})', "{{user}}"), width=24
            )
        )
    )


DASHBOARDS = {"overview": overview, "gpus": gpus, "scheduler": scheduler, "users": users}


def render() -> dict[str, str]:
    """File name -> JSON text, exactly as committed."""
    encoder = JSONEncoder(sort_keys=True, indent=2)
    return {f"{name}.json": encoder.encode(build().build()) + "\n" for name, build in DASHBOARDS.items()}


def main(argv: list[str]) -> int:
    stale = []
    for name, text in render().items():
        path = HERE / name
        if "--check" in argv:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print(f"stale: {', '.join(stale)}; run .venv/bin/python dashboards/build.py", file=sys.stderr)
        return 1
    return 0


def queries(dashboard: dict) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target in a dashboard's JSON."""
    out = []
    for panel in dashboard.get("panels", []):
        for inner in [panel, *panel.get("panels", [])]:
            for target in inner.get("targets", []) or []:
                if target.get("expr"):
                    out.append((inner.get("title", ""), target["expr"]))
    return out


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
