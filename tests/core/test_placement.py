"""Where jobs go: best fit on one node, whole nodes first for big jobs."""

import pytest

from orchestrator.core.inventory import Inventory, SlotState
from orchestrator.core.placement import can_ever_fit, choose_nodes, pick_gpus

TWO = {"gmi-node-1": 8, "gmi-node-2": 8}


def test_one_node_job_goes_to_the_fullest_node_that_holds_it():
    assert choose_nodes({"gmi-node-1": 6, "gmi-node-2": 3}, TWO, 2) == {"gmi-node-2": 2}
    assert choose_nodes({"gmi-node-1": 6, "gmi-node-2": 3}, TWO, 4) == {"gmi-node-1": 4}


def test_ties_go_to_the_first_node_in_cluster_order():
    assert choose_nodes({"gmi-node-1": 8, "gmi-node-2": 8}, TWO, 8) == {"gmi-node-1": 8}


def test_one_node_job_does_not_span_nodes_unless_allowed():
    avail = {"gmi-node-1": 4, "gmi-node-2": 4}
    assert choose_nodes(avail, TWO, 8) is None
    # The seed's 8-GPU job on node-1:[4-7] + node-2:[0-3].
    assert choose_nodes(avail, TWO, 8, allow_split=True) == {"gmi-node-1": 4, "gmi-node-2": 4}


def test_job_larger_than_a_node_takes_whole_nodes_then_the_remainder_best_fit():
    three = {"a": 8, "b": 8, "c": 8}
    assert choose_nodes({"a": 8, "b": 8, "c": 5}, three, 12) == {"a": 8, "c": 4}
    assert choose_nodes({"a": 8, "b": 8, "c": 8}, three, 16) == {"a": 8, "b": 8}
    assert choose_nodes({"a": 7, "b": 8, "c": 8}, three, 16) == {"b": 8, "c": 8}


def test_sixteen_gpus_need_both_nodes_entirely_free():
    assert choose_nodes({"gmi-node-1": 8, "gmi-node-2": 8}, TWO, 16) == {"gmi-node-1": 8, "gmi-node-2": 8}
    assert choose_nodes({"gmi-node-1": 8, "gmi-node-2": 7}, TWO, 16) is None


def test_lowest_free_indices_are_picked():
    assert pick_gpus({"gmi-node-2": [7, 2, 5, 3]}, {"gmi-node-2": 3}) == {"gmi-node-2": [2, 3, 5]}


def test_can_ever_fit_knows_the_largest_placement():
    assert can_ever_fit(TWO, 16) and not can_ever_fit(TWO, 17)
    assert not can_ever_fit({"a": 8, "b": 7}, 16)


def test_unhealthy_and_drained_gpus_are_never_offered():
    inv = Inventory.of(TWO)
    inv.set_out_of_service("gmi-node-1", 0, SlotState.UNHEALTHY)
    inv.set_out_of_service("gmi-node-1", 1, SlotState.DRAINED)
    free = inv.free()
    assert 0 not in free["gmi-node-1"] and 1 not in free["gmi-node-1"]
    counts = choose_nodes({n: len(g) for n, g in free.items()}, inv.usable(), 6)
    assert pick_gpus(free, counts) == {"gmi-node-1": [2, 3, 4, 5, 6, 7]}


@pytest.mark.parametrize("gpus", [0, -1])
def test_nonsense_sizes_are_not_placed(gpus):
    assert choose_nodes({"gmi-node-1": 8}, {"gmi-node-1": 8}, gpus) is None
