"""Taking GPUs out of service and back: the fleet's bookkeeping, no Ray."""

import pytest

from orchestrator.core.errors import InvalidSpec
from orchestrator.core.fleet import Fleet
from orchestrator.core.health import HealthRules
from orchestrator.core.inventory import Inventory, SlotState


@pytest.fixture
def fleet() -> Fleet:
    return Fleet(Inventory.of({"gmi-node-1": 8, "gmi-node-2": 8}), HealthRules())


def test_an_unhealthy_gpu_under_a_job_names_the_job_and_stays_out_after_release(fleet):
    fleet.inventory.allocate("job-a", {"gmi-node-2": [2, 3]})
    holders = fleet.take_out("gmi-node-2", [3], "unhealthy", "XID 79", "gpuq", now=1.0)
    assert holders == {"job-a": [3]}
    fleet.inventory.give_back("job-a")
    assert fleet.inventory.free()["gmi-node-2"] == [0, 1, 2, 4, 5, 6, 7]
    assert fleet.quarantined() == {"gmi-node-2": {3}}


def test_a_drained_node_takes_no_new_allocation_and_undrain_brings_it_back(fleet):
    fleet.take_out("gmi-node-1", None, "drained", "firmware", "root", now=1.0)
    assert fleet.inventory.free()["gmi-node-1"] == []
    assert fleet.put_back("gmi-node-1", None, "root", now=2.0) == list(range(8))
    assert fleet.inventory.free()["gmi-node-1"] == list(range(8))
    assert [e["action"] for e in fleet.events] == ["drained"] * 8 + ["returned"] * 8


def test_draining_an_unhealthy_gpu_keeps_it_unhealthy(fleet):
    fleet.take_out("gmi-node-2", [3], "unhealthy", "XID 79", "gpuq", now=1.0)
    fleet.take_out("gmi-node-2", [3], "drained", "swap it", "root", now=2.0)
    assert fleet.state_of("gmi-node-2", 3).state == "unhealthy"


def test_what_is_stored_comes_back_after_a_restart(fleet):
    fleet.take_out("gmi-node-2", [5], "unhealthy", "ECC", "gpuq", now=1.0)
    again = Fleet(Inventory.of({"gmi-node-1": 8, "gmi-node-2": 8}), HealthRules(), fleet.saved())
    assert again.state_of("gmi-node-2", 5).reason == "ECC"
    assert again.inventory.nodes["gmi-node-2"][5].state is SlotState.UNHEALTHY
    assert len(again.events) == 1


@pytest.mark.parametrize(
    ("node", "gpus", "field"),
    [
        ("gmi-node-9", None, "node"),
        ("gmi-node-1", [8], "gpus"),
        ("gmi-node-1", [], "gpus"),
        ("gmi-node-1", [True], "gpus"),
    ],
)
def test_bad_targets_name_the_field_and_change_nothing(fleet, node, gpus, field):
    with pytest.raises(InvalidSpec) as e:
        fleet.take_out(node, gpus, "drained", "x", "root", now=1.0)
    assert e.value.errors[0][0] == field
    assert not fleet.out and not fleet.events


# --- whole nodes: down and back --------------------------------------------------------


def test_a_lost_node_is_down_with_its_jobs_named_and_nothing_of_it_is_free(fleet):
    for node in ("gmi-node-1", "gmi-node-2"):
        fleet.ingest(node, None, now=0.0)  # both silence clocks run
    fleet.inventory.allocate("job-a", {"gmi-node-1": [0, 1], "gmi-node-2": [0]})
    fleet.take_out("gmi-node-1", [7], "drained", "fan", "root", now=1.0)
    assert fleet.node_lost("gmi-node-1", "raylet dead", now=2.0) == ["job-a"]
    assert fleet.node_lost("gmi-node-1", "again", now=3.0) == []  # once
    fleet.inventory.give_back("job-a")
    assert [s.shown for s in fleet.inventory.nodes["gmi-node-1"]] == ["down"] * 7 + ["drained"]
    assert fleet.inventory.free()["gmi-node-1"] == [] and fleet.quarantined() == {}
    assert [f.node for f in fleet.silence(now=1000.0)] == ["gmi-node-2"]  # down is not also unhealthy


def test_a_node_back_returns_its_down_gpus_but_not_an_admins_drain(fleet):
    fleet.take_out("gmi-node-1", [7], "drained", "fan", "root", now=1.0)
    fleet.node_lost("gmi-node-1", "raylet dead", now=2.0)
    assert fleet.node_back("gmi-node-1", now=5.0, return_to_service=True) == list(range(7))
    assert fleet.inventory.free()["gmi-node-1"] == list(range(7))
    assert fleet.state_of("gmi-node-1", 7).state == "drained"
    assert fleet.node_back("gmi-node-1", now=6.0, return_to_service=True) == []  # it was not down


def test_undraining_a_gpu_of_a_down_node_leaves_it_down(fleet):
    fleet.take_out("gmi-node-1", [7], "drained", "fan", "root", now=1.0)
    fleet.node_lost("gmi-node-1", "raylet dead", now=2.0)
    assert fleet.put_back("gmi-node-1", [7], "root", now=3.0) == []
    assert fleet.inventory.nodes["gmi-node-1"][7].shown == "down"


def test_a_down_node_is_stored_with_its_size_and_shown_down_after_a_restart(fleet):
    fleet.node_lost("gmi-node-2", "raylet dead", now=2.0)
    saved = fleet.saved()
    inv = Inventory.of({"gmi-node-1": 8, **saved["nodes"]})
    again = Fleet(inv, HealthRules(), saved)
    assert {s.shown for s in inv.nodes["gmi-node-2"]} == {"down"} and "gmi-node-2" in again.down


def test_a_node_that_went_down_while_it_was_asked_is_never_judged_silent(fleet):
    """A poll's late answer (None) for a node lost meanwhile must not start its silence:
    that marked a cut-off node's GPUs unhealthy for good (found on separate hosts)."""
    fleet.ingest("gmi-node-1", None, now=0.0)
    fleet.node_lost("gmi-node-1", "its lease was not renewed for 20 s", now=1.0, requeue_at=36.0)
    assert fleet.ingest("gmi-node-1", None, now=2.0) == []
    assert fleet.silence(now=1000.0) == []
    assert not fleet.out
