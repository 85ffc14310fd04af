"""The runtime: the orchestrator actor and its service, the Ray backend (the one place
gpuq touches Ray), what runs on the nodes (runner, supervisor, agent), the store,
telemetry, health and the fleet, metrics and accounting.

Kept empty: the supervisor is started as `python -m orchestrator.runtime.supervisor`
for every job, and this package's import must cost it nothing."""
