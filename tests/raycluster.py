"""One real local Ray cluster per pytest session: a head and two simulated 8-GPU nodes.

Worker raylets declare num_gpus=8, the node label gmi/node=<name> and the per-node
resource {"<name>": 1}, exactly as `gpuq up` and cluster.yaml start real nodes.
"""

from __future__ import annotations

import os
import time

NODES = ("gmi-node-1", "gmi-node-2")


def start_cluster():
    # A local Ray 2.60 start turns on token authentication; the tests talk to their own
    # loopback cluster and say so explicitly.
    os.environ["RAY_AUTH_MODE"] = "disabled"
    os.environ.pop("RAY_ADDRESS", None)
    import ray
    from ray.cluster_utils import Cluster

    from orchestrator.localcluster import WORKER_CPUS

    cluster = Cluster(initialize_head=True, head_node_args=dict(num_cpus=1, num_gpus=0, include_dashboard=False))
    for name in NODES:
        cluster.add_node(num_cpus=WORKER_CPUS, num_gpus=8, resources={name: 1}, labels={"gmi/node": name})
    ray.init(address=cluster.address, namespace="gpuq", log_to_driver=False)
    cluster.wait_for_nodes()
    return cluster


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.1, what: str = "condition"):
    """Poll until predicate() is truthy; its value. Fails with `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
