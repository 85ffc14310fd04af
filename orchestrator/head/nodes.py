"""The GPU nodes gpuq schedules on, as Ray reports them.

A node is started with the label gmi/node=<name> and the custom resource {"<name>": 1}
(`gpuq up`, cluster.yaml, tests/raycluster.py): the label names it, the resource lets a
bundle be pinned to it.
"""

from __future__ import annotations

from dataclasses import dataclass

import ray

NODE_LABEL = "gmi/node"  # nodes are started with --labels gmi/node=<name> and --resources '{"<name>": 1}'
NODE_SHARE = 0.001  # of the per-node resource: pins a bundle without limiting how many fit


@dataclass(frozen=True)
class NodeInfo:
    name: str
    node_id: str
    gpus: int
    ip: str


def discover_nodes() -> dict[str, NodeInfo]:
    """GPU nodes that gpuq schedules on: alive, labelled with a node name that is also a
    custom resource of the node (so bundles can be pinned to it)."""
    found: dict[str, NodeInfo] = {}
    for n in ray.nodes():
        if not n.get("Alive"):
            continue
        name = (n.get("Labels") or {}).get(NODE_LABEL)
        resources = n.get("Resources") or {}
        gpus = int(resources.get("GPU", 0))
        if name and gpus > 0 and name in resources:
            found[name] = NodeInfo(name, n["NodeID"], gpus, n.get("NodeManagerAddress", ""))
    return dict(sorted(found.items()))
