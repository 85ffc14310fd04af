"""The node's lease keeper: a small process of the node agent's that renews the node's
lease through the head's GCS every second and records each renewal in the lease file
(node/lease.py; core/lease.py says why).

A process of its own, not a thread of the agent: inside a Ray worker, gRPC shares one
connection to the GCS among every client of the process, and after a partition that
connection waits out gRPC's reconnect back-off (measured: 11 s after a 15 s cut)
whatever a new client does. Here the only client is the keeper's, dropped on the first
failure; the next is made once a plain connect to the GCS succeeds, so a renewal
follows a heal within about a second.

    python -I -c … orchestrator.node.leasekeeper GCS_ADDRESS CLUSTER_ID NODE_ID LEASE_FILE KEY

It dies with the agent that started it (a parent-death signal), and uses Ray's compiled
client only: no `ray.init`, no worker.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

from orchestrator.core import lease as leases
from orchestrator.node import lease as node_lease

PR_SET_PDEATHSIG = 1


def renew_forever(address: str, cluster: str, node_id: str, path: str, key: str) -> None:
    from ray._raylet import Config, GcsClient, NodeID  # type: ignore[attr-defined]  # compiled

    Config.initialize("")  # token authentication, as the agent's environment says
    host, _, port = address.rpartition(":")
    me = NodeID.from_hex(node_id)
    gcs = None
    seq = 0
    while True:
        sent = node_lease.now()
        seq += 1
        try:
            if gcs is None:
                socket.create_connection((host, int(port)), timeout=leases.RENEW_TIMEOUT_S / 2).close()
                gcs = GcsClient(address=address, cluster_id=cluster)
            # A node Ray declared dead renews nothing: its raylet will exit with its jobs.
            if gcs.check_alive([me], timeout=leases.RENEW_TIMEOUT_S)[0]:
                value = json.dumps({"seq": seq, "at": time.time()}).encode()
                gcs.internal_kv_put(
                    key.encode(), value, True, leases.NAMESPACE, timeout=leases.RENEW_TIMEOUT_S
                )
                if node_lease.now() - sent <= leases.RENEW_TIMEOUT_S:
                    node_lease.write(Path(path), sent)
        except Exception:  # out of reach: a new client next time, once a connect succeeds
            gcs = None
        time.sleep(max(0.05, leases.RENEW_EVERY_S - (node_lease.now() - sent)))


def main(argv: list[str]) -> int:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1:  # the agent died before the signal was asked for
        return 0
    renew_forever(*argv)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
