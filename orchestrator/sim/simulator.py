"""A discrete-event replay of a job trace through the real policy.

A virtual clock jumps from event to event (arrivals and completions). At every
instant with an event, the simulator applies it, then runs one scheduling cycle:
`policy.plan()` — the same function the live orchestrator calls — on a Snapshot of
its own bookkeeping, and applies the starts and preemptions. Jobs run for their
true duration; the policy sees only their time limits. Jobs larger than the
cluster are dropped (counted in the result). Preempted jobs go back in line and
later run again from the start.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from orchestrator.core import lifecycle
from orchestrator.core.decisions import Snapshot
from orchestrator.core.fairshare import UsageLedger
from orchestrator.core.idleness import Idle, IdleLedger, idle_now, waiting_shapes
from orchestrator.core.inventory import Inventory
from orchestrator.core.ordering import Line, WaitingJob
from orchestrator.core.placement import can_ever_fit
from orchestrator.core.policy import PolicyConfig, nothing_to_decide, plan
from orchestrator.core.preemption import Running
from orchestrator.core.states import JobState
from orchestrator.sim.traces import TraceJob

# What users really type as time limits: round the true duration up to the next of these.
COARSE_LIMITS_S = (3600, 2 * 3600, 4 * 3600, 8 * 3600, 86400, 3 * 86400, 7 * 86400, 14 * 86400, 30 * 86400)


def time_limit(duration: float, model: str) -> float:
    if model == "exact":
        return max(duration, 1.0)
    if model == "coarse":
        for limit in COARSE_LIMITS_S:
            if duration <= limit:
                return float(limit)
        return math.ceil(duration / 86400) * 86400.0
    raise ValueError(f"time-limit model must be exact or coarse, not {model!r}")


@dataclass(slots=True)
class SimJob(WaitingJob):
    """A trace job as the policy sees it, plus its true duration and its fate."""

    duration: float = 0.0
    first_start: float | None = None
    start: float | None = None
    end: float | None = None
    run: int = 0  # bumps on preemption so a stale completion event is ignored
    view: Running | None = None  # how the policy sees it while it runs
    state: JobState = JobState.QUEUED
    allocation: dict[str, list[int]] = field(default_factory=dict)


class _Moves:
    """The queue moves the lifecycle makes (lifecycle.Moves), on the simulator's light
    records: a JobQueue of pydantic Jobs would cost more than the replay itself."""

    def __init__(self, by_id: dict[str, SimJob], line: Line):
        self.by_id, self.line = by_id, line

    def schedule(self, job_id: str, now: float, allocation) -> SimJob:
        job = self.by_id[job_id]
        self.line.remove(job)
        job.state, job.allocation = JobState.SCHEDULED, allocation
        return job

    def preempt(self, job_id: str, now: float, reason: str) -> SimJob:
        job = self.by_id[job_id]
        job.state = JobState.PREEMPTED
        return job

    def requeue(self, job_id: str, now: float, reason: str) -> SimJob:
        job = self.by_id[job_id]
        job.state = JobState.QUEUED
        self.line.add(job)
        return job


@dataclass
class Result:
    policy: str
    jobs: int
    dropped: int
    utilization: float
    avg_wait_s: float
    p50_wait_s: float
    p95_wait_s: float
    max_wait_s: float
    avg_jct_s: float
    makespan_s: float
    preemptions: int
    cycles: int
    user_share: dict[str, float] = field(default_factory=dict)
    # GPUs busy while at least one job waited that could run (core/idleness.py), and
    # each idle cause's share of that GPU-time.
    utilization_while_waiting: float | None = None
    idle_while_waiting: dict[str, float] = field(default_factory=dict)
    # For plots: (time since first submit, busy GPUs) at each change, and every job's wait.
    busy_series: list[tuple[float, int]] = field(default_factory=list, repr=False)
    waits: list[float] = field(default_factory=list, repr=False)

    def summary(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("busy_series", "waits")}


def simulate(
    trace: Sequence[TraceJob],
    cfg: PolicyConfig,
    sizes: dict[str, int],
    limits: str = "exact",
    progress: Callable[[int, int], None] | None = None,
    fairshare_half_life_s: float = 7 * 86400.0,
) -> Result:
    inventory = Inventory.of(sizes)
    line = Line()
    ledger = UsageLedger(fairshare_half_life_s)
    jobs: list[SimJob] = []
    dropped = 0
    gone: set[str] = set()  # trace ids of jobs dropped: what waits on them never starts
    after: dict[str, tuple[str, ...]] = {}  # job id -> the job ids it waits for (afterok)
    by_trace: dict[str, str] = {}
    for n, t in enumerate(trace):
        if not can_ever_fit(sizes, t.gpus) or gone & set(t.after) or not set(t.after) <= set(by_trace):
            dropped += 1
            gone.add(t.id)
            continue
        jobs.append(
            SimJob(
                str(n),
                f"job-{n}",
                t.user,
                t.gpus,
                t.priority,
                n,
                t.submit,
                t.limit if t.limit is not None else time_limit(t.duration, limits),
                duration=t.duration,
            )
        )
        by_trace[t.id] = str(n)
        if t.after:
            after[str(n)] = tuple(by_trace[a] for a in t.after)
    running: dict[str, SimJob] = {}
    ends: list[tuple[float, int, str, int]] = []  # (end time, seq, job id, run) — a heap
    by_id = {j.id: j for j in jobs}
    moves = _Moves(by_id, line)
    next_arrival = 0
    cycles = preemptions = done = 0
    busy_series: list[tuple[float, int]] = []
    origin = jobs[0].submitted_at if jobs else 0.0
    uses_usage = bool(cfg.weights.fairshare_weight)
    reserved: tuple[str, ...] = ()
    # Jobs that arrived while what they wait for had not completed: out of the line (no
    # start, no reservation), as the live service keeps them (head/dependents.py).
    waiting_on: list[SimJob] = []
    # Idle GPUs while jobs wait: the instant after each event's cycles holds until the next.
    idle_ledger, idle, idle_since = IdleLedger(), Idle(False, 0, 0), 0.0
    kept: list = []  # the GPUs per node of the last cycle's reservations

    while next_arrival < len(jobs) or ends:
        now = min(
            jobs[next_arrival].submitted_at if next_arrival < len(jobs) else math.inf,
            ends[0][0] if ends else math.inf,
        )
        idle_ledger.add(idle, now - idle_since)
        # 1. Apply every event at this instant: completions first, then arrivals.
        while ends and ends[0][0] == now:
            _, _, job_id, run = heapq.heappop(ends)
            job = by_id[job_id]
            if job.run != run or job_id not in running:
                continue  # the run this event belonged to was preempted
            inventory.give_back(job_id)
            del running[job_id]
            job.state, job.end = JobState.COMPLETED, now
            done += 1
            if uses_usage:
                ledger.add(job.user, job.gpus * job.duration, now)
        while next_arrival < len(jobs) and jobs[next_arrival].submitted_at == now:
            waiting_on.append(jobs[next_arrival])
            next_arrival += 1
        if waiting_on:  # simulated jobs always complete: afterok is met once every target has
            ready = [
                j
                for j in waiting_on
                if all(by_id[d].state is JobState.COMPLETED for d in after.get(j.id, ()))
            ]
            for job in ready:
                line.add(job)
            waiting_on = [j for j in waiting_on if j not in ready] if ready else waiting_on
        # 2. One cycle; after preemptions, one more so the preemptor takes the freed GPUs.
        # Decisions are applied through core/lifecycle.py, as the live service applies
        # them. The one difference: the live service waits for runners (a victim's GPUs
        # come back when its processes are gone, a start is placed and launched first);
        # the simulator has none, so both happen at once, here.
        while True:
            snap = Snapshot(
                sizes=sizes,
                free=inventory.free(),
                line=line,
                running=[j.view for j in running.values()],  # type: ignore[misc]
                usage=ledger.snapshot(now) if uses_usage else {},
                reserved=reserved,
            )
            if nothing_to_decide(snap, cfg):
                break  # the cycle would be empty: same result, less work
            cycles += 1
            decided = plan(snap, now, cfg, explain=False)
            reserved = tuple(decided.reservations)  # kept for the next cycle, as the live service does
            kept = [r.counts for r in decided.reservations.values()]
            if not decided.starts and not decided.preemptions:
                break  # most cycles decide nothing: skip the bookkeeping (the replay's hot path)
            effects = lifecycle.apply_plan(moves, inventory, decided, now)
            for victim in effects.stop:  # no runner to wait for: its GPUs come back now
                inventory.give_back(victim.id)
                del running[victim.id]
                victim.run += 1
                victim.start = None
                lifecycle.back_in_line(moves, victim.id, now)
                preemptions += 1
            for job in effects.launch:  # no placement to wait for: it runs now
                job.state = JobState.RUNNING
                running[job.id] = job
                job.start = now
                job.view = Running(
                    job.id,
                    job.label,
                    job.user,
                    job.priority,
                    {n: len(g) for n, g in job.allocation.items()},
                    now,
                    job.time_limit,
                    job.preemptible,
                )
                if job.first_start is None:
                    job.first_start = now
                heapq.heappush(ends, (now + job.duration, job.seq, job.id, job.run))
            if not decided.preemptions:
                break
        busy = inventory.allocated_count()
        free = {n: len(ix) for n, ix in inventory.free().items()}
        holding = ((j.user, j.gpus) for j in running.values())
        shapes = waiting_shapes(line, cfg.cap_for if cfg.capped else None, holding)
        idle, idle_since = idle_now(sizes, sizes, free, busy, shapes, kept), now
        if not busy_series or busy_series[-1][1] != busy:
            busy_series.append((now - origin, busy))
        if progress is not None:
            progress(done, len(jobs))

    result = _result(cfg.name.value, jobs, dropped, sizes, preemptions, cycles, busy_series)
    result.utilization_while_waiting = idle_ledger.utilization
    result.idle_while_waiting = idle_ledger.shares()
    return result


def _result(name, jobs: list[SimJob], dropped, sizes, preemptions, cycles, busy_series) -> Result:
    if not jobs:
        return Result(name, 0, dropped, 0.0, 0, 0, 0, 0, 0, 0, preemptions, cycles)
    first = min(j.submitted_at for j in jobs)
    last = max(j.end for j in jobs if j.end is not None)
    makespan = last - first
    total_gpus = sum(sizes.values())
    work = sum(j.gpus * j.duration for j in jobs)
    # A job's wait is submit -> the start of the run that finished it.
    waits = sorted(j.start - j.submitted_at for j in jobs)  # type: ignore[operator]
    jcts = [j.end - j.submitted_at for j in jobs]  # type: ignore[operator]
    by_user: dict[str, float] = {}
    for j in jobs:
        by_user[j.user] = by_user.get(j.user, 0.0) + j.gpus * j.duration
    share = {u: w / work for u, w in by_user.items()} if len(by_user) > 1 else {}
    return Result(
        policy=name,
        jobs=len(jobs),
        dropped=dropped,
        utilization=work / (total_gpus * makespan) if makespan > 0 else 0.0,
        avg_wait_s=sum(waits) / len(waits),
        p50_wait_s=_pct(waits, 0.50),
        p95_wait_s=_pct(waits, 0.95),
        max_wait_s=waits[-1],
        avg_jct_s=sum(jcts) / len(jcts),
        makespan_s=makespan,
        preemptions=preemptions,
        cycles=cycles,
        user_share=share,
        busy_series=busy_series,
        waits=waits,
    )


def _pct(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    k = max(0, min(len(sorted_values) - 1, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[k]
