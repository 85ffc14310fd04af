"""`gpuq up` against a running cluster: keep what runs, replace what is out of date.

Upgrading gpuq in place is `git pull` (or any newer checkout) and `gpuq up` again:
- the orchestrator actor is replaced when its code or its site config differs from
  the caller's. The old one is killed (its store is consistent at every commit) and a
  new one starts from the same store; recovery adopts every running job by its slot
  names, as after a crash (head/recovery.py). Jobs keep running and logging;
- the node agents are replaced with it: they hold nothing a restart loses (the
  telemetry totals they count restart from zero, which health.py allows for);
- runners are not touched: a running job keeps the runner (and code) it started
  with. Slots created afterwards get runners with the new code.
So a version skew is one orchestrator with new code talking to runners with old code
for as long as those jobs run: the runner's methods (hello, rendezvous, run, wait,
stop) and its exit records must keep their meaning across releases; new arguments
must be optional. The orchestrator's store is migrated in place when it opens
(store.py, MIGRATIONS).

The new orchestrator gets a runtime environment naming its code version, so Ray
starts it in a fresh worker process: a pooled one could hold modules of the old code.
"""

from __future__ import annotations

import time
from typing import Any

import ray

from orchestrator.head.names import NAMESPACE, ORCHESTRATOR_NAME
from orchestrator.version import code_version, config_version


def running_versions() -> dict | None:
    """What the running orchestrator says of itself; None when there is none."""
    try:
        orch = ray.get_actor(ORCHESTRATOR_NAME, namespace=NAMESPACE)
    except ValueError:
        return None
    try:
        status: dict[str, Any] = ray.get(orch.status.remote(), timeout=60)  # type: ignore[assignment]
        return status["details"].get("version", {})
    except Exception:
        return {}  # there, but not answering (or too old to say): replace it


def ensure_orchestrator(config: dict | None) -> str:
    """Start the orchestrator, keep it, or replace it; says which."""
    from orchestrator.head.actor import start_orchestrator

    wanted = {"code": code_version(), "config": config_version(config)}
    running = running_versions()
    if running is None:
        what = "started"
    elif {k: running.get(k) for k in wanted} == wanted:
        return "kept (same code and config)"
    else:
        changed = [k for k in wanted if running.get(k) != wanted[k]]
        _retire()
        what = f"replaced: new {' and '.join(changed)} ({running.get('code', '?')} -> {wanted['code']})"
    orch = start_orchestrator(config, wanted["code"])
    ray.get(orch.ping.remote(), timeout=120)
    return what


def _retire(timeout: float = 60.0) -> None:
    """Kill the orchestrator, then the node agents (so the new orchestrator starts new
    ones); wait until their names are free."""
    from orchestrator.node.agent import AGENT_PREFIX

    def named(prefixes):
        return [
            a["name"]
            for a in ray.util.list_named_actors(all_namespaces=True)
            if a["namespace"] == NAMESPACE and a["name"].startswith(prefixes)
        ]

    deadline = time.monotonic() + timeout
    for prefixes in ((ORCHESTRATOR_NAME,), (AGENT_PREFIX,)):
        while names := named(prefixes):
            for name in names:
                try:
                    ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)
                except ValueError:
                    pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"could not stop {', '.join(names)} within {timeout:.0f} s")
            time.sleep(0.2)
