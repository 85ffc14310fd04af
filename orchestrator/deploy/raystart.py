"""`ray start`, as gpuq starts Ray: Ray's own CLI with Ray Client off.

    python -m orchestrator.deploy.raystart start --head --port=6380 …

Ray Client (a gRPC server on port 10001 that runs a remote driver's code on the head)
is one more door into the cluster that gpuq does not use. Ray's CLI starts it whenever
grpc is importable and has no switch to leave it off: `--ray-client-server-port` must
be 1024-65535 (Ray 2.60, ray/scripts/scripts.py). So this runs that CLI unchanged but
for the one check it decides by, which is told that Ray Client is not installed. A site
that wants Ray Client sets `ray_client_port`, and gpuq passes the port on (Ray's token
authentication still guards it).
"""

from __future__ import annotations

import sys


def main() -> int:
    from ray.scripts import scripts

    if not any(a.startswith("--ray-client-server-port") for a in sys.argv[1:]):
        scripts.get_ray_client_dependency_error = lambda: ImportError(
            "Ray Client is off (gpuq: ray_client_port)"
        )
    sys.argv[0] = "ray"
    return scripts.main()


if __name__ == "__main__":
    sys.exit(main())
