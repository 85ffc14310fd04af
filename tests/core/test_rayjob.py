"""Where Ray jobs' private clusters listen (core/rayjob.py): no two jobs on a node, and
no two nodes on one address, ever share a port."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.core.rayjob import PortsExhausted, block, node_range, nodes

PER_GPU = 400


@given(st.sets(st.integers(0, 7), min_size=2, max_size=8), st.data())
def test_jobs_holding_different_gpus_of_a_node_get_disjoint_blocks(gpus, data):
    """Split a node's GPUs between two jobs any way: their port blocks never overlap."""
    shuffled = data.draw(st.permutations(sorted(gpus)))
    cut = data.draw(st.integers(1, len(shuffled) - 1))
    first, second = sorted(shuffled[:cut]), sorted(shuffled[cut:])
    a, b = (block((20000, 23199), g, PER_GPU) for g in (first, second))
    assert abs(a - b) >= PER_GPU


def test_nodes_on_one_address_get_consecutive_ranges_and_a_named_range_wins():
    ips = {"gmi-node-1": "10.0.0.1", "gmi-node-2": "10.0.0.1", "gmi-node-3": "10.0.0.3"}
    assert node_range("gmi-node-1", ips, "20000-23199", {}) == (20000, 23199)
    assert node_range("gmi-node-2", ips, "20000-23199", {}) == (23200, 26399)
    assert node_range("gmi-node-3", ips, "20000-23199", {}) == (20000, 23199)
    assert node_range("gmi-node-2", ips, "20000-23199", {"gmi-node-2": "40000-43199"}) == (40000, 43199)


def test_a_gpu_past_the_range_is_refused_naming_the_setting():
    with pytest.raises(PortsExhausted, match="ray_job_ports"):
        block((20000, 23199), [8], PER_GPU)


def test_a_gang_has_one_head_and_one_token_and_each_rank_its_block():
    hellos = [
        {"node": "gmi-node-1", "gpus": [0, 1, 2, 3, 4, 5, 6, 7], "ip": "10.0.0.1"},
        {"node": "gmi-node-2", "gpus": [2, 3], "ip": "10.0.0.1"},
    ]
    plan = {
        "python": "/opt/gpuq/.venv/bin/python",
        "ports": "20000-23199",
        "ports_by_node": {},
        "per_gpu": PER_GPU,
    }
    ranks = nodes(
        plan,
        hellos,
        {"gmi-node-1": "10.0.0.1", "gmi-node-2": "10.0.0.1"},
        {"gmi-node-1": 8, "gmi-node-2": 8},
        "t0k",
    )
    assert [r["role"] for r in ranks] == ["head", "worker"]
    assert {r["address"] for r in ranks} == {"10.0.0.1:20000"}
    assert [r["ports"] for r in ranks] == [20000, 23200 + 2 * PER_GPU]
    assert {r["token"] for r in ranks} == {"t0k"} and [r["gpus"] for r in ranks] == [8, 2]
