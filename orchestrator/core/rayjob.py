"""Where a Ray job's private cluster listens: the port block of each of its nodes.

A Ray node needs a handful of fixed ports (GCS, raylet, object manager, agents) and
one per worker process. Each gpuq node has a range for Ray jobs (the site's
`ray_job_ports`, or its own in `ray_job_ports_by_node`), cut into one block of
`ray_job_ports_per_gpu` per GPU. A job's node takes the block of its lowest GPU index:
gpuq gives a GPU to one job at a time, so two jobs on a node never share a block, with
no bookkeeping to lose in a restart. Nodes that share an address (simulated nodes on
one machine, as in the tests) get consecutive ranges, so they cannot collide either.

Pure: the backend asks, node/raycluster.py uses the answer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the site config is only passed through here
    from orchestrator.core.config import Config


class PortsExhausted(ValueError):
    """The node's range has no block for this GPU index (a site setting to fix)."""


def parse_range(text: str) -> tuple[int, int]:
    lo, _, hi = text.partition("-")
    return int(lo), int(hi)


def node_range(node: str, ips: dict[str, str], base: str, by_node: dict[str, str]) -> tuple[int, int]:
    """The port range for Ray jobs on `node`: its own if the site gives one, else the
    base range, moved up past the ranges of nodes with the same address before it."""
    if node in by_node:
        return parse_range(by_node[node])
    lo, hi = parse_range(base)
    same = (
        sorted(n for n, ip in ips.items() if ip == ips.get(node) and n not in by_node)
        if node in ips
        else [node]
    )
    k = same.index(node) if node in same else 0
    return lo + k * (hi - lo + 1), hi + k * (hi - lo + 1)


def block(ports: tuple[int, int], gpus: list[int], per_gpu: int) -> int:
    """The first port of the block for a node of a job holding `gpus` there."""
    lo, hi = ports
    first = lo + min(gpus) * per_gpu
    if first + per_gpu - 1 > hi or first + per_gpu - 1 > 65535:
        raise PortsExhausted(
            f"no port block for GPU {min(gpus)} in {lo}-{hi} with ray_job_ports_per_gpu={per_gpu}: "
            "widen ray_job_ports (one block per GPU of the node)"
        )
    return first


def plan(site: Config, python: str) -> dict[str, Any]:
    """What the backend needs of the site (a Config) to lay out a Ray job's cluster."""
    return {
        "python": python,
        "ports": site.ray_job_ports,
        "ports_by_node": site.ray_job_ports_by_node,
        "per_gpu": site.ray_job_ports_per_gpu,
    }


def nodes(
    ray_job: dict[str, Any],
    hellos: list[dict[str, Any]],
    ips: dict[str, str],
    capacity: dict[str, int],
    token: str,
) -> list[dict[str, Any]]:
    """Each rank's part of a Ray job's private cluster (`hellos`: each rank's node, GPU
    indices and address): its role, its port block, the head's address, the token."""
    blocks = [
        block(
            node_range(h["node"], ips, ray_job["ports"], ray_job["ports_by_node"]),
            h["gpus"],
            ray_job["per_gpu"],
        )
        for h in hellos
    ]
    head = f"{hellos[0]['ip']}:{blocks[0]}"
    return [
        {
            "role": "head" if rank == 0 else "worker",
            "address": head,
            "ports": blocks[rank],
            "block": ray_job["per_gpu"],
            "gpus": len(h["gpus"]),
            "node_gpus": capacity.get(h["node"], len(h["gpus"])),
            "nodes": len(hellos),
            "token": token,
            "python": ray_job["python"],
        }
        for rank, h in enumerate(hellos)
    ]
