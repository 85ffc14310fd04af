"""GPU health and idleness, judged from telemetry reports. Pure: no Ray, no I/O.

A GPU is unhealthy when it reports a fatal XID, when its count of uncorrected
(double-bit) ECC errors rises, or when its node stops reporting. Unhealthy GPUs are
taken out of service by the orchestrator (orchestrator/core/fleet.py) and stay out until
an admin puts them back: a GPU that threw XID 79 once will do it again, and a job
that lands on it loses hours.

A GPU is idle when a job holds it and its utilization stays under a threshold for a
whole window: the waste researchers complain about most. Idle is a flag, never a
reason to stop a job (a job may be loading data or waiting on a peer).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from orchestrator.core.gpureport import NodeReport

# XIDs that mean the GPU needs a reset or replacement (NVIDIA's XID catalogue):
# 48 double-bit ECC, 63/64 row-remapping event/failure, 74 NVLink error, 79 fallen
# off the bus, 94/95 contained/uncontained ECC error. Others (13, 31, 43: faults of
# the application) are counted but do not take a GPU out of service.
FATAL_XIDS = frozenset({48, 63, 64, 74, 79, 94, 95})


@dataclass(frozen=True)
class Finding:
    """A GPU (or, with gpu None, a whole node) found unhealthy, and why."""

    node: str
    gpu: int | None
    kind: str  # "xid", "ecc" or "silent"
    reason: str


@dataclass(frozen=True)
class HealthRules:
    silent_after_s: float = 30.0
    idle_utilization: float = 0.05
    idle_window_s: float = 600.0
    fatal_xids: frozenset[int] = FATAL_XIDS


@dataclass
class HealthMonitor:
    rules: HealthRules = field(default_factory=HealthRules)
    last_report: dict[str, float] = field(default_factory=dict)  # node -> when its last report came
    silent: set[str] = field(default_factory=set)  # nodes already reported silent (one finding each)
    ecc_baseline: dict[tuple[str, int], int] = field(default_factory=dict)
    # (node, gpu) -> {xid: the agent's running total when last seen}. Stored (fleet.saved),
    # so a restarted orchestrator neither misses XIDs that came while it was down nor
    # counts old ones again.
    xid_seen: dict[tuple[str, int], dict[int, int]] = field(default_factory=dict)
    # (node, gpu) -> (job holding it, since when it has been under the threshold)
    below: dict[tuple[str, int], tuple[str, float]] = field(default_factory=dict)

    def expect(self, node: str, now: float) -> None:
        """Start the silence clock for a node that has not reported yet."""
        self.last_report.setdefault(node, now)

    def observe(self, report: NodeReport, holders: dict[int, str]) -> list[Finding]:
        """Take one report; `holders` maps the node's GPU index to the job holding it."""
        node = report.node
        self.last_report[node] = report.at
        self.silent.discard(node)
        found = []
        for g in report.gpus:
            key = (node, g.index)
            fatal = [x for x in self._new_xids(key, g.xids) if x in self.rules.fatal_xids]
            if fatal:
                found.append(Finding(node, g.index, "xid", f"XID {fatal[0]} on {node}:{g.index}"))
            elif g.ecc_uncorrected > self.ecc_baseline.get(key, 0):
                found.append(
                    Finding(
                        node,
                        g.index,
                        "ecc",
                        f"{g.ecc_uncorrected} uncorrected ECC errors on {node}:{g.index}",
                    )
                )
            self.ecc_baseline[key] = max(self.ecc_baseline.get(key, 0), g.ecc_uncorrected)
            holder = holders.get(g.index)
            if holder is None or g.utilization >= self.rules.idle_utilization:
                self.below.pop(key, None)
            elif self.below.get(key, (None,))[0] != holder:
                self.below[key] = (holder, report.at)
        return found

    def _new_xids(self, key: tuple[str, int], totals: tuple[tuple[int, int], ...]) -> list[int]:
        seen = self.xid_seen.setdefault(key, {})
        new = []
        for xid, total in totals:
            before = seen.get(xid, 0)
            if total < before:  # the agent restarted: its totals start again from zero
                before = 0
            new += [xid] * (total - before)
            seen[xid] = total
        return new

    def silence(self, now: float) -> list[Finding]:
        """Nodes that have not reported for `silent_after_s` (one finding per silence)."""
        found = []
        for node, at in self.last_report.items():
            if node not in self.silent and now - at > self.rules.silent_after_s:
                self.silent.add(node)
                found.append(Finding(node, None, "silent", f"{node} has not reported for {now - at:.0f} s"))
        return found

    def idle(self, now: float) -> dict[tuple[str, int], tuple[str, float]]:
        """(node, gpu) -> (job, idle since) for GPUs under the threshold a whole window."""
        return {k: v for k, v in self.below.items() if now - v[1] >= self.rules.idle_window_s}

    def forget(self, node: str) -> None:
        """The node is gone (down): no silence to judge until it registers again."""
        self.last_report.pop(node, None)
        self.silent.discard(node)
        for key in [k for k in self.below if k[0] == node]:
            del self.below[key]

    def back_in_service(self, node: str, gpu: int) -> None:
        """An admin put the GPU back: judge it afresh (its old ECC count is the new baseline)."""
        self.below.pop((node, gpu), None)
