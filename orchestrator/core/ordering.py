"""The order in which the policy considers waiting jobs.

Priority level first, always. Within a level first come, first served, refined by tie-breakers
from Slurm's multifactor priority:
- size: jobs with shorter time limits go first (Slurm's job-size factor, by length), which
  is what cuts the average wait;
- aging: a job's wait as a fraction of the longest wait in line. The job that has waited
  longest gets the whole age weight, so no job waits behind an endless stream of short
  newcomers. Being relative, aging needs no horizon: a horizon fitted to one trace (the
  30 days this replaced) is far too slow where waits are hours and too fast where they
  are weeks (docs/BENCHMARKS.md, the policy suite). Under a backlog the policy
  raises the age weight (policy.PolicyConfig.backlog_aging_s), so that short-first
  reorders less the more work waits;
- fair-share: users with little recent GPU usage go before heavy users.
The score never lifts a job above its priority level; a site may opt in to
promotion, which lifts a job one level per `promote_after_s` of waiting. Jobs that hold a
reservation (`first`) go before the rest of their level, so a reservation, once made, is
kept until its job starts rather than handed to whichever job scores best next cycle.

Waiting jobs are kept in groups, one per (level, user, time-limit class), each in
submission order. Within a group every job has the same fair-share and size, and its
older jobs have waited longer, so each group is already sorted by score; the full order
is a lazy k-way merge of the group heads. A scheduling cycle that stops after a few jobs
therefore costs O(k log groups), not a sort of the whole queue.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, cast

from sortedcontainers import SortedDict


class Waiting(Protocol):
    """What the policy needs to know about a queued job."""

    @property
    def id(self) -> str: ...
    @property
    def label(self) -> str: ...  # what users call it (run id) in messages
    @property
    def user(self) -> str: ...
    @property
    def gpus(self) -> int: ...
    @property
    def priority(self) -> int: ...
    @property
    def seq(self) -> int: ...
    @property
    def submitted_at(self) -> float: ...
    @property
    def time_limit(self) -> float: ...
    @property
    def preemptible(self) -> bool: ...
    @property
    def multi_node(self) -> bool: ...


@dataclass(slots=True)
class WaitingJob:
    """A plain Waiting: what the simulator, benchmarks and tests hand to the policy."""

    id: str
    label: str
    user: str
    gpus: int
    priority: int
    seq: int
    submitted_at: float
    time_limit: float
    preemptible: bool = True
    multi_node: bool = False


class Line:
    """Queued jobs in groups of (priority level, user, time-limit class), each group in
    submission order. Within a group, jobs differ only in how long they have waited."""

    def __init__(self) -> None:
        self._groups: dict[tuple[int, str, int], SortedDict] = {}
        # The same jobs in plain line order (priority, then FIFO): positions, and
        # the order itself when no tie-breaker is weighted.
        self._fifo: SortedDict = SortedDict()
        self._shapes: Counter[tuple[int, bool]] = Counter()  # (gpus, multi_node) -> jobs waiting
        self._by_id: dict[str, Waiting] = {}
        self.work = 0.0  # GPU-seconds the waiting jobs ask for, by their time limits

    def __len__(self) -> int:
        return len(self._fifo)

    def add(self, job: Waiting) -> None:
        self._groups.setdefault(_group_of(job), SortedDict())[job.seq] = job
        self._fifo[(-int(job.priority), job.seq)] = job
        self._shapes[(job.gpus, job.multi_node)] += 1
        self._by_id[job.id] = job
        self.work += job.gpus * job.time_limit

    def remove(self, job: Waiting) -> None:
        """Remove `job`; call before changing its priority, user or time limit."""
        key = _group_of(job)
        group = self._groups[key]
        del group[job.seq]
        del self._fifo[(-int(job.priority), job.seq)]
        del self._by_id[job.id]
        # An empty line asks for nothing: no rounding left over from a million adds.
        self.work = self.work - job.gpus * job.time_limit if self._by_id else 0.0
        shape = (job.gpus, job.multi_node)
        self._shapes[shape] -= 1
        if not self._shapes[shape]:
            del self._shapes[shape]
        if not group:
            del self._groups[key]

    def get(self, job_id: str) -> Waiting | None:
        return self._by_id.get(job_id)

    def position(self, job: Waiting) -> int:
        """1-based place in the plain priority-then-FIFO order."""
        return int(self._fifo.index((-int(job.priority), job.seq))) + 1

    def shapes(self) -> Iterable[tuple[int, bool]]:
        """The distinct (gpus, multi_node) shapes of the jobs waiting."""
        return self._shapes.keys()

    def fifo(self) -> Iterable[Waiting]:
        return cast(Iterable[Waiting], self._fifo.values())

    def groups(self) -> Iterable[tuple[tuple[int, str, int], Iterable[Waiting]]]:
        return ((key, group.values()) for key, group in self._groups.items())

    def groups_keys(self) -> Iterable[tuple[int, str, int]]:
        return self._groups.keys()

    def users(self) -> set[str]:
        return {user for _, user, _ in self._groups}


@dataclass(frozen=True)
class OrderWeights:
    """Weights of the tie-breakers within a priority level (all 0 = plain FIFO).

    The default policy's weights (policy.PolicyConfig) were chosen on the policy suite,
    twelve real traces replayed at three loads (docs/BENCHMARKS.md), not on one trace."""

    age_weight: float = 0.0  # x (wait / longest wait in line), so 0..age_weight
    fairshare_weight: float = 0.0
    short_weight: float = 0.0  # favour short time limits (Slurm's job-size factor, by length)
    # Opt-in: every `promote_after_s` of waiting lifts a job one level in the order, at most
    # `promote_levels` levels (0 = aging never crosses a level). Preemption rights keep
    # following the job's own priority.
    promote_after_s: float = 0.0
    promote_levels: int = 0


def in_order(
    line: Line,
    now: float,
    weights: OrderWeights,
    fairshare: Mapping[str, float],
    extra: Waiting | None = None,
    first: Sequence[str] = (),
) -> Iterator[Waiting]:
    """Waiting jobs, best first. `extra` is a hypothetical job merged in (for dry runs);
    `first` are ids of jobs holding reservations, which lead their level in that order."""
    promoting = weights.promote_after_s > 0 and weights.promote_levels > 0
    held = [job for job in map(line.get, first) if job is not None]
    if (
        not (weights.age_weight or weights.fairshare_weight or weights.short_weight or promoting or held)
        and extra is None
    ):
        yield from line.fifo()  # no tie-breakers: the plain order is the order
        return
    held_ids = {job.id for job in held}
    sources: list[tuple[tuple[int, str, int], Iterator[Waiting]]] = [
        (key, iter(jobs) if not held_ids else (j for j in jobs if j.id not in held_ids))
        for key, jobs in line.groups()
    ]
    if extra is not None:
        sources.append((_group_of(extra), iter([extra])))
    if len(sources) == 1 and not promoting and not held:  # one group is already in order: no keys to compute
        yield from sources[0][1]
        return
    age_w = weights.age_weight
    # Aging is relative to the longest wait in line: each group's head is its oldest job.
    oldest = min((j.submitted_at for j in _heads(line, extra)), default=now) if age_w else now
    longest = now - oldest

    def level_of(job: Waiting, level: int) -> int:
        # Older jobs of a group are promoted at least as far as newer ones: groups stay sorted.
        if not promoting:
            return level
        waited = max(0.0, now - job.submitted_at)
        return level + min(weights.promote_levels, int(waited // weights.promote_after_s))

    def age(job: Waiting) -> float:
        waited = now - job.submitted_at
        return age_w * waited / longest if age_w and waited > 0 and longest > 0 else 0.0

    heap: list[tuple[int, float, int, int, Waiting, Iterator[Waiting], float, int]] = []
    for n, ((level, user, length), it) in enumerate(sources):
        job = next(it, None)
        if job is None:
            continue
        # The part of the score every job of the group shares, computed once.
        static = weights.fairshare_weight * fairshare.get(user, 1.0) if weights.fairshare_weight else 0.0
        static += weights.short_weight * (1.0 - length / MAX_LENGTH_CLASS)
        heap.append((-level_of(job, level), -(static + age(job)), job.seq, n, job, it, static, level))
    # Jobs holding reservations: one source each, ahead of every score of their level, in
    # reservation order.
    for rank, job in enumerate(held):
        heap.append(
            (
                -level_of(job, int(job.priority)),
                rank - _HELD,
                job.seq,
                len(sources) + rank,
                job,
                iter(()),
                0.0,
                0,
            )
        )
    heapq.heapify(heap)
    while heap:
        top = heap[0]
        yield top[4]
        nxt = next(top[5], None)
        if nxt is None:
            heapq.heappop(heap)
        else:
            static, level = top[6], top[7]
            heapq.heapreplace(
                heap,
                (-level_of(nxt, level), -(static + age(nxt)), nxt.seq, top[3], nxt, top[5], static, level),
            )


_HELD = 1e12  # above any score: weights are small numbers


def _heads(line: Line, extra: Waiting | None) -> Iterator[Waiting]:
    for _, jobs in line.groups():
        yield next(iter(jobs))
    if extra is not None:
        yield extra


MAX_LENGTH_CLASS = 16  # time limits up to 2^16 minutes (45 days) get distinct classes


def length_class(limit: float) -> int:
    """0 for an hour or less, then one class per doubling of the time limit."""
    return max(0, min(MAX_LENGTH_CLASS, math.ceil(math.log2(max(limit, 60.0) / 60.0))))


def _group_of(job: Waiting) -> tuple[int, str, int]:
    return (int(job.priority), job.user, length_class(job.time_limit))
