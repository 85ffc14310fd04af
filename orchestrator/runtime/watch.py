"""The orchestrator's watch over its GPUs: telemetry in, health and drains applied.

Every `telemetry_interval_s` it asks each node agent for a report, lets the fleet
judge them (orchestrator/runtime/fleet.py, health.py), and applies what follows:
1. GPUs found unhealthy go out of service; the jobs on them are stopped and
   requeued as infrastructure failures (their retries are not used up);
2. allocated GPUs idle for the whole window are flagged on their job, once;
3. Ray is kept in step: out-of-service GPUs no job holds are quarantined
   (backend.quarantine), and returned ones are given back to Ray.
Admin drains and un-drains come through here too, so that every way a GPU leaves
or re-enters service is in one place and in the audit trail.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque

from orchestrator.runtime.fleet import Fleet
from orchestrator.runtime.health import HealthRules
from orchestrator.core.inventory import SlotState
from orchestrator.runtime.telemetry import NodeReport

log = logging.getLogger("gpuq.watch")
HISTORY_STEP_S = 10.0
HISTORY_POINTS = 360  # one hour at one point per HISTORY_STEP_S


class GpuWatch:
    def __init__(self, svc, saved: dict | None):
        self.svc = svc
        site = svc.site
        self.fleet = Fleet(svc.inventory, HealthRules(site.node_silent_after_s, site.idle_utilization,
                                                       site.idle_window_s), saved)
        self.flagged: set[tuple[str, str, int]] = set()  # (job, node, gpu) idle flags already noted
        # The last hour of (time, allocated share, mean measured utilization), for the web
        # page's chart: researchers get it without running Prometheus.
        self.history: deque[tuple[float, float, float | None]] = deque(maxlen=HISTORY_POINTS)
        self._quarantining: asyncio.Task | None = None

    async def run(self) -> None:
        while True:
            try:
                await self.poll()
            except Exception:  # telemetry must never stop; the next poll retries
                log.exception("telemetry poll failed")
            await asyncio.sleep(self.svc.site.telemetry_interval_s)

    async def poll(self) -> None:
        self.svc.backend.ensure_agents(self.svc.nodes)  # replaces agents that died
        nodes = list(self.svc.backend.agents)
        answers = await asyncio.gather(
            # Generous: a busy node answers late, and a late report is still news (silence
            # is judged over node_silent_after_s, not one poll).
            *(self.svc.backend.call_agent(n, "report", timeout=max(5.0, self.svc.site.telemetry_interval_s))
              for n in nodes),
            return_exceptions=True,
        )
        now = time.time()
        findings = []
        for node, answer in zip(nodes, answers):
            findings += self.fleet.ingest(node, answer if isinstance(answer, NodeReport) else None, now)
        findings += self.fleet.silence(now)
        for f in findings:
            log.warning("taking %s out of service: %s", f"{f.node}:{f.gpu}" if f.gpu is not None else f.node, f.reason)
            self.svc.metrics.health_events.labels(f.kind).inc()
            self.take_out(f.node, None if f.gpu is None else [f.gpu], SlotState.UNHEALTHY.value, f.reason, "gpuq",
                          requeue=True)
        self.flag_idle(now)
        self.sync_ray()
        self.record(now)

    def record(self, now: float) -> None:
        if self.history and now - self.history[-1][0] < HISTORY_STEP_S:
            return
        inv = self.svc.inventory
        readings = [g.utilization for r in self.fleet.reports.values() for g in r.gpus]
        self.history.append((now, inv.allocated_count() / inv.total if inv.total else 0.0,
                             sum(readings) / len(readings) if readings else None))

    def take_out(self, node: str, gpus: list[int] | None, state: str, reason: str, by: str, requeue: bool) -> dict:
        now = time.time()
        holders = self.fleet.take_out(node, gpus, state, reason, by, now)
        changed = []
        for job_id, on in holders.items():
            job = self.svc.queue.get(job_id)
            where = ", ".join(f"{node}:{g}" for g in on)
            if requeue:
                job.note(now, "evict", f"{where} {state}: {reason}")
                self.svc.evict(job, f"GPU {where} {state}: {reason}")
            else:
                job.note(now, "drain", f"{where} draining ({reason}): the job runs to its end")
            changed.append(job)
        self.svc.save(changed, kv={"fleet": self.fleet.saved()})
        self.svc.wake()
        return {"node": node, "state": state, "jobs": sorted(holders)}

    def put_back(self, node: str, gpus: list[int] | None, by: str, reason: str) -> list[int]:
        back = self.fleet.put_back(node, gpus, by, time.time(), reason)
        self.svc.save([], kv={"fleet": self.fleet.saved()})
        self.sync_ray()
        self.svc.wake()
        return back

    def flag_idle(self, now: float) -> None:
        changed = []
        rules = self.fleet.monitor.rules
        for (node, gpu), (job_id, since) in self.fleet.idle(now).items():
            if (job_id, node, gpu) in self.flagged or job_id not in self.svc.queue:
                continue
            self.flagged.add((job_id, node, gpu))
            job = self.svc.queue.get(job_id)
            job.note(now, "idle", f"GPU {node}:{gpu} under {rules.idle_utilization:.0%} utilization "
                                  f"for {now - since:.0f} s")
            changed.append(job)
        if changed:
            self.svc.save(changed)

    def idle_of(self, job_id: str, now: float) -> list[str]:
        return sorted(f"{n}:{g}" for (n, g), (j, _) in self.fleet.idle(now).items() if j == job_id)

    def sync_ray(self) -> None:
        if self._quarantining is None or self._quarantining.done():
            self._quarantining = asyncio.get_event_loop().create_task(
                self.svc.backend.quarantine(self.fleet.quarantined()))
