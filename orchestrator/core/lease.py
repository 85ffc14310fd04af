"""Node leases: when a node cut off from the head has certainly stopped its jobs.

Ray declares a node dead when the GCS's health checks fail, but nothing on a node cut
off by a network partition stops: its raylet, runners and jobs run on until the
partition heals (the raylet then learns it was declared dead and exits) or, if it never
heals, for about 200 s more (Ray's reconnect time-outs). A head that requeued at Ray's
verdict would run the old and the new copy of a job side by side.

So each node holds a lease, renewed only through the head (a write to the GCS, which
lives there), and stops its own jobs when the lease runs out:
- the node agent writes `gpuq/lease/<node>` in the GCS every second; when the write
  succeeds it records, in a file on the node, the time it *sent* the write (the node's
  own clock): the last moment the node knows the head could hear it;
- every supervisor on the node reads that file; `lease_s` (F) after the last renewal it
  TERMs its job, and KILLs it (its cgroup) FENCE_KILL_S later. The agent kills any job
  cgroup left FENCE_KILL_S after that (a supervisor that died);
- the head notes the time it *sees* each new lease value. That is never earlier than the
  node's renewal, so the node's processes are gone by the head's
  `last seen + F + FENCE_KILL_S`. The head requeues a lost node's jobs only after that,
  plus `node_fence_margin_s` for clocks that run at slightly different rates and a
  supervisor slowed by a busy node.

A partition shorter than F stops nothing and requeues nothing: Ray's own health check
must then not declare the node dead before F either (a raylet declared dead exits when
it hears of it, with its jobs), which `ray_health_check` sees to.

Pure: times are passed in; the head's clock is its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

# From a lease's end to every process of the job gone: the TERM's grace for a fence,
# then cgroup.kill (which takes milliseconds). Short on purpose: the job is rerun
# elsewhere, and every second here is a second the requeue waits.
FENCE_KILL_S = 5.0
# How often the node agent renews its lease (and the head looks at the leases).
RENEW_EVERY_S = 1.0
# A renewal that took longer than this is not counted: a slow write can be a partition.
RENEW_TIMEOUT_S = 2.0
KEY_PREFIX = "gpuq/lease/"
NAMESPACE = b"gpuq"  # the GCS key-value namespace of the leases


def key(node: str) -> str:
    return f"{KEY_PREFIX}{node}"


def requeue_delay(lease_s: float, margin_s: float) -> float:
    """From the head's last contact with a node to the requeue of its jobs."""
    return lease_s + FENCE_KILL_S + margin_s


def ray_health_check(lease_s: float) -> dict[str, int]:
    """Ray's health-check settings (read by the head's GCS), under which Ray does not
    declare a node that was cut off for less than the lease dead. A failed check waits
    out its 1 s time-out and the next comes 1 s later: about 2 s a failure (measured: 3
    failures take 5.2-5.8 s). After a cut, checks keep failing until gRPC's reconnect
    back-off (1 s, x1.6 each time) tries again: after a 15 s cut, for 7 s more
    (measured). So Ray waits about twice the lease and 10 s more for a node cut off,
    and about the lease and 5 s for a raylet that is gone (its port refuses at once).
    gpuq does not wait for Ray's verdict: a lease not renewed is enough."""
    return {
        "health_check_period_ms": 1000,
        "health_check_timeout_ms": 1000,
        "health_check_failure_threshold": math.ceil(lease_s) + 5,
    }


def ray_settled(down_since: float, lease_s: float, now: float) -> bool:
    """Whether Ray can no longer declare the raylet of a node that went down at
    `down_since` dead: a node lost by its lease was cut off about `lease_s` before, and
    Ray judges a cut-off node within about 2 x its failure threshold (ray_health_check).
    A node that returned before that could be declared dead under the jobs placed on it
    since (its health checks still failing in gRPC's back-off after a heal)."""
    verdict_after_cut = 2 * ray_health_check(lease_s)["health_check_failure_threshold"]
    return now >= down_since - lease_s + verdict_after_cut


@dataclass
class Contacts:
    """What the head knows of each node's lease: when it last saw it renewed. Before a
    node's first renewal seen by this head, its last contact is the head's start (or a
    later launch on it): the node may have renewed until then, never later."""

    lease_s: float
    margin_s: float
    since: float  # when this head started looking
    last: dict[str, float] = field(default_factory=dict)
    seen: dict[str, bytes] = field(default_factory=dict)
    # Nodes whose renewals this head has seen since they (re)joined: only their silence is
    # judged. A node that never renewed (its agent still starting) is Ray's to judge.
    renewing: set[str] = field(default_factory=set)

    def heard(self, node: str, value: bytes | None, now: float) -> bool:
        """A lease value read from the GCS; True if it was renewed since the last look.
        The first value read is not news: it may be as old as the head's start."""
        if value is None:
            return False
        before = self.seen.get(node)
        self.seen[node] = value
        if before is None or before == value:
            return False
        self.contact(node, now)
        self.renewing.add(node)
        return True

    def contact(self, node: str, now: float) -> None:
        """The node answered (a renewal seen, a launch on it): it was in touch at `now`."""
        self.last[node] = max(self.last.get(node, self.since), now)

    def last_contact(self, node: str) -> float:
        return self.last.get(node, self.since)

    def late(self, node: str, now: float) -> float:
        """Seconds since the node's last contact."""
        return max(0.0, now - self.last_contact(node))

    def lapsed(self, node: str, now: float) -> bool:
        """The node's lease has run out by the head's count: its supervisors are fencing."""
        return node in self.renewing and self.late(node, now) > self.lease_s

    def renewed_since_lost(self, node: str, now: float) -> bool:
        """The node's lease has been renewed since it was lost (forget), and is current."""
        return node in self.renewing and not self.lapsed(node, now)

    def requeue_at(self, node: str) -> float:
        """When the node's jobs have certainly stopped, and may run elsewhere."""
        return self.last_contact(node) + requeue_delay(self.lease_s, self.margin_s)

    def forget(self, node: str) -> None:
        """The node was lost: its next raylet's lease values start over."""
        self.seen.pop(node, None)
        self.renewing.discard(node)
