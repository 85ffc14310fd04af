"""The fleet: which GPUs are in service, why the others are not, and the audit trail.

Pure bookkeeping beside the inventory: the orchestrator feeds it telemetry reports
and admin requests, it changes the inventory (a GPU out of service is never planned
on) and says which jobs sit on GPUs that went out of service; the orchestrator stops
those (orchestrator/head/launches.py, evict) and keeps Ray in step (backend.quarantine).

Two ways out of service, as in Slurm:
- *unhealthy*: found by gpuq (fatal XID, double-bit ECC, a node that stopped
  reporting). The job on it is stopped and requeued as an infrastructure failure.
- *drained*: an admin took it out (`gpuq drain`). A job on it runs to its end unless
  the admin asked for it to be requeued now; meanwhile the GPU shows as draining.
Either way only an admin puts it back (`gpuq undrain`). Both are stored, so a restart
keeps them, and every change is an event with who, when and why.

A third way is a whole node's: *down*, when Ray declares its raylet dead or its lease
runs out (core/lease.py). Nothing is planned on it. Its jobs may still run there (a
network partition stops nothing), so the node is first *fencing*: its jobs are
requeued as infrastructure failures only at `requeue_at`, when the node has certainly
stopped them; it is then *fenced*. As with Slurm's ReturnToService=2, a down node
returns to service by itself when a node of the same name registers again, once
fenced (unless the site turns that off: it then comes back drained). GPUs that were
unhealthy or drained before the node went down keep that state.
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

from orchestrator.core.errors import InvalidSpec
from orchestrator.core.gpureport import NodeReport
from orchestrator.core.health import Finding, HealthMonitor, HealthRules
from orchestrator.core.inventory import Inventory, SlotState

MAX_EVENTS = 1000


@dataclass(frozen=True)
class OutOfService:
    state: str  # "unhealthy" or "drained"
    reason: str
    by: str  # "gpuq" for what health checks found, else the admin
    since: float


@dataclass(frozen=True)
class NodeDown:
    reason: str
    since: float
    requeue_at: float | None = None  # when its jobs may run elsewhere (None: at once, stored before leases)
    fenced: bool = False  # requeue_at passed: nothing of its jobs runs there any more

    @property
    def fencing(self) -> bool:
        return not self.fenced and self.requeue_at is not None


class Fleet:
    def __init__(self, inventory: Inventory, rules: HealthRules, saved: dict[str, Any] | None = None):
        self.inventory = inventory
        self.monitor = HealthMonitor(rules)
        self.reports: dict[str, NodeReport] = {}
        self.out: dict[tuple[str, int], OutOfService] = {}
        self.down: dict[str, NodeDown] = {n: NodeDown(**d) for n, d in (saved or {}).get("down", {}).items()}
        # Every GPU node ever seen, with its size: a node that is dead when the orchestrator
        # starts is still shown (as down), not forgotten.
        self.known: dict[str, int] = dict((saved or {}).get("nodes", {}))
        self.events: deque[dict[str, Any]] = deque(maxlen=MAX_EVENTS)
        for e in (saved or {}).get("events", []):
            self.events.append(e)
        for name, seen in (saved or {}).get("xid_seen", {}).items():
            node, _, gpu = name.rpartition(":")
            self.monitor.xid_seen[(node, int(gpu))] = {int(x): n for x, n in seen.items()}
        for name, o in (saved or {}).get("out", {}).items():
            node, _, gpu = name.rpartition(":")
            self.out[(node, int(gpu))] = OutOfService(**o)
        for node in list(inventory.nodes):
            self.node_added(node)

    # --- what is stored -------------------------------------------------------------

    def saved(self) -> dict[str, Any]:
        return {
            "out": {f"{n}:{g}": asdict(o) for (n, g), o in self.out.items()},
            "events": list(self.events)[-200:],
            "xid_seen": {f"{n}:{g}": seen for (n, g), seen in self.monitor.xid_seen.items() if seen},
            "down": {n: asdict(d) for n, d in self.down.items()},
            "nodes": dict(self.known),
        }

    def node_added(self, node: str) -> None:
        """Apply what is stored about a node's GPUs once the node is in the inventory."""
        self.known[node] = len(self.inventory.nodes[node])
        for (n, g), o in self.out.items():
            if n == node and g < len(self.inventory.nodes[node]):
                self.inventory.set_out_of_service(n, g, SlotState(o.state))
        if node in self.down:
            for g in range(len(self.inventory.nodes[node])):
                if (node, g) not in self.out:
                    self.inventory.set_out_of_service(node, g, SlotState.DOWN)

    # --- whole nodes: lost and back -------------------------------------------------

    def node_lost(self, node: str, reason: str, now: float, requeue_at: float | None = None) -> list[str]:
        """Ray declared the node dead, or its lease ran out: every GPU of it is down.
        Returns the jobs holding any GPU there, to be requeued at `requeue_at` (the
        fence's end: holders()) or at once where it is None."""
        if node in self.down or node not in self.inventory.nodes:
            return []
        self.down[node] = NodeDown(reason, now, requeue_at)
        holders = self.holders(node)
        for slot in self.inventory.nodes[node]:
            if (node, slot.index) not in self.out:
                self.inventory.set_out_of_service(node, slot.index, SlotState.DOWN)
        self.monitor.forget(node)  # its silence is the down state's to show, not a health finding
        self.reports.pop(node, None)
        self._event(now, node, None, "down", reason, "gpuq", None)
        return holders

    def holders(self, node: str) -> list[str]:
        """The jobs holding any GPU of the node, in GPU order."""
        found: list[str] = []
        for slot in self.inventory.nodes.get(node, []):
            if slot.job_id and slot.job_id not in found:
                found.append(slot.job_id)
        return found

    def fences_due(self, now: float) -> list[str]:
        """Nodes whose fence ends now: their jobs have certainly stopped."""
        return [
            n for n, d in self.down.items() if d.fencing and d.requeue_at is not None and now >= d.requeue_at
        ]

    def fence_ended(self, node: str, now: float) -> None:
        down = self.down[node]
        self.down[node] = NodeDown(down.reason, down.since, down.requeue_at, fenced=True)
        self._event(now, node, None, "fenced", f"its jobs have stopped there ({down.reason})", "gpuq", None)

    def node_back(self, node: str, now: float, return_to_service: bool) -> list[int]:
        """A node of this name registered again. Its down GPUs return to service, or with
        `return_to_service` off become drained, for an admin to return. Returns the GPUs
        back in service."""
        was = self.down.pop(node, None)
        if was is None or node not in self.inventory.nodes:
            return []
        back = []
        for slot in self.inventory.nodes[node]:
            if (node, slot.index) in self.out:
                continue  # unhealthy or drained before: an admin's call, as before
            if return_to_service:
                self.inventory.return_to_service(node, slot.index)
                back.append(slot.index)
            else:
                self.out[(node, slot.index)] = OutOfService(
                    "drained", f"was down ({was.reason}); node_return_to_service is off", "gpuq", now
                )
                self.inventory.set_out_of_service(node, slot.index, SlotState.DRAINED)
        self.monitor.expect(node, now)
        self._event(
            now,
            node,
            None,
            "returned" if return_to_service else "registered",
            f"registered again after {now - was.since:.0f} s down"
            + ("" if return_to_service else "; drained until an admin returns it"),
            "gpuq",
            None,
        )
        return back

    # --- taking GPUs out and putting them back --------------------------------------

    def targets(self, node: str, gpus: list[int] | None) -> list[int]:
        if node not in self.inventory.nodes:
            raise InvalidSpec(
                [("node", f"must be one of {', '.join(self.inventory.nodes) or 'no nodes yet'}")]
            )
        size = len(self.inventory.nodes[node])
        if gpus is None:
            return list(range(size))
        bad = [g for g in gpus if not isinstance(g, int) or isinstance(g, bool) or not 0 <= g < size]
        if bad or not gpus:
            raise InvalidSpec([("gpus", f"must be GPU indices from 0 to {size - 1} on {node}")])
        return sorted(set(gpus))

    def take_out(
        self, node: str, gpus: list[int] | None, state: str, reason: str, by: str, now: float
    ) -> dict[str, list[int]]:
        """Mark GPUs unhealthy or drained; returns job id -> the GPUs of it taken out.
        An unhealthy GPU stays unhealthy if an admin then drains it (the worse state wins)."""
        holders: dict[str, list[int]] = {}
        for g in self.targets(node, gpus):
            was = self.out.get((node, g))
            if was is not None and (was.state == state or was.state == SlotState.UNHEALTHY.value):
                continue
            self.out[(node, g)] = OutOfService(state, reason, by, now)
            job = self.inventory.set_out_of_service(node, g, SlotState(state))
            if job is not None:
                holders.setdefault(job, []).append(g)
            self._event(now, node, g, state, reason, by, job)
        return holders

    def put_back(self, node: str, gpus: list[int] | None, by: str, now: float, reason: str = "") -> list[int]:
        back = []
        for g in self.targets(node, gpus):
            if self.out.pop((node, g), None) is None:
                continue
            if node in self.down:  # no longer drained, but still gone with its node
                self.inventory.set_out_of_service(node, g, SlotState.DOWN)
                self._event(
                    now, node, g, "returned", (reason or "back in service") + "; its node is down", by, None
                )
                continue
            self.inventory.return_to_service(node, g)
            self.monitor.back_in_service(node, g)
            self._event(now, node, g, "returned", reason or "back in service", by, None)
            back.append(g)
        if back:
            self.monitor.silent.discard(node)
            self.monitor.last_report[node] = max(self.monitor.last_report.get(node, now), now)
        return back

    def store_event(self, now: float, job_id: str, reason: str) -> None:
        """Something the store could not keep as it was (a job record set aside at start)."""
        self._event(now, "store", None, "set aside", reason, "orchestrator", job_id)

    def _event(
        self, now: float, node: str, gpu: int | None, action: str, reason: str, by: str, job: str | None
    ) -> None:
        self.events.append(
            {
                "time": now,
                "node": node,
                "gpu": gpu,
                "action": action,
                "reason": reason,
                "by": by,
                "job_id": job,
            }
        )

    # --- telemetry ------------------------------------------------------------------

    def ingest(self, node: str, report: NodeReport | None, now: float) -> list[Finding]:
        """One poll's answer from a node (None: it did not answer). A node that went down
        while it was asked is not judged: its silence is the down state's to show."""
        if node in self.down:
            return []
        self.monitor.expect(node, now)
        if report is None:
            return []
        self.reports[node] = report
        holders = {s.index: s.job_id for s in self.inventory.nodes.get(node, []) if s.job_id}
        return self.monitor.observe(report, holders)

    def silence(self, now: float) -> list[Finding]:
        return [f for f in self.monitor.silence(now) if f.node not in self.down]

    def idle(self, now: float) -> dict[tuple[str, int], tuple[str, float]]:
        return self.monitor.idle(now)

    def quarantined(self) -> dict[str, set[int]]:
        """Out-of-service GPUs that no job holds any more, per node: Ray must not hand them out."""
        out: dict[str, set[int]] = {}
        for node, g in self.out:
            if node in self.down:
                continue  # nothing of it left on Ray to hold
            slots = self.inventory.nodes.get(node)
            if slots is not None and g < len(slots) and slots[g].job_id is None:
                out.setdefault(node, set()).add(g)
        return out

    def out_of_service_on(self, node: str) -> set[int]:
        return {g for (n, g) in self.out if n == node}

    def state_of(self, node: str, gpu: int) -> OutOfService | None:
        return self.out.get((node, gpu))
