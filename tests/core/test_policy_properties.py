"""Properties of plan() on random clusters, lines and running jobs.

- never over-allocates, never places on a GPU that is out of service;
- the plan never books a node beyond its size at any instant (running jobs to their
  time limits, starts, reservations);
- a reservation is exactly what the jobs ahead of it leave: jobs behind it (the
  backfill candidates) never move it — checked by re-planning the line cut just
  after the reserved job;
- preemption frees enough for the preemptor and no victim can be spared;
- a replay is deterministic.
"""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.core.decisions import Snapshot
from orchestrator.core.inventory import Inventory, SlotState
from orchestrator.core.ordering import Line, OrderWeights
from orchestrator.core.ordering import WaitingJob as W
from orchestrator.core.placement import choose_nodes
from orchestrator.core.policy import PolicyConfig, plan
from orchestrator.core.preemption import Running, victims_for
from orchestrator.sim.simulator import simulate
from orchestrator.sim.traces import TraceJob
from tests.support import examples

SETTINGS = settings(max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def scenarios(draw):
    n_nodes = draw(st.integers(1, 3))
    sizes = {f"n{i}": draw(st.integers(1, 8)) for i in range(n_nodes)}
    inv = Inventory.of(sizes)
    for node, size in sizes.items():
        for i in range(size):
            if draw(st.integers(0, 9)) == 0:
                inv.set_out_of_service(
                    node, i, draw(st.sampled_from([SlotState.UNHEALTHY, SlotState.DRAINED]))
                )
    now = 1000.0
    running = []
    for k in range(draw(st.integers(0, 6))):
        free = inv.free()
        node = draw(st.sampled_from(sorted(sizes)))
        if not free[node]:
            continue
        take = free[node][: draw(st.integers(1, len(free[node])))]
        inv.allocate(f"r{k}", {node: take})
        started = now - draw(st.integers(0, 500))
        running.append(
            Running(
                f"r{k}",
                f"r{k}",
                draw(st.sampled_from("ab")),
                draw(st.integers(1, 3)),
                {node: len(take)},
                started,
                float(draw(st.integers(1, 2000))),
                draw(st.booleans()),
            )
        )
    total = sum(sizes.values())
    waiting = [
        W(
            f"w{k}",
            f"w{k}",
            draw(st.sampled_from("abc")),
            draw(st.integers(1, total)),
            draw(st.integers(1, 4)),
            k,
            now - draw(st.integers(0, 1000)) + k * 1e-3,
            float(draw(st.integers(1, 3000))),
            True,
            draw(st.booleans()),
        )
        for k in range(draw(st.integers(0, 12)))
    ]
    depth = draw(st.integers(0, 3))
    return sizes, inv, running, waiting, now, depth


def snapshot(inv, running, waiting):
    line = Line()
    for w in waiting:
        line.add(w)
    return Snapshot(sizes=inv.usable(), free=inv.free(), line=line, running=running)


def config(depth):
    # No fair-share here: its factors depend on who is in line, which the prefix check changes.
    return PolicyConfig(reservation_depth=depth, weights=OrderWeights(age_weight=1.0, short_weight=0.25))


@SETTINGS
@given(scenarios())
def test_starts_never_over_allocate_nor_use_out_of_service_gpus(sc):
    sizes, inv, running, waiting, now, depth = sc
    decided = plan(snapshot(inv, running, waiting), now, config(depth))
    for s in decided.starts:
        inv.allocate(s.job_id, s.allocation)  # raises on a held, unhealthy or drained GPU
    inv.check()


@SETTINGS
@given(scenarios())
def test_no_node_is_booked_beyond_its_size_at_any_instant(sc):
    sizes, inv, running, waiting, now, depth = sc
    cfg = PolicyConfig(reservation_depth=depth, may_preempt={})  # preemption is checked on its own below
    decided = plan(snapshot(inv, running, waiting), now, cfg)
    by_id = {w.id: w for w in waiting}
    bookings = [(node, now, r.expected_end, n) for r in running for node, n in r.counts.items()]
    bookings += [
        (node, now, now + by_id[s.job_id].time_limit, len(g))
        for s in decided.starts
        for node, g in s.allocation.items()
    ]
    bookings += [
        (node, res.start_at, res.start_at + by_id[res.job_id].time_limit, n)
        for res in decided.reservations.values()
        for node, n in res.counts.items()
    ]
    usable = inv.usable()
    for node, start, _, _ in bookings:
        for t in {start, now} | {b[1] for b in bookings if b[0] == node}:
            # A job past its time limit is about to be stopped: the plan counts its GPUs from now.
            used = sum(n for nd, s, e, n in bookings if nd == node and s <= t < e)
            assert used <= usable[node], f"{node} booked {used} of {usable[node]} at {t}"


@SETTINGS
@given(scenarios())
def test_jobs_behind_a_reservation_never_move_it(sc):
    sizes, inv, running, waiting, now, depth = sc
    # No aging here: aging is relative to the longest wait in line, so cutting the line can
    # change the order of the jobs ahead (tests/core/test_ordering.py covers the order).
    # This is about the walk: given the order, jobs behind a reservation never move it.
    cfg = PolicyConfig(reservation_depth=depth, may_preempt={}, weights=OrderWeights(short_weight=1.0))
    full = plan(snapshot(inv, running, waiting), now, cfg)
    for job_id, res in full.reservations.items():
        cut = full.order.index(job_id) + 1
        ahead = [w for w in waiting if w.id in set(full.order[:cut])]
        alone = plan(snapshot(inv, running, ahead), now, cfg)
        assert alone.reservations[job_id] == res


@SETTINGS
@given(
    sizes=st.dictionaries(st.sampled_from(["a", "b", "c"]), st.integers(1, 8), min_size=1),
    data=st.data(),
)
def test_preemption_frees_enough_and_no_more(sizes, data):
    avail = {n: data.draw(st.integers(0, s)) for n, s in sizes.items()}
    running = []
    for k in range(data.draw(st.integers(0, 6))):
        node = data.draw(st.sampled_from(sorted(sizes)))
        room = sizes[node] - avail[node] - sum(r.counts.get(node, 0) for r in running)
        if room <= 0:
            continue
        running.append(
            Running(
                f"r{k}",
                f"r{k}",
                "u",
                data.draw(st.integers(1, 4)),
                {node: data.draw(st.integers(1, room))},
                float(data.draw(st.integers(0, 100))),
                1000.0,
                data.draw(st.booleans()),
            )
        )
    gpus = data.draw(st.integers(1, sum(sizes.values())))
    multi = data.draw(st.booleans())
    may = {4: frozenset({1, 2})}
    found = victims_for(gpus, multi, 4, avail, sizes, running, may)

    def freed(victims):
        out = dict(avail)
        for v in victims:
            for n, c in v.counts.items():
                out[n] += c
        return out

    allowed = [r for r in running if r.preemptible and r.priority in may[4]]
    if found is None:
        assert choose_nodes(freed(allowed), sizes, gpus, multi) is None
        return
    victims, counts = found
    assert all(v in allowed for v in victims)
    assert choose_nodes(freed(victims), sizes, gpus, multi) is not None
    for v in victims:
        assert choose_nodes(freed([x for x in victims if x is not v]), sizes, gpus, multi) is None


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 5000),
            st.integers(1, 4000),
            st.sampled_from([1, 1, 2, 4, 8, 16]),
            st.sampled_from("xyz"),
            st.integers(1, 4),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_replays_are_deterministic(rows):
    trace = sorted((TraceJob(float(s), float(d), g, u, p) for s, d, g, u, p in rows), key=lambda j: j.submit)
    sizes = {"n1": 8, "n2": 8}
    a = simulate(trace, PolicyConfig(), sizes, limits="coarse")
    b = simulate(trace, PolicyConfig(), sizes, limits="coarse")
    assert a.summary() == b.summary() and a.waits == b.waits
    assert a.jobs + a.dropped == len(trace)
