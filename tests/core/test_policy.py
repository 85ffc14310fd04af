"""One scheduling cycle: who starts where, who waits and why, who is preempted."""

from dataclasses import replace

import pytest

from orchestrator.core.decisions import Reason
from orchestrator.core.ordering import OrderWeights
from orchestrator.core.policy import PolicyConfig, dry_run, plan, weights_now
from orchestrator.core.priority import Priority
from tests.support import SEED_T0, Lab

HOUR = 3600.0


def seed_lab(cfg=None) -> Lab:
    lab = Lab(cfg=cfg)
    for t, (run_id, user, gpus, prio) in enumerate(SEED_T0):
        lab.submit(run_id, user, gpus, prio, now=float(t), time_limit=4 * 3600)
    return lab


def test_seed_t0_to_t1_placement():
    lab = seed_lab()
    decided = lab.cycle(now=10)
    alloc = {lab.queue.get(s.job_id).label: s.allocation for s in decided.starts}
    assert alloc["job-101"] == {"gmi-node-1": list(range(8))}
    assert alloc["job-102"] == {"gmi-node-2": [0, 1, 2, 3]}
    assert alloc["job-103"] == {"gmi-node-2": [4, 5]}
    # The seed's picture stops at three jobs, but leaving a GPU idle while a 1-GPU job waits is wrong.
    assert alloc["job-104"] == {"gmi-node-2": [6]}
    waiting = lab.reason(decided, "job-105")
    assert waiting.code is Reason.RESOURCES
    assert waiting.message.startswith("needs 2 GPUs on one node; only 1 free")
    assert "when job-101 ends" in waiting.message or "when job-102" in waiting.message
    assert waiting.estimated_start == 10 + 4 * 3600


def test_reserved_reason_when_free_gpus_are_kept_for_a_big_job():
    lab = Lab()
    lab.submit("small-long", gpus=4, now=0, time_limit=10 * HOUR)
    lab.cycle(now=0)
    lab.submit("big", gpus=16, now=1, time_limit=HOUR)
    decided = lab.cycle(now=1)
    r = lab.reason(decided, "big")
    assert r.code is Reason.RESERVED
    assert r.message.startswith("12 free GPUs on gmi-node-1 and gmi-node-2 are kept for it; starts by")
    assert "when small-long ends" in r.message
    assert r.estimated_start == 10 * HOUR


def test_backfill_starts_a_job_that_ends_before_the_reservation():
    lab = Lab()
    lab.submit("long", gpus=4, now=0, time_limit=10 * HOUR)
    lab.cycle(now=0)
    lab.submit("big", gpus=16, now=1, time_limit=HOUR)
    lab.submit("short", gpus=2, now=2, time_limit=HOUR)
    lab.submit("too-long", gpus=2, now=3, time_limit=20 * HOUR)
    decided = lab.cycle(now=5)
    started = [lab.queue.get(s.job_id).label for s in decided.starts]
    assert started == ["short"]
    assert decided.starts[0].backfilled
    blocked = lab.reason(decided, "too-long")
    assert blocked.code is Reason.PRIORITY
    assert blocked.message == "starting now would delay the reservation of big"


def test_depth_zero_is_the_seeds_skip_and_lets_small_jobs_pass_a_big_one():
    lab = Lab(cfg=PolicyConfig.preset("greedy"))
    lab.submit("long", gpus=4, now=0, time_limit=10 * HOUR)
    lab.cycle(now=0)
    lab.submit("big", gpus=16, now=1, time_limit=HOUR)
    lab.submit("too-long", gpus=2, now=3, time_limit=20 * HOUR)
    decided = lab.cycle(now=5)
    assert [lab.queue.get(s.job_id).label for s in decided.starts] == ["too-long"]
    assert decided.reservations == {}


def test_fifo_blocks_everything_behind_the_first_job_that_does_not_fit():
    lab = Lab(cfg=PolicyConfig.preset("fifo"))
    lab.submit("long", gpus=4, now=0, time_limit=10 * HOUR)
    lab.cycle(now=0)
    lab.submit("big", gpus=16, now=1, time_limit=HOUR)
    lab.submit("tiny", gpus=1, now=2, time_limit=60)
    decided = lab.cycle(now=5)
    assert decided.starts == []
    assert lab.reason(decided, "tiny").message == "behind big (no backfill)"


def test_conservative_depth_protects_the_second_waiting_job_too():
    def run(depth):
        lab = Lab(cfg=PolicyConfig.preset("default", reservation_depth=depth))
        lab.submit("a", gpus=8, now=0, time_limit=10 * HOUR)
        lab.submit("b", gpus=6, now=0, time_limit=2 * HOUR)
        lab.cycle(now=0)  # a fills node-1, b takes 6 of node-2
        lab.submit("big8", gpus=8, now=1, time_limit=HOUR)  # waits for b: node-2 at 2h
        lab.submit("next8", gpus=8, now=2, time_limit=HOUR)  # then node-2 again at 3h (or node-1 at 10h)
        lab.submit("filler", gpus=2, now=3, time_limit=5 * HOUR)  # fits now on node-2 but runs to 5h
        return lab, lab.cycle(now=4)

    lab1, easy = run(1)
    assert [lab1.queue.get(s.job_id).label for s in easy.starts] == []  # would delay big8
    lab2, conservative = run(2)
    assert {lab2.queue.get(j).label for j in conservative.reservations} == {"big8", "next8"}


def test_user_cap_makes_a_job_wait_with_a_reason():
    lab = Lab(cfg=PolicyConfig(user_gpu_caps={"alice": 8}))
    lab.submit("a1", user="alice", gpus=8, now=0)
    lab.submit("a2", user="alice", gpus=1, now=1)
    lab.submit("b1", user="bob", gpus=1, now=2)
    decided = lab.cycle(now=3)
    assert sorted(lab.queue.get(s.job_id).label for s in decided.starts) == ["a1", "b1"]
    r = lab.reason(decided, "a2")
    assert (r.code, r.message) == (Reason.USER_CAP, "alice holds 8 of 8 GPUs")


def test_unplaceable_when_drained_gpus_shrink_the_cluster():
    from orchestrator.core.inventory import SlotState

    lab = Lab()
    lab.inventory.set_out_of_service("gmi-node-2", 0, SlotState.DRAINED)
    lab.submit("all", gpus=16, now=0)
    decided = lab.cycle(now=1)
    r = lab.reason(decided, "all")
    assert (r.code, r.message) == (Reason.UNPLACEABLE, "needs 16 GPUs; only 15 in service")


def test_held_jobs_are_not_planned():
    lab = Lab()
    job = lab.submit("h", gpus=1, now=0)
    lab.queue.hold(job.id, 1)
    decided = lab.cycle(now=2)
    assert decided.starts == [] and job.id not in decided.pending


def test_critical_preempts_lowest_priority_most_recent_first():
    lab = Lab()
    lab.submit("normal-old", gpus=4, priority=2, now=0)
    lab.submit("low-old", gpus=4, priority=1, now=0)
    lab.cycle(now=10)
    lab.submit("high", gpus=4, priority=3, now=20)
    lab.submit("low-new", gpus=4, priority=1, now=20)
    lab.cycle(now=30)  # every GPU busy now
    lab.submit("urgent", gpus=4, priority=4, now=40)
    decided = lab.cycle(now=50, apply=False)
    assert [lab.queue.get(p.job_id).label for p in decided.preemptions] == ["low-new"]
    r = lab.reason(decided, "urgent")
    assert r.code is Reason.PREEMPTING and r.message == "stopping low-new to free 4 GPUs"


def test_preemption_never_touches_high_or_non_preemptible_jobs():
    lab = Lab()
    lab.submit("high", gpus=8, priority=3, now=0)
    lab.submit("pinned", gpus=8, priority=1, now=0, preemptible=False)
    lab.cycle(now=1)
    lab.submit("urgent", gpus=8, priority=4, now=2)
    decided = lab.cycle(now=3, apply=False)
    assert decided.preemptions == []
    assert lab.reason(decided, "urgent").code is Reason.RESOURCES


def test_preempted_job_requeues_in_place_and_the_preemptor_starts_next_cycle():
    lab = Lab()
    victim = lab.submit("victim", gpus=16, priority=1, now=0, max_retries=0)
    lab.cycle(now=1)
    urgent = lab.submit("urgent", gpus=8, priority=4, now=2)
    lab.cycle(now=3)
    assert victim.state.value == "queued" and victim.retries == 0
    assert lab.queue.stats.jobs_preempted == 1
    decided = lab.cycle(now=4)
    assert [s.job_id for s in decided.starts] == [urgent.id]


def test_only_configured_pairs_preempt():
    cfg = PolicyConfig(may_preempt={3: frozenset({1})})
    lab = Lab(cfg=cfg)
    lab.submit("normal", gpus=16, priority=2, now=0)
    lab.cycle(now=1)
    lab.submit("high", gpus=1, priority=3, now=2)
    assert lab.cycle(now=3, apply=False).preemptions == []


def test_fair_share_puts_the_light_user_first_within_a_level():
    lab = Lab(cfg=PolicyConfig(weights=OrderWeights(fairshare_weight=1.0)))
    lab.usage = {"heavy": 1000.0 * HOUR, "light": 1.0 * HOUR}
    lab.submit("h", user="heavy", gpus=16, now=0)
    lab.submit("l", user="light", gpus=16, now=1)
    decided = lab.cycle(now=2, apply=False)
    assert [lab.queue.get(s.job_id).label for s in decided.starts] == ["l"]


def test_aging_and_fair_share_never_lift_a_job_above_the_next_level():
    lab = Lab(cfg=PolicyConfig(weights=OrderWeights(age_weight=10.0, fairshare_weight=10.0)))
    lab.usage = {"heavy": 1000.0 * HOUR}
    lab.submit("old-light-normal", user="light", gpus=16, priority=2, now=0)
    lab.submit("new-heavy-high", user="heavy", gpus=16, priority=3, now=30 * 86400)
    decided = lab.cycle(now=30 * 86400 + 1, apply=False)
    assert decided.order[0] == lab.by_label("new-heavy-high").id


@pytest.mark.parametrize(
    ("week_gpus", "first"),
    [
        (1, "hour"),  # 10.6 h of work per GPU waits: under backlog_aging_s, short-first
        (16, "week"),  # a week per GPU: aging x4, and the job that waited longer goes first
    ],
)
def test_short_limits_go_first_within_a_level_unless_a_backlog_waits(week_gpus, first):
    lab = Lab()
    lab.submit("blocker", gpus=16, now=0, time_limit=HOUR)
    lab.cycle(now=0)
    lab.submit("week", gpus=week_gpus, now=1, time_limit=7 * 86400)
    lab.submit("hour", gpus=1, now=2, time_limit=HOUR)
    decided = lab.cycle(now=3, apply=False)
    assert lab.queue.get(decided.order[0]).label == first
    without = replace(lab.cfg, backlog_aging_s=0.0)  # the same line, aging left as configured
    assert lab.queue.get(plan(lab.snapshot(3), 3, without).order[0]).label == "hour"


def test_the_backlog_raises_aging_between_one_and_its_most():
    lab = Lab()
    cfg = lab.cfg
    base = cfg.weights.age_weight
    assert weights_now(lab.snapshot(0), cfg).age_weight == base  # nothing waits
    lab.submit("day", gpus=16, now=0, time_limit=24 * HOUR)  # 24 h per GPU: twice the 12 h
    assert weights_now(lab.snapshot(0), cfg).age_weight == pytest.approx(2 * base)
    for i in range(10):
        lab.submit(f"more-{i}", gpus=16, now=0, time_limit=24 * HOUR)
    assert weights_now(lab.snapshot(0), cfg).age_weight == pytest.approx(cfg.backlog_aging_max * base)
    assert lab.snapshot(0).line.work == pytest.approx(11 * 16 * 24 * HOUR)


def test_first_hundred_waiting_jobs_get_an_estimated_start():
    lab = Lab()
    for i in range(130):
        lab.submit(f"j{i}", gpus=4, now=i, time_limit=HOUR)
    decided = lab.cycle(now=200)
    waiting = [j for j in decided.order if j not in {s.job_id for s in decided.starts}]
    estimates = [decided.pending[j].estimated_start for j in waiting[:96]]
    assert all(e is not None for e in estimates)
    assert estimates == sorted(estimates)  # later in line never starts sooner (equal shapes)
    assert estimates[0] == 200 + HOUR


def test_dry_run_answers_where_and_when_without_changing_anything():
    lab = Lab()
    lab.submit("busy", gpus=12, now=0, time_limit=2 * HOUR)
    lab.cycle(now=0)
    before = (lab.queue.summary(), lab.inventory.free())

    class Probe:
        id, label, user, gpus, priority, seq = "probe", "probe", "bob", 4, 2, 10**9
        submitted_at, time_limit, preemptible, multi_node = 5.0, HOUR, True, False

    fits = dry_run(lab.snapshot(5), 5, lab.cfg, Probe())
    assert fits.allocation == {"gmi-node-2": [4, 5, 6, 7]}
    Probe.gpus = 8
    waits = dry_run(lab.snapshot(5), 5, lab.cfg, Probe())
    assert waits.code is Reason.RESOURCES and waits.estimated_start == 2 * HOUR
    assert (lab.queue.summary(), lab.inventory.free()) == before


def test_priority_levels_are_the_first_order_key():
    lab = Lab()
    for run_id, user, gpus, prio in reversed(SEED_T0):
        lab.submit(run_id, user, gpus, prio, now=0)
    decided = plan(lab.snapshot(1), 1, lab.cfg)
    prios = [int(lab.queue.get(j).priority) for j in decided.order]
    assert prios == sorted(prios, reverse=True)
    assert Priority(prios[0]) is Priority.CRITICAL


def test_promotion_across_levels_is_opt_in_and_bounded():
    def first_of(weights):
        lab = Lab(cfg=PolicyConfig(weights=weights))
        lab.submit("old-low", gpus=16, priority=1, now=0)
        lab.submit("old-normal", gpus=16, priority=2, now=0)
        lab.submit("new-high", gpus=16, priority=3, now=10 * 86400)
        return [lab.queue.get(j).label for j in lab.cycle(now=10 * 86400 + 1, apply=False).order]

    assert first_of(OrderWeights()) == ["new-high", "old-normal", "old-low"]
    # One level per 4 days, at most one: old-normal reaches HIGH (and was there first), old-low only NORMAL.
    assert first_of(OrderWeights(promote_after_s=4 * 86400, promote_levels=1)) == [
        "old-normal",
        "new-high",
        "old-low",
    ]


def _moving_reservation_lab(cfg):
    """A 16-GPU job reserved behind a running job, then a shorter 16-GPU job that the
    order prefers once both have waited a while."""
    lab = Lab(cfg=cfg)
    lab.submit("running", gpus=4, now=0, time_limit=10 * HOUR)
    lab.cycle(now=0)
    lab.submit("big-day", gpus=16, now=1, time_limit=24 * HOUR)
    assert set(lab.cycle(now=2).reservations) == {lab.by_label("big-day").id}
    lab.submit("big-hour", gpus=16, now=3, time_limit=HOUR)
    return lab


def test_a_reservation_stays_with_its_job_when_a_shorter_job_would_outrank_it():
    lab = _moving_reservation_lab(PolicyConfig())
    decided = lab.cycle(now=5 * HOUR)
    assert decided.order[0] == lab.by_label("big-day").id  # the order alone would put big-hour first
    assert set(decided.reservations) == {lab.by_label("big-day").id}
    assert lab.reason(decided, "big-day").estimated_start == 10 * HOUR


def test_without_sticky_reservations_the_reservation_moves_to_the_shorter_job():
    lab = _moving_reservation_lab(PolicyConfig(sticky_reservations=False))
    decided = lab.cycle(now=5 * HOUR)
    assert set(decided.reservations) == {lab.by_label("big-hour").id}


def test_a_held_reservation_never_goes_before_a_higher_priority_level():
    lab = _moving_reservation_lab(PolicyConfig())
    lab.submit("urgent", gpus=16, priority=3, now=4)
    decided = lab.cycle(now=5)
    assert decided.order[:2] == [lab.by_label("urgent").id, lab.by_label("big-day").id]
    assert set(decided.reservations) == {lab.by_label("urgent").id}


def test_a_reservation_is_dropped_once_its_job_leaves_the_line():
    lab = _moving_reservation_lab(PolicyConfig())
    lab.queue.cancel(lab.by_label("big-day").id, 4)
    decided = lab.cycle(now=5)
    assert set(decided.reservations) == {lab.by_label("big-hour").id}
