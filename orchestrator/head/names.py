"""Where gpuq's actors are found in Ray: what the API and the CLI need to reach the
orchestrator without importing the Ray backend (and with it the runner and agent)."""

NAMESPACE = "gpuq"
ORCHESTRATOR_NAME = "gpuq-orchestrator"
