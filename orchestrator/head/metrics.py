"""Prometheus metrics of the orchestrator, in a private registry served by GET /metrics.

Why not `ray.util.metrics`: measured on Ray 2.60, a gauge set through it disappears
from Ray's exporter ~20 s after its last update, and every node exports its own
copy. A private CollectorRegistry in the orchestrator, read by the API, is one stable
scrape target whose values are exactly the orchestrator's.

Two kinds of series:
- read at scrape time from the orchestrator's state (ScrapeCollector): jobs by
  state, queue depth, GPUs, each GPU's state, holder and telemetry, usage. Counters
  among them come from stored totals (the queue's stats, usage), so they survive a
  restart without resetting;
- observed as things happen (Metrics): queue wait, run time, scheduling-cycle
  latency and decisions. These are histograms and counters since the orchestrator
  started; Prometheus's rate() and histogram_quantile() handle the reset a restart
  makes.
Labels stay low-cardinality (node, gpu, state, priority, user), except
gpuq_job_start_time_seconds, one series per *running* job, which the Overview's
active-jobs table needs (at most one per GPU at a time).
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from orchestrator.core.accounting import Accounting, Run
from orchestrator.core.fleet import Fleet
from orchestrator.core.idleness import Cause
from orchestrator.core.inventory import Inventory
from orchestrator.core.job import Job, format_allocation
from orchestrator.core.lease import Contacts
from orchestrator.core.priority import Priority
from orchestrator.core.queue import JobQueue
from orchestrator.core.states import JobState
from orchestrator.head import views
from orchestrator.head.journal import Journal

WAIT_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400, 259200)
RUN_BUCKETS = (10, 60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 172800, 604800)
CYCLE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
GPU_STATES = ("free", "allocated", "draining", "drained", "unhealthy", "down")


class Metrics:
    def __init__(self, webhooks: list[str]):
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.queue_wait = Histogram(
            "gpuq_queue_wait_seconds",
            "Time from entering the queue to being scheduled",
            ["priority"],
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self.job_run = Histogram(
            "gpuq_job_run_seconds",
            "Run time of finished job attempts",
            ["outcome"],
            buckets=RUN_BUCKETS,
            registry=r,
        )
        self.cycle = Histogram(
            "gpuq_scheduling_cycle_seconds",
            "Time of one scheduling cycle (plan and apply)",
            buckets=CYCLE_BUCKETS,
            registry=r,
        )
        self.decisions = Counter(
            "gpuq_scheduling_decisions_total",
            "Decisions applied by the scheduling loop",
            ["decision"],
            registry=r,
        )
        self.health_events = Counter(
            "gpuq_gpu_health_events_total", "GPUs taken out of service by health checks", ["kind"], registry=r
        )
        self.webhook_dropped = Counter(
            "gpuq_webhook_dropped_total",
            "Notifications dropped: the webhook was down longer than its buffer lasts",
            ["webhook"],
            registry=r,
        )
        # GPU-seconds while at least one job waited that could run (head/idle.py): the whole
        # cluster's, those held by jobs, and the idle ones by cause (core/idleness.py).
        self.while_waiting = Counter(
            "gpuq_gpu_while_waiting_seconds_total",
            "GPU-seconds of the whole cluster while at least one job waited that could run on it",
            registry=r,
        )
        self.busy_while_waiting = Counter(
            "gpuq_gpu_busy_while_waiting_seconds_total",
            "GPU-seconds held by jobs while at least one job waited",
            registry=r,
        )
        self.idle_while_waiting = Counter(
            "gpuq_gpu_idle_while_waiting_seconds_total",
            "GPU-seconds idle while a job waited, by cause (orchestrator/core/idleness.py)",
            ["cause"],
            registry=r,
        )
        for cause in Cause:
            self.idle_while_waiting.labels(cause.value)
        for name in webhooks:
            self.webhook_dropped.labels(name)
        # Every label value a dashboard or alert reads exists from the start (at 0), so a
        # query has data before the first preemption, failure or health event.
        for p in Priority:
            self.queue_wait.labels(p.name)
        for outcome in ("completed", "failed"):
            self.job_run.labels(outcome)
        for decision in ("start", "preempt"):
            self.decisions.labels(decision)
        for kind in ("xid", "ecc", "silent"):
            self.health_events.labels(kind)

    def read_from(self, collector: ScrapeCollector) -> None:
        """Serve the series read from the orchestrator's state (built once its parts are)."""
        self.registry.register(collector)

    def webhook_dropped_inc(self, webhook: str) -> None:
        self.webhook_dropped.labels(webhook).inc()

    def scheduled(self, job: Job, now: float) -> None:
        waited = now - job.state_times.get(JobState.QUEUED, job.submitted_at)
        self.queue_wait.labels(job.priority.name).observe(max(0.0, waited))
        self.decisions.labels("start").inc()

    def finished(self, job: Job, seconds: float) -> None:
        self.job_run.labels(job.state.value).observe(max(0.0, seconds))

    def text(self) -> bytes:
        return generate_latest(self.registry)


def _gauge(name, doc, labels=()):
    return GaugeMetricFamily(name, doc, labels=list(labels))


class ScrapeCollector:
    """Everything derived from the orchestrator's state, computed when scraped."""

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        queue: JobQueue,
        inventory: Inventory,
        fleet: Fleet,
        journal: Journal,
        accounting: Accounting,
        running_runs: Callable[[float], list[Run]],
        loop_running: Callable[[], bool],
        started_at: float,
        set_aside: int,
        contacts: Contacts | None = None,
    ):
        self.clock, self.queue, self.inventory, self.fleet, self.journal = (
            clock,
            queue,
            inventory,
            fleet,
            journal,
        )
        self.accounting, self.running_runs, self.loop_running = accounting, running_runs, loop_running
        self.started_at, self.set_aside = started_at, set_aside
        self.contacts = contacts

    def describe(self):
        return []  # computed on collect: nothing to check at registration

    def collect(self):
        now = self.clock()
        inv, queue, fleet = self.inventory, self.queue, self.fleet
        yield from self._jobs(queue, now)

        total, allocated, free = inv.total, inv.allocated_count(), inv.free_count()
        states = {s: 0 for s in GPU_STATES}
        per_gpu_state = _gauge("gpuq_gpu_state", "1 for the GPU's current state", ["node", "gpu", "state"])
        per_gpu_alloc = _gauge(
            "gpuq_gpu_allocated", "1 if a job holds the GPU; user is its owner", ["node", "gpu", "user"]
        )
        per_gpu_health = _gauge(
            "gpuq_gpu_healthy", "0 if the GPU is out of service as unhealthy", ["node", "gpu"]
        )
        per_gpu_idle = _gauge(
            "gpuq_gpu_idle",
            "1 if allocated but under the idle threshold for the whole window",
            ["node", "gpu", "user"],
        )
        idle = fleet.idle(now)
        for node, slots in inv.nodes.items():
            for slot in slots:
                state = slot.shown
                states[state] += 1
                job = queue.get(slot.job_id) if slot.job_id and slot.job_id in queue else None
                user = job.user if job else ""
                labels = [node, str(slot.index)]
                for s in GPU_STATES:
                    per_gpu_state.add_metric([*labels, s], 1.0 if s == state else 0.0)
                per_gpu_alloc.add_metric([*labels, user], 1.0 if slot.job_id else 0.0)
                per_gpu_health.add_metric(labels, 0.0 if state == "unhealthy" else 1.0)
                per_gpu_idle.add_metric([*labels, user], 1.0 if (node, slot.index) in idle else 0.0)
        node_up = _gauge(
            "gpuq_node_up", "1 if the GPU node is up, 0 if it is down (Ray declared it dead)", ["node"]
        )
        fencing = _gauge(
            "gpuq_node_fencing",
            "1 while the node is down but its jobs may still run there: they are requeued at its fence's end",
            ["node"],
        )
        requeue_at = _gauge(
            "gpuq_node_requeue_at_seconds",
            "When a fencing node's jobs are requeued (Unix time); only while it is fencing",
            ["node"],
        )
        lease_age = _gauge(
            "gpuq_node_lease_age_seconds",
            "Seconds since the head last saw the node's lease renewed",
            ["node"],
        )
        now = self.clock()
        for node in inv.nodes:
            down = fleet.down.get(node)
            node_up.add_metric([node], 0.0 if down else 1.0)
            fencing.add_metric([node], 1.0 if down and down.fencing else 0.0)
            if down and down.fencing and down.requeue_at is not None:
                requeue_at.add_metric([node], down.requeue_at)
            if self.contacts is not None and down is None:
                lease_age.add_metric([node], self.contacts.late(node, now))
        yield from (per_gpu_state, per_gpu_alloc, per_gpu_health, per_gpu_idle, node_up, fencing, requeue_at)
        yield lease_age
        for name, value, doc in (
            ("gpuq_gpus_total", total, "GPUs in the cluster"),
            ("gpuq_gpus_allocated", allocated, "GPUs held by jobs"),
            ("gpuq_gpus_available", free, "GPUs free to schedule on"),
            ("gpuq_gpus_unhealthy", states["unhealthy"], "GPUs out of service as unhealthy"),
            (
                "gpuq_gpus_drained",
                states["drained"] + states["draining"],
                "GPUs drained by an admin (draining ones included)",
            ),
            ("gpuq_gpus_down", states["down"], "GPUs of nodes Ray declared dead"),
            ("gpuq_gpus_idle", len(idle), "Allocated GPUs flagged idle"),
        ):
            g = _gauge(name, doc)
            g.add_metric([], float(value))
            yield g

        yield from self._telemetry(fleet)
        yield from self._usage(now)

        up = _gauge("gpuq_orchestrator_loop_running", "1 while the scheduling loop runs")
        up.add_metric([], 1.0 if self.loop_running() else 0.0)
        started = _gauge(
            "gpuq_orchestrator_start_time_seconds", "When this orchestrator started (epoch seconds)"
        )
        started.add_metric([], self.started_at)
        aside = _gauge(
            "gpuq_store_records_set_aside",
            "Job records that failed to load at the last start and were set aside (store table set_aside)",
        )
        aside.add_metric([], float(self.set_aside))
        writable = _gauge(
            "gpuq_store_writable", "0 while the job store cannot commit (a full disk): changes are refused"
        )
        writable.add_metric([], 0.0 if self.journal.failing else 1.0)
        failures = CounterMetricFamily(
            "gpuq_store_write_failures", "Store commits that failed (retried until one works)"
        )
        failures.add_metric([], float(self.journal.failures))
        yield from (up, started, aside, writable, failures)

    def _jobs(self, queue, now: float):
        by_state = _gauge("gpuq_jobs", "Jobs by state", ["state"])
        counts = queue.counts()
        for state in JobState:
            by_state.add_metric([state.value], float(counts.get(state, 0)))
        yield by_state

        depth = _gauge("gpuq_queue_depth", "Queued jobs by priority", ["priority"])
        wanted = _gauge(
            "gpuq_queue_gpus_requested", "GPUs asked for by queued jobs, by priority", ["priority"]
        )
        wait_now = _gauge("gpuq_queue_wait_now_seconds", "How long the jobs queued now have waited", ["stat"])
        n = {p.name: 0 for p in Priority}
        g = {p.name: 0 for p in Priority}
        least = 0
        for job in queue.queued():
            n[job.priority.name] += 1
            g[job.priority.name] += job.gpus
            least = min(least, job.gpus) if least else job.gpus
        for p in Priority:
            depth.add_metric([p.name], float(n[p.name]))
            wanted.add_metric([p.name], float(g[p.name]))
        smallest = _gauge(
            "gpuq_queue_min_gpus_requested", "The smallest GPU count a queued job asks for (0: none queued)"
        )
        smallest.add_metric([], float(least))
        yield smallest
        waits = views.queue_wait(queue, now)
        wait_now.add_metric(["avg"], waits["avg_s"])
        wait_now.add_metric(["max"], waits["max_s"])
        yield from (depth, wanted, wait_now)

        s = queue.stats
        for name, doc in (
            ("jobs_scheduled", "Jobs scheduled"),
            ("jobs_completed", "Jobs completed"),
            ("jobs_failed", "Job attempts failed"),
            ("scheduling_cycles", "Scheduling cycles run"),
            ("jobs_retried", "Automatic retries"),
            ("jobs_preempted", "Jobs preempted"),
            ("jobs_cancelled", "Jobs cancelled"),
        ):
            c = CounterMetricFamily(f"gpuq_{name}", doc)
            c.add_metric([], float(getattr(s, name)))
            yield c

        running = _gauge(
            "gpuq_job_start_time_seconds",
            "Start of each running job (epoch seconds)",
            ["job_id", "run_id", "user", "gpus", "placement"],
        )
        for job in queue.jobs():
            if job.state is JobState.RUNNING:
                running.add_metric(
                    [job.id, job.spec.run_id, job.user, str(job.gpus), format_allocation(job.allocation)],
                    job.state_times.get(JobState.RUNNING, now),
                )
        yield running

    def _telemetry(self, fleet):
        info = _gauge(
            "gpuq_node_telemetry_info",
            "Where a node's telemetry comes from (source=simulated: not real NVML)",
            ["node", "source", "detail"],
        )
        last = _gauge(
            "gpuq_node_last_report_timestamp_seconds", "When the node last reported telemetry", ["node"]
        )
        fields = {
            "utilization_ratio": ("gpuq_gpu_utilization_ratio", "GPU utilization, 0 to 1"),
            "memory_used_bytes": ("gpuq_gpu_memory_used_bytes", "GPU memory in use"),
            "memory_total_bytes": ("gpuq_gpu_memory_total_bytes", "GPU memory in all"),
            "temperature_celsius": ("gpuq_gpu_temperature_celsius", "GPU temperature"),
            "power_watts": ("gpuq_gpu_power_watts", "GPU power draw"),
        }
        fams = {k: _gauge(name, doc, ["node", "gpu", "source"]) for k, (name, doc) in fields.items()}
        ecc = CounterMetricFamily(
            "gpuq_gpu_ecc_errors", "Volatile ECC error count", labels=["node", "gpu", "type"]
        )
        for node, rep in fleet.reports.items():
            info.add_metric([node, rep.source, rep.detail], 1.0)
            last.add_metric([node], rep.at)
            for g in rep.gpus:
                labels = [node, str(g.index), rep.source]
                fams["utilization_ratio"].add_metric(labels, g.utilization)
                fams["memory_used_bytes"].add_metric(labels, float(g.memory_used_bytes))
                fams["memory_total_bytes"].add_metric(labels, float(g.memory_total_bytes))
                fams["temperature_celsius"].add_metric(labels, g.temperature_celsius)
                fams["power_watts"].add_metric(labels, g.power_watts)
                ecc.add_metric([node, str(g.index), "corrected"], float(g.ecc_corrected))
                ecc.add_metric([node, str(g.index), "uncorrected"], float(g.ecc_uncorrected))
        xids = CounterMetricFamily(
            "gpuq_gpu_xid_errors", "XID events since the node agent started", labels=["node", "gpu", "xid"]
        )
        for node, rep in fleet.reports.items():
            for g in rep.gpus:
                for xid, count in g.xids:
                    xids.add_metric([node, str(g.index), str(xid)], float(count))
        yield from (info, last, *fams.values(), ecc, xids)

    def _usage(self, now: float):
        used = CounterMetricFamily(
            "gpuq_user_gpu_seconds", "GPU-seconds used per user (finished and running runs)", labels=["user"]
        )
        totals = dict(self.accounting.totals)
        for run in self.running_runs(now):
            totals[run.user] = totals.get(run.user, 0.0) + run.gpu_seconds
        for user, seconds in sorted(totals.items()):
            used.add_metric([user], seconds)
        yield used
