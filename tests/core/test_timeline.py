"""Availability over time, from time limits."""

from orchestrator.core.timeline import INF, NodeTimeline, Timeline


def test_running_jobs_give_gpus_back_at_their_expected_end():
    tl = NodeTimeline(now=0, free_now=2, releases=[(100, 4), (50, 2)])
    assert [tl.at(t) for t in (0, 49, 50, 99, 100, 10_000)] == [2, 2, 4, 4, 8, 8]


def test_min_over_a_window_sees_dips_from_reservations():
    tl = NodeTimeline(now=0, free_now=8, releases=[])
    tl.take(100, 200, 6)
    assert tl.min_avail(0, 100) == 8
    assert tl.min_avail(0, 101) == 2
    assert tl.min_avail(200, 300) == 8


def test_earliest_start_waits_for_enough_gpus_for_the_whole_duration():
    tl = NodeTimeline(now=0, free_now=2, releases=[(100, 6)])
    tl.take(300, 400, 8)  # a reservation takes the whole node later
    assert tl.earliest(2, 300, 0) == 0  # fits in the 2 free GPUs until 300
    assert tl.earliest(2, 301, 0) == 400  # would overlap the reservation
    assert tl.earliest(4, 100, 0) == 100
    assert tl.earliest(4, 250, 0) == 400
    assert tl.earliest(9, 10, 0) == INF


def test_cluster_timeline_places_a_reservation_best_fit():
    tl = Timeline.build(0, {"a": 8, "b": 8}, {"a": 0, "b": 0}, [("a", 100, 8), ("b", 100, 3), ("b", 200, 5)])
    assert tl.earliest(0, 2, 50) == (100, {"b": 2})  # b has 3 free at 100, a has 8: best fit b
    assert tl.earliest(0, 16, 50) == (200, {"a": 8, "b": 8})
