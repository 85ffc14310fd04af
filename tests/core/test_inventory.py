"""The GPU inventory: one job per GPU, all-or-nothing, never an out-of-service GPU."""

import pytest

from orchestrator.core.inventory import AllocationError, Inventory, SlotState


@pytest.fixture
def inv():
    return Inventory.of({"gmi-node-1": 8, "gmi-node-2": 8})


def test_slots_are_named_by_node_and_index(inv):
    assert inv.nodes["gmi-node-2"][3].name == "gmi-node-2:3"
    assert inv.total == 16 and inv.free_count() == 16


def test_allocate_and_release_round_trip(inv):
    inv.allocate("j1", {"gmi-node-1": [0, 1], "gmi-node-2": [5]})
    assert inv.holder("gmi-node-2", 5) == "j1" and inv.allocated_count() == 3
    assert inv.give_back("j1") == {"gmi-node-1": [0, 1], "gmi-node-2": [5]}
    assert inv.free_count() == 16
    inv.check()


def test_allocation_is_all_or_nothing(inv):
    inv.allocate("j1", {"gmi-node-1": [3]})
    with pytest.raises(AllocationError, match="gmi-node-1:3 is allocated .held by j1."):
        inv.allocate("j2", {"gmi-node-1": [2, 3, 4]})
    assert inv.holder("gmi-node-1", 2) is None and inv.holder("gmi-node-1", 4) is None
    assert inv.allocation_of("j2") is None
    inv.check()


def test_a_job_cannot_be_allocated_twice_or_outside_the_cluster(inv):
    inv.allocate("j1", {"gmi-node-1": [0]})
    with pytest.raises(AllocationError, match="already holds"):
        inv.allocate("j1", {"gmi-node-1": [1]})
    with pytest.raises(AllocationError, match="no GPU gmi-node-3:0"):
        inv.allocate("j2", {"gmi-node-3": [0]})
    with pytest.raises(AllocationError, match="listed twice"):
        inv.allocate("j3", {"gmi-node-2": [1, 1]})


def test_unhealthy_gpu_cannot_be_allocated(inv):
    inv.set_out_of_service("gmi-node-2", 3, SlotState.UNHEALTHY)
    with pytest.raises(AllocationError, match="gmi-node-2:3 is unhealthy"):
        inv.allocate("j1", {"gmi-node-2": [3]})
    assert inv.usable()["gmi-node-2"] == 7 and inv.unhealthy_count() == 1


def test_gpu_failing_under_a_job_names_the_job_and_stays_out_after_release(inv):
    inv.allocate("j1", {"gmi-node-2": [3, 4]})
    assert inv.set_out_of_service("gmi-node-2", 3, SlotState.UNHEALTHY) == "j1"
    inv.give_back("j1")
    assert inv.nodes["gmi-node-2"][3].state is SlotState.UNHEALTHY
    assert inv.nodes["gmi-node-2"][4].state is SlotState.FREE
    inv.return_to_service("gmi-node-2", 3)
    assert inv.free_count() == 16
    inv.check()


def test_release_of_a_job_without_gpus_is_an_error(inv):
    with pytest.raises(AllocationError, match="holds no GPUs"):
        inv.give_back("ghost")


def test_rebind_follows_what_ray_bound_and_moves_a_planned_neighbour(inv):
    inv.allocate("a", {"gmi-node-1": [0]})
    inv.allocate("b", {"gmi-node-1": [1]})
    # Ray committed b's placement group first and gave a GPU 1.
    assert inv.rebind("a", {"gmi-node-1": [1]}) == {"b": {"gmi-node-1": [0]}}
    assert inv.holder("gmi-node-1", 1) == "a" and inv.holder("gmi-node-1", 0) == "b"
    inv.check()


def test_rebind_onto_a_free_gpu_frees_the_planned_one(inv):
    inv.allocate("a", {"gmi-node-1": [0, 1]})
    assert inv.rebind("a", {"gmi-node-1": [1, 5]}) == {}
    assert inv.holder("gmi-node-1", 0) is None and inv.holder("gmi-node-1", 5) == "a"
    inv.check()


def test_rebind_refuses_another_shape_or_an_unhealthy_gpu(inv):
    inv.allocate("a", {"gmi-node-1": [0]})
    with pytest.raises(AllocationError, match="different shape"):
        inv.rebind("a", {"gmi-node-2": [0]})
    inv.set_out_of_service("gmi-node-1", 3, SlotState.UNHEALTHY)
    with pytest.raises(AllocationError, match="unhealthy"):
        inv.rebind("a", {"gmi-node-1": [3]})
