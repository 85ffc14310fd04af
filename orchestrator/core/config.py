"""Site configuration: defaults and limits that an operator sets, not a user.

Every key is optional; a missing file means all defaults. Unknown keys are an error,
so a typo in the file cannot silently change nothing. Reading the file, and the
folders left unset, are the host's business (orchestrator/host/siteconfig.py).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from orchestrator.core.priority import Priority
from orchestrator.core.sizes import parse_size

DAY_S = 24 * 3600


WebhookEvent = Literal["started", "completed", "failed", "cancelled", "preempted", "requeued", "node_down"]


class Webhook(BaseModel):
    """Where job and node events are POSTed (head/notify.py). Only these URLs are
    ever called: users choose events for their jobs, never where they go."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._-]{1,64}$")
    url: str = Field(pattern=r"^https?://[^\s]{1,2000}$")
    events: list[WebhookEvent] = Field(min_length=1)
    secret_env: str | None = Field(
        default=None, description="the environment variable holding the HMAC secret"
    )
    opt_in: bool = Field(default=False, description="only jobs submitted with --notify")


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # The nodes gpuq expects and their GPU counts. The live orchestrator replaces this
    # with what Ray reports; it is what validation uses before the cluster is known.
    nodes: dict[str, int] = Field(default_factory=lambda: {"gmi-node-1": 8, "gmi-node-2": 8})
    # Like Slurm's DefaultTime/MaxTime: a job without a limit gets the default; no job
    # may ask for more than the maximum, so backfill always has an end time to plan with.
    default_time_limit_s: int = Field(default=DAY_S, ge=1)
    max_time_limit_s: int = Field(default=7 * DAY_S, ge=1)
    # Auto-retry after a non-zero exit. One retry absorbs most transient faults without
    # letting a broken script burn GPUs for hours.
    default_max_retries: int = Field(default=1, ge=0)
    max_retries_limit: int = Field(default=10, ge=0)

    # Accept and queue submissions but start nothing (Kueue's stopPolicy: Hold; a Slurm
    # partition set DOWN): for a maintenance window, or for a contract test that fuzzes
    # the API with commands no one should run. Running jobs are left alone.
    start_jobs: bool = True

    # Ray Client (a port that runs a remote driver on the head) is off unless a port is set
    # here; Ray's token guards it either way (deploy/raystart.py).
    ray_client_port: int | None = Field(default=None, ge=1024, le=65535)

    # The REST API. Loopback unless an operator opens it: a job is arbitrary code.
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=1, le=65535)
    # Mutations always need a token; so do reads unless a site opens them (false): the
    # queue shows who runs what, and a job's command, env and logs are its owner's.
    api_auth_reads: bool = True
    # Clients that hold the API up (serve_app/admission.py): requests in flight without a
    # valid token per client address; requests a second per token, and their burst
    # (admins' are not limited); seconds for a request's body to arrive (408 past it).
    api_unauthenticated_per_address: int = Field(default=16, ge=1)
    api_rate_per_token: float = Field(default=50.0, gt=0)
    api_burst_per_token: int = Field(default=200, ge=1)
    api_body_deadline_s: float = Field(default=10.0, gt=0)

    # Who is who (orchestrator/host/accounts.py, orchestrator/core/rights.py). A gpuq user runs as
    # the Unix account of the same name unless mapped here; the built-in `admin` user
    # runs as the service account unless mapped.
    unix_users: dict[str, str] = Field(default_factory=dict)
    # Slurm's QOS idea: the highest priority each role may submit or raise a job to, and
    # per-user grants above that. A user with a grant (and every admin) may also mark a
    # job non-preemptible.
    max_priority: dict[str, str] = Field(default_factory=lambda: {"user": "HIGH", "admin": "CRITICAL"})
    priority_grants: dict[str, str] = Field(default_factory=dict)
    # A job's PATH (its environment starts clean, like sbatch --export=NONE).
    job_path: str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    # Job log directories: 0750 for the job's group (true) or 0700 (false).
    job_logs_group_readable: bool = False
    # A single-user install (gpuq not running as root) runs every job as its one account,
    # so users cannot be kept apart: tokens for other users are refused unless a site
    # that accepts this says so here.
    allow_shared_account: bool = False
    # Jobs never run as root, the service account or a system account (a uid below the
    # site's UID_MIN, read from /etc/login.defs), so no token is made for one and no job
    # is accepted for one: except the accounts listed here (host/accounts.py).
    allowed_system_accounts: list[str] = Field(default_factory=list)
    # Where the orchestrator keeps its SQLite store (on the head node) and where each node
    # keeps job logs and exit records (on that node's own disk). Default: under GPUQ_HOME.
    store_path: str | None = None
    data_dir: str | None = None
    # A placement group Ray has not placed by then goes back in line (Ray never errors on it).
    placement_timeout_s: float = Field(default=60.0, gt=0)
    # Cancel, preemption and time limits: TERM, this long for the job to checkpoint, then KILL.
    stop_grace_s: float = Field(default=30.0, ge=0)
    # The loop runs at once on submit and on job end, and at least this often otherwise.
    loop_interval_s: float = Field(default=2.0, gt=0)
    # A slot (placement group + runner) whose job ended waits this long for the next job of
    # its shape before it is removed: starting a Ray worker is the costliest step of a launch.
    slot_idle_s: float = Field(default=60.0, ge=0)
    # One-GPU slots kept warm per node while nothing waits, so a burst of small jobs starts
    # at once (each costs an idle Ray worker process on its node).
    warm_slots_per_node: int = Field(default=8, ge=0)
    # Ray runtime environments (core/runtime_env.py). Setting one up (unpack, pip) is done
    # on the node as the job's user while the job is ALLOCATING and does not count against
    # its time limit; past this it ends FAILED. Packages uploaded for them (`ray job submit
    # --working-dir`) may be at most max_package_bytes (and unpack to at most
    # max_package_unpacked_bytes), and stay in Ray's store while a job that is not
    # finished names them, or for package_keep_s after their upload or last use.
    runtime_env_setup_timeout_s: float = Field(default=600.0, gt=0)
    max_package_bytes: int = Field(default=100 * 1024 * 1024, ge=1024)
    max_package_unpacked_bytes: int = Field(default=1024**3, ge=1024)
    package_keep_s: int = Field(default=3600, ge=60)
    # Where pip and uv install a runtime env's requirements from: this index only (None:
    # pip's own default, PyPI). Requirements name packages, never URLs (runtime_env.py).
    pip_index_url: str | None = Field(default=None, pattern=r"^(https?|file)://[^\s]{1,2000}$")
    # The Python a runtime env's virtualenv is made from: found on the job's PATH (job_path)
    # unless a path is given. It must be one every user may run (not a venv under /root).
    # Jobs' Python: the one a Ray job's `python` and `python3` are, and the one runtime-env
    # virtualenvs are made from. It must be one every user may run (not a venv under
    # /root) and, for Ray jobs, hold the cluster's Ray. None: gpuq's own venv interpreter
    # when every user may run it (scripts/up makes it so), else `python3` on job_path.
    job_python: str | None = None
    # Ray jobs (`--ray`, node/raycluster.py): each rank's private Ray node takes its
    # ports from this node's range (`ray_job_ports`, or per node in
    # `ray_job_ports_by_node`), one block of `ray_job_ports_per_gpu` per GPU, the block
    # of the job's lowest GPU index: no two jobs on a node ever share one. Keep it clear of
    # gpuq's own Ray (its workers: 10002-19999) and the kernel's ephemeral ports (32768+).
    ray_job_ports: str = Field(default="20000-23199", pattern=r"^\d{4,5}-\d{4,5}$")
    ray_job_ports_by_node: dict[str, str] = Field(default_factory=dict)
    ray_job_ports_per_gpu: int = Field(default=400, ge=40, le=10000)
    # Submissions through Ray's Jobs API are Ray programs unless their metadata says
    # "ray": "false" (true), or only when it says "true" (false).
    ray_jobs_api_ray: bool = True
    # Each job's private folder on its node (its TMPDIR, its unpacked packages) and each
    # user's virtualenvs live under this root, one folder per uid (node/jobenv.py).
    # Default: /var/lib/gpuq/scratch in a multi-user install, GPUQ_HOME/scratch otherwise.
    scratch_dir: str | None = None
    # A job whose dependency can never be met (afterok on a job that failed): "cancel" it,
    # as Slurm's kill_invalid_depend, or "hold" it for its owner to look at.
    dependency_never_satisfied: str = Field(default="cancel", pattern="^(cancel|hold)$")
    # Notifications (head/notify.py): the site's webhooks; events kept per webhook
    # while it is down (then the oldest are dropped); how long one delivery is retried.
    webhooks: list[Webhook] = Field(default_factory=list)
    webhook_buffer: int = Field(default=1000, ge=1)
    webhook_retry_for_s: float = Field(default=3600.0, gt=0)
    webhook_retry_max_wait_s: float = Field(default=30.0, gt=0)
    # Each job rank's limits where the job names none (--cpus, --mem), per GPU it holds,
    # like Slurm's DefCpuPerGPU and DefMemPerGPU: enforced by its cgroup
    # (node/cgroups.py). None: no limit.
    default_cpus_per_gpu: float | None = Field(default=None, gt=0)
    default_memory_per_gpu: int | None = Field(default=None, ge=16 * 1024**2)
    # Per-user limits, like Slurm's MaxSubmitJobs: jobs queued, held or running per user,
    # array members counted (past it a submit gets 429 naming the limit); bytes of
    # uploaded packages each user holds on the cluster (runtime_env working_dir and
    # py_modules; past it an upload gets 413).
    max_jobs_per_user: int = Field(default=10_000, ge=1)
    max_package_bytes_per_user: int = Field(default=2 * 1024**3, ge=1024)
    # Ended jobs stay in the orchestrator's memory this long (a retried submit's key holds
    # as long), then only in the store, where every read still finds them; the store keeps
    # them job_retention_days (Slurm's PurgeJobAfter), usage totals and the audit longer.
    job_memory_s: float = Field(default=3600.0, ge=0)
    job_retention_days: float = Field(default=90.0, gt=0)
    # How many jobs a dependency may name, array members counted (422 past it): judging
    # dependencies is work for every cycle.
    max_dependency_jobs: int = Field(default=1000, ge=1)
    # How often each node kills leftover processes of jobs that are no longer running.
    reap_interval_s: float = Field(default=15.0, gt=0)
    # Scheduling policy (orchestrator/core/policy.py).
    policy: str = "default"
    reservation_depth: int = Field(default=1, ge=0)
    user_gpu_caps: dict[str, int] = Field(default_factory=dict)
    default_user_gpu_cap: int | None = Field(default=None, ge=1)
    preemption: dict[str, list[str]] = Field(default_factory=lambda: {"CRITICAL": ["LOW", "NORMAL"]})
    fairshare_half_life_s: float = Field(default=7 * DAY_S, gt=0)
    # Opt-in aging across priority levels: one level per this many seconds of waiting
    # (0 = never: aging only orders jobs within their level), at most this many levels.
    promote_after_s: float = Field(default=0.0, ge=0)
    promote_levels: int = Field(default=1, ge=0)

    # GPU telemetry: "auto" reads NVML where it works and simulates it where it does not
    # (saying so); "nvml" refuses to simulate; "simulated" never reads NVML.
    telemetry: str = Field(default="auto", pattern="^(auto|nvml|simulated)$")
    telemetry_interval_s: float = Field(default=5.0, gt=0)
    # A node whose agent has not reported for this long has all its GPUs marked unhealthy.
    node_silent_after_s: float = Field(default=30.0, gt=0)
    # A node Ray declared dead (down) returns to service by itself when a node of that
    # name registers again, like Slurm's ReturnToService=2. False: it comes back drained,
    # for an admin to `gpuq undrain`.
    node_return_to_service: bool = True
    # The node lease (core/lease.py): a node that cannot reach the head for node_lease_s
    # stops its jobs by itself (TERM, 5 s, then KILL); the head requeues them
    # node_lease_s + 5 s + node_fence_margin_s after its last contact with the node (35 s
    # by default), never while they may still run. Shorter leases requeue sooner but
    # kill jobs on shorter network hiccups; Ray's own health check follows the lease.
    node_lease_s: float = Field(default=20.0, ge=2, le=300)
    node_fence_margin_s: float = Field(default=10.0, ge=0, le=300)
    # An allocated GPU under this utilization (0..1) for this long is flagged idle.
    idle_utilization: float = Field(default=0.05, ge=0, le=1)
    idle_window_s: float = Field(default=600.0, gt=0)

    @field_validator("max_priority", "priority_grants")
    @classmethod
    def _priorities(cls, levels: dict[str, str]) -> dict[str, str]:
        for who, level in levels.items():
            try:
                Priority.parse(level)
            except ValueError as e:
                raise ValueError(f"{who}: {e}") from None
        return levels

    @field_validator("default_memory_per_gpu", mode="before")
    @classmethod
    def _size(cls, v: Any) -> Any:
        return parse_size(v) if isinstance(v, str) else v

    @field_validator("nodes")
    @classmethod
    def _nodes_have_gpus(cls, nodes: dict[str, int]) -> dict[str, int]:
        if not nodes or any(n < 1 for n in nodes.values()):
            raise ValueError("must name at least one node, each with at least 1 GPU")
        return nodes

    @field_validator("webhooks")
    @classmethod
    def _webhooks_named(cls, hooks: list[Webhook]) -> list[Webhook]:
        """Every webhook has a name (its metric label, its queue): webhook-N if not given."""
        named = [
            h if h.name else h.model_copy(update={"name": f"webhook-{i + 1}"}) for i, h in enumerate(hooks)
        ]
        if len({h.name for h in named}) < len(named):
            raise ValueError("each webhook needs a name of its own")
        return named

    @property
    def max_gpus_per_job(self) -> int:
        """The largest job the cluster can ever hold: every GPU of every node."""
        return sum(self.nodes.values())
