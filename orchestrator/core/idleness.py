"""GPUs idle while jobs wait, and why: the figure a lab feels ("my job waits and GPUs
sit idle"), which utilization over a whole trace hides (it also counts the drain at
the end, when nothing waits).

At one instant, `idle_now` takes the cluster after a scheduling cycle — GPUs per node,
the free ones, the waiting line, the reservations the cycle made — and, if at least
one waiting job could ever run on the cluster, splits every idle GPU into one cause:

- out_of_service: drained, unhealthy or on a node that is down;
- stopped:        the site stopped all starts;
- reservation:    free, and kept for a reservation (drained for a big job);
- limits:         free, and a waiting job fits there, but its user is at their cap;
- latency:        free, and a waiting job fits there: it starts at the next cycle
                  (live, the loop's interval; never in the simulator, which plans at
                  every event);
- fragmentation:  free, but no waiting job fits where the free GPUs are.

In that order: a GPU is given the first cause that claims it, so the causes sum to the
idle GPUs. `IdleLedger` integrates instants over time (GPU-seconds), in the simulator
between events and live between cycles; "utilization while jobs wait" is its busy
share of the GPU-time during which jobs waited. Pure: the same code serves both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

from orchestrator.core.ordering import Line
from orchestrator.core.placement import Counts, can_ever_fit, choose_nodes


class Cause(str, Enum):
    OUT_OF_SERVICE = "out_of_service"
    STOPPED = "stopped"
    RESERVATION = "reservation"
    LIMITS = "limits"
    LATENCY = "latency"
    FRAGMENTATION = "fragmentation"


WORDS = {
    Cause.OUT_OF_SERVICE: "out of service",
    Cause.STOPPED: "starts stopped",
    Cause.RESERVATION: "draining for reservations",
    Cause.LIMITS: "held back by user limits",
    Cause.LATENCY: "waiting for the next cycle",
    Cause.FRAGMENTATION: "fragmentation",
}


@dataclass(frozen=True)
class Shape:
    """A waiting job as this accounting needs it."""

    gpus: int
    multi_node: bool = False
    capped: bool = False  # its user holds their GPU cap: the policy may not start it


@dataclass(frozen=True)
class Idle:
    """One instant: whether a job waits that could run here, and the GPUs by use."""

    waiting: bool
    total: int  # every GPU of the cluster, in service or not
    busy: int  # GPUs held by jobs
    causes: Mapping[Cause, int] = field(default_factory=dict)  # idle GPUs by cause, while waiting


def waiting_shapes(
    line: Line,
    cap_for: Callable[[str], int | None] | None = None,
    holding: Iterable[tuple[str, int]] = (),
) -> list[Shape]:
    """The line's jobs as shapes. Without caps, one per distinct shape (the line keeps
    them: cheap at every event of a replay); with them (`cap_for`: a user's cap,
    `holding`: (user, GPUs) of each running job), one per job, marked where its user's
    cap holds it back as the policy judges it: what they hold and it would add."""
    if cap_for is None:
        return [Shape(gpus, multi) for gpus, multi in line.shapes()]
    held: dict[str, int] = {}
    for user, gpus in holding:
        held[user] = held.get(user, 0) + gpus
    shapes = []
    for job in line.fifo():
        cap = cap_for(job.user)
        over = cap is not None and held.get(job.user, 0) + job.gpus > cap
        shapes.append(Shape(job.gpus, job.multi_node, over))
    return shapes


def idle_now(
    total: Mapping[str, int],
    in_service: Mapping[str, int],
    free: Mapping[str, int],
    busy: int,
    waiting: Iterable[Shape],
    reservations: Iterable[Counts] = (),
    stopped: bool = False,
) -> Idle:
    """`total`: GPUs per node, in service or not; `in_service`: those in service (the
    policy's sizes); `free`: free GPUs per node (in service, held by no job); `busy`:
    GPUs held by jobs, in service or not (a drained GPU may still hold its job);
    `waiting`: the shapes of the jobs in line; `reservations`: the GPUs per node each
    reservation of the last cycle takes when it starts."""
    all_gpus = sum(total.values())
    free_now = {n: free.get(n, 0) for n in in_service}
    n_free = sum(free_now.values())
    out = max(0, all_gpus - busy - n_free)  # neither free nor holding a job: out of service
    shapes = [s for s in waiting if can_ever_fit(total, s.gpus, s.multi_node)]
    if not shapes:
        return Idle(False, all_gpus, busy)
    causes: dict[Cause, int] = {Cause.OUT_OF_SERVICE: out}
    if stopped:
        causes[Cause.STOPPED] = n_free
        return Idle(True, all_gpus, busy, _nonzero(causes))
    left = dict(free_now)
    kept = 0
    for counts in reservations:
        for node, n in counts.items():
            take = min(n, left.get(node, 0))
            if take:
                left[node] -= take
                kept += take
    causes[Cause.RESERVATION] = kept
    causes[Cause.LIMITS] = _fill(left, in_service, [s for s in shapes if s.capped])
    causes[Cause.LATENCY] = _fill(left, in_service, [s for s in shapes if not s.capped])
    causes[Cause.FRAGMENTATION] = sum(left.values())
    return Idle(True, all_gpus, busy, _nonzero(causes))


def _fill(left: dict[str, int], sizes: Mapping[str, int], shapes: Sequence[Shape]) -> int:
    """GPUs of `left` that the jobs of `shapes` could take, in turn, as the policy
    would place them (taken out of `left`)."""
    taken = 0
    largest = max(sizes.values(), default=0)
    for shape in sorted(shapes, key=lambda s: s.gpus):
        counts = choose_nodes(left, sizes, shape.gpus, shape.multi_node, largest) if largest else None
        if counts is None:
            continue
        for node, n in counts.items():
            left[node] -= n
        taken += shape.gpus
    return taken


def _nonzero(causes: dict[Cause, int]) -> dict[Cause, int]:
    return {c: n for c, n in causes.items() if n}


@dataclass
class IdleLedger:
    """Instants integrated over time: GPU-seconds while jobs waited, busy and by cause."""

    waiting_s: float = 0.0  # seconds during which a job waited that could run here
    gpu_s: float = 0.0  # GPU-seconds of the cluster during those seconds
    busy_gpu_s: float = 0.0
    idle_gpu_s: dict[Cause, float] = field(default_factory=dict)

    def add(self, idle: Idle, seconds: float) -> None:
        if not idle.waiting or seconds <= 0:
            return
        self.waiting_s += seconds
        self.gpu_s += idle.total * seconds
        self.busy_gpu_s += idle.busy * seconds
        for cause, n in idle.causes.items():
            self.idle_gpu_s[cause] = self.idle_gpu_s.get(cause, 0.0) + n * seconds

    def merge(self, other: IdleLedger) -> None:
        self.waiting_s += other.waiting_s
        self.gpu_s += other.gpu_s
        self.busy_gpu_s += other.busy_gpu_s
        for cause, s in other.idle_gpu_s.items():
            self.idle_gpu_s[cause] = self.idle_gpu_s.get(cause, 0.0) + s

    @property
    def utilization(self) -> float | None:
        """Busy share of the GPU-time during which jobs waited (None: nothing waited)."""
        return self.busy_gpu_s / self.gpu_s if self.gpu_s else None

    def shares(self) -> dict[str, float]:
        """Each cause's share of that GPU-time, by the cause's name (busy + these = 1)."""
        if not self.gpu_s:
            return {}
        return {c.value: s / self.gpu_s for c, s in sorted(self.idle_gpu_s.items(), key=lambda kv: -kv[1])}

    def summary(self) -> dict[str, object]:
        return {
            "waiting_s": round(self.waiting_s, 3),
            "utilization_while_waiting": self.utilization,
            "idle_share_by_cause": self.shares(),
        }


def describe(ledger: IdleLedger, window: str) -> str:
    """One line for people: "last 24 h: 97.8 % busy while jobs waited; 1.4 % draining
    for reservations, 0.8 % fragmentation"."""
    if ledger.utilization is None:
        return f"{window}: no job waited that could run"
    parts = [
        f"{share:.1%} {WORDS[Cause(name)]}" for name, share in ledger.shares().items() if share >= 0.0005
    ]
    rest = f"; {', '.join(parts)}" if parts else ""
    return f"{window}: {ledger.utilization:.1%} busy while jobs waited{rest}"
