"""One real local Ray cluster per pytest session: a head and two simulated 8-GPU nodes.

Worker raylets declare num_gpus=8, the node label gmi/node=<name> and the per-node
resource {"<name>": 1}, exactly as `gpuq up` and cluster.yaml start real nodes.
"""

from __future__ import annotations

import time

NODES = ("gmi-node-1", "gmi-node-2")


def start_cluster():
    from orchestrator.deploy.localcluster import start_inprocess_cluster

    return start_inprocess_cluster()


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
