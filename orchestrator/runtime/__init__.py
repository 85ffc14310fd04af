"""The runtime: the orchestrator actor and its service, the Ray backend, what runs on
the nodes (runner, launcher, supervisor, agent), the store, telemetry, health and the
fleet, metrics and accounting.

Where Ray is used: the backend (backend.py, quarantine.py) is the one place the
service places and starts things on Ray. The Ray actors themselves (actor.py, runner.py,
agent.py), their discovery (nodes.py), Ray's package store (packagestore.py), starting Ray
(localcluster.py, rollout.py) and a Ray job's own cluster (raycluster.py, jobpython.py)
import it too, each for its own part.

Kept empty: the launcher imports the supervisor from here for every slot, and this
package's import must cost it nothing."""
