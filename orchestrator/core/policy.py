"""One scheduling cycle: `plan(snapshot, now, config) -> Plan`. (It runs over 400 lines:
the plan and its explanation walk the same timeline and stay together.)

This is the one place where gpuq decides which job starts where, which waits (and
why, and until when), which holds a reservation and which running jobs are stopped
for a more important one. It is pure: no Ray, no I/O, no clock. The live
orchestrator and the simulator call this same function; applying the decisions
(placement groups, runners, state changes) happens after, in one place each.

Named policies (config presets):
- fifo    strict order: the first job that does not fit blocks every job behind it;
- greedy  "skip, try the next job": start anything that fits (starves big jobs);
- easy    EASY backfill: the first job that does not fit gets a reservation, later
          jobs start only if they do not delay it;
- default priority, then short time limits first with relative aging and fair-share,
          aging stronger the more work waits (a backlog);
          reservations for the top N jobs (conservative backfill when N is large) that
          stay with their job until it starts; per-user GPU caps; preemption.
Decisions use time limits only, never true runtimes: that is all a real scheduler has.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import TYPE_CHECKING, Any

from orchestrator.core import wording
from orchestrator.core.decisions import Pending, Plan, Preempt, Reason, Reservation, Snapshot, Start
from orchestrator.core.fairshare import fairshare_factors
from orchestrator.core.inventory import Allocation
from orchestrator.core.ordering import OrderWeights, Waiting, in_order
from orchestrator.core.placement import Counts, can_ever_fit, choose_nodes, pick_gpus
from orchestrator.core.preemption import Running, victims_for
from orchestrator.core.priority import Priority
from orchestrator.core.timeline import INF, Timeline

if TYPE_CHECKING:  # the site config is only passed through here
    from orchestrator.core.config import Config


class PolicyName(str, Enum):
    DEFAULT = "default"
    FIFO = "fifo"
    GREEDY = "greedy"
    EASY = "easy"


@dataclass(frozen=True)
class PolicyConfig:
    name: PolicyName = PolicyName.DEFAULT
    # How many of the jobs that cannot start now get a reservation. 0 = plain
    # skip-and-try-next (big jobs starve), 1 = EASY, N = conservative for the top N.
    reservation_depth: int = 1
    # False = FIFO: the first job that cannot start blocks all behind it.
    backfill: bool = True
    # Chosen on the policy suite (scripts/bench_policy_suite.py: twelve real traces at three
    # loads), not on one trace: short limits first, and the job that has waited longest
    # catches up with the shortest newcomer (see docs/BENCHMARKS.md for what was tried).
    weights: OrderWeights = OrderWeights(age_weight=0.75, fairshare_weight=0.5, short_weight=1.0)
    # A reservation stays with its job until the job starts. Without this, every change in
    # the order (aging, a short newcomer) could hand GPUs drained for one big job to
    # another, and the drain starts over: the "moving reservation" failure of backfill.
    sticky_reservations: bool = True
    # Under a backlog short-first reorders less: the age weight is multiplied by the
    # work waiting (GPU-seconds of time limits per GPU of the cluster) over this, kept
    # between 1 and backlog_aging_max. Short-first cuts the average wait, but under
    # sustained load it drains GPUs for the big jobs it passed over and stretches the
    # longest wait; chosen on the suite at six loads (docs/BENCHMARKS.md, #32).
    backlog_aging_s: float = 12 * 3600.0
    backlog_aging_max: float = 4.0
    user_gpu_caps: Mapping[str, int] = field(default_factory=dict)
    default_user_gpu_cap: int | None = None
    # Preemptor priority -> priorities it may stop. Default: CRITICAL may stop LOW and NORMAL.
    may_preempt: Mapping[int, frozenset[int]] = field(default_factory=lambda: {4: frozenset({1, 2})})
    # How many jobs at the head of the line get a reason and an estimated start.
    explain_depth: int = 100

    @classmethod
    def preset(cls, name: str | PolicyName, **overrides: Any) -> PolicyConfig:
        name = PolicyName(name)
        classic = dict(weights=OrderWeights(), may_preempt={}, sticky_reservations=False)
        base = {
            PolicyName.DEFAULT: {},
            PolicyName.FIFO: dict(classic, backfill=False, reservation_depth=0),
            PolicyName.GREEDY: dict(classic, reservation_depth=0),
            PolicyName.EASY: dict(classic, reservation_depth=1),
        }[name]
        return cls(name=name, **{**base, **overrides})

    @classmethod
    def from_site(cls, site: Config) -> PolicyConfig:
        """The policy a site config (orchestrator.core.config.Config) asks for."""
        may = {
            int(Priority.parse(who)): frozenset(int(Priority.parse(v)) for v in victims)
            for who, victims in site.preemption.items()
        }
        overrides: dict[str, Any] = dict(
            user_gpu_caps=dict(site.user_gpu_caps), default_user_gpu_cap=site.default_user_gpu_cap
        )
        name = PolicyName(site.policy)
        if name is PolicyName.DEFAULT:
            weights = replace(
                cls().weights, promote_after_s=site.promote_after_s, promote_levels=site.promote_levels
            )
            overrides.update(reservation_depth=site.reservation_depth, may_preempt=may, weights=weights)
        return cls.preset(name, **overrides)

    def cap_for(self, user: str) -> int | None:
        return self.user_gpu_caps.get(user, self.default_user_gpu_cap)

    @property
    def capped(self) -> bool:
        """Whether any user has a GPU cap."""
        return bool(self.user_gpu_caps) or self.default_user_gpu_cap is not None


def plan(
    snap: Snapshot, now: float, cfg: PolicyConfig, explain: bool = True, extra: Waiting | None = None
) -> Plan:
    """Decide one cycle. `explain` adds reasons and estimated starts for the head of
    the line (the simulator turns it off: decisions are the same either way).
    `extra` is a hypothetical job, for dry runs; it is planned like any other."""
    out = Plan()
    sizes = snap.sizes
    # 1. Take stock: free GPUs, GPUs held per user, who is already being stopped.
    state = _Cycle(snap, now, extra)
    held: Counter[str] = Counter()
    for r in snap.running:
        held[r.user] += r.gpus
    users = snap.line.users() | set(held) | ({extra.user} if extra else set())
    fairshare = fairshare_factors(snap.usage, users) if cfg.weights.fairshare_weight else {}
    lowest_preemptor = min(cfg.may_preempt) if cfg.may_preempt else None
    capped = cfg.capped
    skipped = False  # a job that could not start was passed over (later starts are backfill)
    blocked_by: Waiting | None = None  # FIFO: the job that blocks the line

    # 2. Walk the line best first (jobs holding reservations lead their level); stop once
    #    nothing further can change.
    held_first = snap.reserved if cfg.sticky_reservations else ()
    weights = weights_now(snap, cfg)
    for job in in_order(snap.line, now, weights, fairshare, extra, held_first):
        if (
            state.reserved >= cfg.reservation_depth
            and (lowest_preemptor is None or job.priority < lowest_preemptor)
            and state.nothing_can_start()
        ):
            break  # no job left in line fits the free GPUs, no reservation to make, no right to preempt
        out.order.append(job.id)
        # Reasons cost more than decisions: write them only for the jobs someone reads.
        explaining = explain and (len(out.order) <= cfg.explain_depth or job is extra)
        if not state.can_ever_fit(job):
            if explaining:
                out.pending[job.id] = Pending(Reason.UNPLACEABLE, wording.unplaceable(job, sizes))
            continue
        cap = cfg.cap_for(job.user) if capped else None
        if cap is not None and held[job.user] + job.gpus > cap:
            if explaining:
                out.pending[job.id] = Pending(
                    Reason.USER_CAP, f"{job.user} holds {held[job.user]} of {cap} GPUs"
                )
            continue
        if blocked_by is not None:
            if not explaining:
                break
            out.pending[job.id] = Pending(Reason.PRIORITY, f"behind {blocked_by.label} (no backfill)")
            continue

        # 2a. Start now if it fits without delaying any reservation.
        counts = state.fits_now(job)
        if counts is not None:
            held[job.user] += job.gpus
            out.starts.append(Start(job.id, state.start(job, counts), backfilled=skipped))
            continue
        skipped = True

        # 2b. Preempt lower-priority jobs where the site allows this pair.
        if job.priority in cfg.may_preempt:
            found = victims_for(
                job.gpus,
                job.multi_node,
                job.priority,
                state.claimable(job.time_limit),
                sizes,
                [r for r in snap.running if not state.is_stopping(r)],
                cfg.may_preempt,
            )
            if found is not None:
                victims, counts = found
                for v in victims:
                    out.preemptions.append(
                        Preempt(v.id, job.id, f"preempted by {job.label} (priority {job.priority})")
                    )
                    state.stop(v)
                state.claim(job.time_limit, counts)
                held[job.user] += job.gpus
                waiting_on = [v.label for v in victims] or state.stopping_labels(counts)
                out.pending[job.id] = Pending(
                    Reason.PREEMPTING, f"stopping {wording.names(waiting_on)} to free {job.gpus} GPUs", now
                )
                continue

        # 2c. Reserve the earliest start for the first jobs that cannot start.
        if state.reserved < cfg.reservation_depth:
            found_at = state.reserve(job)
            if found_at is not None:
                t, counts = found_at
                out.reservations[job.id] = Reservation(job.id, t, counts)
                if explaining:
                    out.pending[job.id] = state.reservation_pending(job, t, counts)
                continue

        if explaining:
            out.pending[job.id] = state.waiting(job)
        if not cfg.backfill:
            blocked_by = job
            if not explaining:
                break

    # 3. Explain the head of the line: a reason and an estimated start for each.
    if explain:
        _explain(out, snap, now, cfg, weights, fairshare, extra, state, held_first)
    return out


def weights_now(snap: Snapshot, cfg: PolicyConfig) -> OrderWeights:
    """The order's weights this cycle: the configured ones, with aging raised by the
    backlog (PolicyConfig.backlog_aging_s)."""
    w = cfg.weights
    if not (cfg.backlog_aging_s and w.age_weight):
        return w
    backlog = snap.line.work / max(1, sum(snap.sizes.values()))
    boost = min(cfg.backlog_aging_max, max(1.0, backlog / cfg.backlog_aging_s))
    return w if boost == 1.0 else replace(w, age_weight=w.age_weight * boost)


def nothing_to_decide(snap: Snapshot, cfg: PolicyConfig) -> bool:
    """True when a cycle could not start or preempt anything: no GPU is free and no
    waiting job may preempt. Callers may skip such a cycle; its plan would be empty."""
    if any(snap.free.get(n) for n in snap.sizes):
        return False
    return not any(level in cfg.may_preempt for level, _, _ in snap.line.groups_keys())


def dry_run(snap: Snapshot, now: float, cfg: PolicyConfig, job: Waiting) -> Start | Pending:
    """If `job` were submitted now: where would it start, or why and until when would it wait?"""
    result = plan(
        snap, now, replace(cfg, explain_depth=max(cfg.explain_depth, len(snap.line) + 1)), extra=job
    )
    for start in result.starts:
        if start.job_id == job.id:
            return start
    return result.pending[job.id]


class _Cycle:
    """The cycle's working state: free GPUs, reservations, claims, the timeline.

    The timeline is built only when the first reservation or claim needs it: most
    cycles start what fits and stop, and never pay for it.
    """

    def __init__(self, snap: Snapshot, now: float, extra: Waiting | None = None):
        self.snap, self.now = snap, now
        self.free_idx = {n: sorted(snap.free.get(n, ())) for n in snap.sizes}
        self.free = {n: len(ix) for n, ix in self.free_idx.items()}
        self.total_free = sum(self.free.values())
        self.max_free = max(self.free.values(), default=0)
        self.started: list[Running] = []  # jobs started by this cycle
        self.largest = max(snap.sizes.values(), default=0)
        self._fits_cluster: dict[tuple[int, bool], bool] = {}
        self._fails_from: dict[tuple[int, bool], float] = {}  # shape -> shortest limit that did not fit
        # The smallest job in line that needs one node, and the smallest that may span
        # nodes: when neither fits the free GPUs, no job further down the line can start.
        shapes = list(snap.line.shapes()) + ([(extra.gpus, extra.multi_node)] if extra else [])
        self.smallest_one_node = min(
            (g for g, multi in shapes if not multi and g <= self.largest), default=INF
        )
        self.smallest_spread = min((g for g, multi in shapes if multi or g > self.largest), default=INF)
        self.timeline: Timeline | None = None
        self.reserved = 0
        self.first_reserved: str | None = None
        self.stopped: set[str] = set()

    def nothing_can_start(self) -> bool:
        return self.smallest_one_node > self.max_free and self.smallest_spread > self.total_free

    def can_ever_fit(self, job: Waiting) -> bool:
        key = (job.gpus, job.multi_node)
        if key not in self._fits_cluster:
            self._fits_cluster[key] = can_ever_fit(self.snap.sizes, job.gpus, job.multi_node)
        return self._fits_cluster[key]

    def holders(self) -> list[Running]:
        """Every job that holds GPUs: those running before the cycle and those it started."""
        return [*self.snap.running, *self.started]

    def is_stopping(self, r: Running) -> bool:
        return r.stopping or r.id in self.stopped

    def tl(self) -> Timeline:
        if self.timeline is None:
            releases = [
                (node, self.now if self.is_stopping(r) else r.expected_end, n)
                for r in self.holders()
                for node, n in r.counts.items()
            ]
            self.timeline = Timeline.build(self.now, self.snap.sizes, self.free, releases)
        return self.timeline

    def fits_now(self, job: Waiting) -> Counts | None:
        gpus = job.gpus
        if gpus > self.total_free:
            return None
        one_node = gpus <= self.largest and not job.multi_node
        if one_node and gpus > self.max_free:
            return None  # the cheap test that settles most jobs in a busy cluster
        shape = (gpus, job.multi_node)
        if job.time_limit >= self._fails_from.get(shape, INF):
            return None  # a job of this size and no longer limit already failed this cycle
        if self.timeline is None:
            counts = choose_nodes(self.free, self.snap.sizes, gpus, job.multi_node, self.largest)
        else:
            end = self.now + job.time_limit
            # Only nodes with enough free GPUs now matter to a one-node job: skip the others.
            window = {
                n: (min(f, tl.min_avail(self.now, end)) if f >= gpus or not one_node else 0)
                for n, tl in self.timeline.nodes.items()
                for f in (self.free.get(n, 0),)  # by name: the timeline's nodes are the snapshot's sizes
            }
            counts = choose_nodes(window, self.snap.sizes, gpus, job.multi_node, self.largest)
        if counts is None:
            # Within a cycle availability only shrinks (starts, reservations, claims) until a
            # victim is stopped, so a longer job of the same size cannot fit either.
            self._fails_from[shape] = min(job.time_limit, self._fails_from.get(shape, INF))
        return counts

    def start(self, job: Waiting, counts: Counts) -> Allocation:
        alloc = pick_gpus(self.free_idx, counts)
        for node, gpus in alloc.items():
            self.free_idx[node] = self.free_idx[node][len(gpus) :]
            self.free[node] -= len(gpus)
            self.total_free -= len(gpus)
        self.max_free = max(self.free.values(), default=0)
        self.started.append(
            Running(
                job.id,
                job.label,
                job.user,
                int(job.priority),
                counts,
                self.now,
                job.time_limit,
                job.preemptible,
            )
        )
        if self.timeline is not None:
            self.timeline.take(self.now, job.time_limit, counts)
        return alloc

    def claimable(self, duration: float) -> dict[str, int]:
        """GPUs free now or coming back from jobs being stopped, less what is claimed or
        reserved, over the whole window the job would run."""
        tl = self.tl()
        return {n: tl.nodes[n].min_avail(self.now, self.now + duration) for n in self.snap.sizes}

    def stop(self, r: Running) -> None:
        """A victim: its GPUs come back now instead of at its expected end."""
        tl = self.tl()
        self.stopped.add(r.id)
        self._fails_from.clear()  # availability grew: earlier failures may fit now
        end = max(self.now, r.expected_end)
        if end > self.now:
            for node, n in r.counts.items():
                tl.nodes[node].take(self.now, end, -n)

    def claim(self, duration: float, counts: Counts) -> None:
        self.tl().take(self.now, duration, counts)

    def stopping_labels(self, counts: Counts) -> list[str]:
        return [r.label for r in self.holders() if self.is_stopping(r) and set(r.counts) & set(counts)]

    def reserve(self, job: Waiting) -> tuple[float, Counts] | None:
        tl = self.tl()
        found = tl.earliest(self.now, job.gpus, job.time_limit, job.multi_node)
        if found is not None:
            tl.take(found[0], job.time_limit, found[1])
            self.reserved += 1
            self.first_reserved = self.first_reserved or job.label
        return found

    def reservation_pending(self, job: Waiting, t: float, counts: Counts) -> Pending:
        """A reserved job's reason. Like Slurm, it says Resources while it merely waits for
        running jobs to end; it says Reserved once free GPUs are being kept idle for it."""
        enders = sorted(
            r.label
            for r in self.holders()
            if set(r.counts) & set(counts)
            and not self.is_stopping(r)
            and abs(max(self.now, r.expected_end) - t) < 1e-6
        )
        when = (
            f"when {wording.names(enders)} end{'s' if len(enders) == 1 else ''}"
            if enders
            else "when GPUs held ahead of it free up"
        )
        kept = sum(self.free[n] for n in counts)
        if kept:
            return Pending(
                Reason.RESERVED,
                f"{kept} free GPUs on {wording.where(counts)} are kept for it; "
                f"starts by {wording.clock(t, self.now)} {when}",
                t,
            )
        return Pending(
            Reason.RESOURCES,
            f"{self.waiting(job).message}; reserved to start by {wording.clock(t, self.now)} {when}",
            t,
        )

    def waiting(self, job: Waiting) -> Pending:
        """Why a job that neither starts, preempts nor holds a reservation waits."""
        sizes = self.snap.sizes
        if choose_nodes(self.free, sizes, job.gpus, job.multi_node) is not None:
            if self.first_reserved:
                return Pending(
                    Reason.PRIORITY, f"starting now would delay the reservation of {self.first_reserved}"
                )
            return Pending(Reason.PRIORITY, "GPUs are free but kept for jobs ahead of it")
        return Pending(
            Reason.RESOURCES,
            wording.short_of(job, self.free, job.gpus <= max(sizes.values()) and not job.multi_node),
        )


def _explain(
    out: Plan,
    snap: Snapshot,
    now: float,
    cfg: PolicyConfig,
    weights: OrderWeights,
    fairshare: Mapping[str, float],
    extra: Waiting | None,
    state: _Cycle,
    held_first: Sequence[str],
) -> None:
    """Reasons and estimated starts for the head of the line: a conservative plan on a
    copy of the timeline, each waiting job reserved in turn after the real reservations."""
    started = {s.job_id for s in out.starts}
    hypo = state.tl().copy()
    for i, job in enumerate(in_order(snap.line, now, weights, fairshare, extra, held_first)):
        is_extra = extra is not None and job is extra
        if i >= cfg.explain_depth and not is_extra:
            if extra is None:
                break
            continue  # a dry run reads on to the hypothetical job
        if i >= len(out.order):
            out.order.append(job.id)
        if job.id in started:
            continue
        pending = out.pending.get(job.id) or state.waiting(job)
        if pending.estimated_start is None and pending.code not in (Reason.UNPLACEABLE, Reason.USER_CAP):
            found = hypo.earliest(now, job.gpus, job.time_limit, job.multi_node)
            if found is not None:
                hypo.take(found[0], job.time_limit, found[1])
                pending = replace(pending, estimated_start=found[0])
        out.pending[job.id] = pending
        if is_extra:
            break
