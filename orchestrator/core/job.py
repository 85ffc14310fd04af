"""What a user submits (JobSpec) and what gpuq keeps about it (Job).

No Ray here: the same models serve the live orchestrator, the simulator and the API.
Times are float seconds since the epoch, passed in by the caller (never read from a
clock here) so that tests and the simulator drive time themselves. The module runs
over 400 lines because JobSpec's validators belong beside its fields.
"""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from orchestrator.core import dependencies, runtime_env
from orchestrator.core.config import Config
from orchestrator.core.durations import parse_duration
from orchestrator.core.errors import IllegalTransition, InvalidSpec
from orchestrator.core.inventory import (
    Allocation,
)  # node name -> GPU indices on it (each node numbers from 0)
from orchestrator.core.priority import Priority
from orchestrator.core.sizes import format_size, parse_size
from orchestrator.core.states import JobState, Trigger, next_state

# run_id and user become file names, log paths and Prometheus label values: keep them
# to a charset that is safe in all three, and short.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
SAFE_NAME_HELP = (
    "must be 1-64 characters of letters, digits, '.', '_' or '-', starting with a letter or digit"
)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# gpuq sets these for the job; letting a user override them would break GPU isolation.
_RESERVED_ENV = ("CUDA_VISIBLE_DEVICES",)
_RESERVED_ENV_PREFIX = "GPUQ_"
MAX_COMMAND_CHARS = 16_384
MAX_ENV_VARS = 256
MAX_ENV_VALUE_CHARS = 8_192
MAX_CPUS = 4096
MIN_MEMORY, MAX_MEMORY = 16 * 1024**2, 64 * 1024**4
MAIL_TYPES = ("BEGIN", "END", "FAIL", "REQUEUE", "ALL")  # Slurm's --mail-type, for --notify


def _checked_env(v: dict[str, str], reserved: bool = True) -> dict[str, str]:
    if len(v) > MAX_ENV_VARS:
        raise ValueError(f"may hold at most {MAX_ENV_VARS} variables")
    for key, value in v.items():
        if not _ENV_NAME.fullmatch(key):
            raise ValueError(
                f"{key!r} is not a valid variable name (letters, digits, '_'; not starting with a digit)"
            )
        if reserved and (key in _RESERVED_ENV or key.startswith(_RESERVED_ENV_PREFIX)):
            raise ValueError(f"{key} is set by gpuq for each job and cannot be overridden")
        if len(value) > MAX_ENV_VALUE_CHARS or "\x00" in value:
            raise ValueError(f"value of {key} must be at most {MAX_ENV_VALUE_CHARS} characters, without NUL")
    return v


def _config(info: ValidationInfo) -> Config:
    ctx = info.context or {}
    return ctx.get("config") or Config()


def _site_limits(info: ValidationInfo) -> Config | None:
    """The site a submission is checked against (JobSpec.parse); None for an accepted job."""
    return (info.context or {}).get("config")


class JobSpec(BaseModel):
    """A job as submitted. Unknown fields are refused so a typo is never silently ignored."""

    model_config = ConfigDict(extra="forbid")

    run_id: str = Field(description="the user's name for this run (experiment-1)")
    user: str
    command: str = Field(description="shell command line run on the allocated GPUs")
    gpu_count: StrictInt
    priority: Priority = Priority.NORMAL
    env: dict[str, str] = Field(default_factory=dict)
    working_dir: str | None = None
    max_retries: StrictInt | None = Field(
        default=None, description="auto-retries after a failure; site default"
    )
    time_limit: Annotated[int | None, Field(description="seconds; also '4h', '2d', 'D-HH:MM:SS'")] = None
    name: str | None = None
    preemptible: StrictBool = True
    multi_node: StrictBool = Field(default=False, description="may span nodes even when it fits on one")
    cpus: Annotated[
        float | None,
        Field(description="CPUs per node (the job's cgroup CPU time, e.g. 8 or 2.5); site default per GPU"),
    ] = None
    memory: Annotated[
        int | None,
        Field(
            description="memory per node: bytes, or '64G', '512M' (Slurm's --mem); "
            "past it the job ends OUT_OF_MEMORY; site default per GPU"
        ),
    ] = None
    ray: StrictBool = Field(
        default=False,
        description="a Ray program: ray.init() joins a private Ray cluster on "
        "exactly the job's GPUs, as its user (node/raycluster.py)",
    )
    retry_on_exit_codes: list[StrictInt] | None = Field(
        default=None, description="exit codes worth an auto-retry; default: any non-zero code"
    )
    runtime_env: dict[str, Any] | None = Field(
        default=None, description="Ray's runtime_env: working_dir, py_modules, pip, uv, env_vars, excludes"
    )
    notify: list[str] | None = Field(
        default=None,
        description="Slurm's --mail-type words: BEGIN, END, FAIL, REQUEUE, "
        "ALL (to the site's opt-in webhooks)",
    )
    dependency: str | None = Field(
        default=None,
        description="Slurm's: afterok:ID[:ID...], afternotok:, afterany:, after:, several joined with ','",
    )

    @field_validator("run_id", "user")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if not SAFE_NAME.fullmatch(v):
            raise ValueError(SAFE_NAME_HELP)
        return v

    @field_validator("command")
    @classmethod
    def _command(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        if len(v) > MAX_COMMAND_CHARS:
            raise ValueError(f"must be at most {MAX_COMMAND_CHARS} characters")
        if "\x00" in v:
            raise ValueError("must not contain NUL characters")
        return v

    @field_validator("gpu_count")
    @classmethod
    def _gpu_count(cls, v: int, info: ValidationInfo) -> int:
        site = _site_limits(info)
        most = site.max_gpus_per_job if site else v
        if not 1 <= v <= most:
            raise ValueError(f"must be between 1 and {most} (the cluster's largest placement)")
        return v

    @field_validator("priority", mode="before")
    @classmethod
    def _priority(cls, v: Any) -> Priority:
        return Priority.parse(v)

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        # gpuq's variables are refused from users only: a stored array member holds one.
        return _checked_env(v, reserved=_site_limits(info) is not None)

    @field_validator("runtime_env", mode="before")
    @classmethod
    def _runtime_env(cls, v: Any) -> dict[str, Any] | None:
        try:
            return runtime_env.check(v)
        except runtime_env.RuntimeEnvError as e:
            raise _FieldError(e.field, str(e)) from None

    @field_validator("notify", mode="before")
    @classmethod
    def _notify(cls, v: Any) -> list[str] | None:
        if v is None:
            return None
        words = [w.strip().upper() for w in (v.split(",") if isinstance(v, str) else v) if isinstance(w, str)]
        if not words or any(w not in MAIL_TYPES for w in words) or not isinstance(v, (str, list)):
            raise ValueError(f"must be some of {', '.join(MAIL_TYPES)} (Slurm's --mail-type), e.g. END,FAIL")
        return sorted(set(words))

    @field_validator("dependency")
    @classmethod
    def _dependency(cls, v: str | None) -> str | None:
        if v is None:
            return None
        return dependencies.render(dependencies.parse(v))  # raises ValueError saying the syntax

    @field_validator("working_dir")
    @classmethod
    def _working_dir(cls, v: str | None) -> str | None:
        if v is not None and (not v.startswith("/") or "\x00" in v):
            raise ValueError("must be an absolute path")
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and (len(v) > 200 or not v.isprintable()):
            raise ValueError("must be at most 200 printable characters")
        return v

    @field_validator("cpus", mode="before")
    @classmethod
    def _cpus(cls, v: Any) -> Any:
        if v is not None and (
            isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.01 <= v <= MAX_CPUS
        ):
            raise ValueError(f"must be a number of CPUs between 0.01 and {MAX_CPUS}")
        return v

    @field_validator("memory", mode="before")
    @classmethod
    def _memory(cls, v: Any) -> Any:
        if v is None:
            return None
        size = parse_size(v) if isinstance(v, (str, int)) and not isinstance(v, bool) else -1
        if not MIN_MEMORY <= size <= MAX_MEMORY:
            raise ValueError(
                f"must be between {format_size(MIN_MEMORY)} and {format_size(MAX_MEMORY)}: "
                "bytes, or text with a unit such as 512M or 64G"
            )
        return size

    @field_validator("time_limit", mode="before")
    @classmethod
    def _time_limit_text(cls, v: Any) -> Any:
        if isinstance(v, bool):
            raise ValueError("must be a duration in seconds, or text such as '4h' or '2-00:00:00'")
        if isinstance(v, str):
            return parse_duration(v)
        return v

    @model_validator(mode="after")
    def _defaults_and_limits(self, info: ValidationInfo) -> JobSpec:
        cfg, site = _config(info), _site_limits(info)
        if self.runtime_env and self.runtime_env.get("env_vars"):
            try:  # the job's own env wins over its runtime env's variables
                self.env = _checked_env(
                    {**self.runtime_env["env_vars"], **self.env}, reserved=site is not None
                )
            except ValueError as e:
                raise _FieldError("runtime_env.env_vars", str(e)) from None
        if self.runtime_env and "working_dir" in self.runtime_env and self.working_dir is not None:
            raise _FieldError(
                "working_dir",
                "cannot be given with runtime_env.working_dir (the command runs in the uploaded package)",
            )
        # Filled here, not as field defaults, because the site config decides them.
        if self.max_retries is None:
            self.max_retries = cfg.default_max_retries
        elif site and not 0 <= self.max_retries <= site.max_retries_limit:
            raise _FieldError("max_retries", f"must be between 0 and {cfg.max_retries_limit}")
        if self.time_limit is None:
            self.time_limit = cfg.default_time_limit_s
        elif site and not 1 <= self.time_limit <= site.max_time_limit_s:
            raise _FieldError("time_limit", f"must be between 1 and {cfg.max_time_limit_s} seconds")
        return self

    @classmethod
    def parse(cls, data: Any, config: Config | None = None) -> JobSpec:
        """Validate a submission; raises InvalidSpec naming each bad field and what is allowed."""
        try:
            return cls.model_validate(data, context={"config": config or Config()})
        except ValidationError as e:
            raise InvalidSpec(validation_messages(e)) from None


class _FieldError(ValueError):
    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field} {message}")


def validation_messages(e: ValidationError) -> list[tuple[str, str]]:
    """(field, message) pairs from a pydantic error, in words a user can act on."""
    out: list[tuple[str, str]] = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "body"
        msg = err["msg"]
        cause = err.get("ctx", {}).get("error")
        if isinstance(cause, _FieldError):
            loc, msg = cause.field, str(cause)[len(cause.field) + 1 :]
        elif err["type"] == "extra_forbidden":
            msg = "is not a known field"
        elif err["type"] == "missing":
            msg = "is required"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        out.append((loc, msg))
    return out


class Event(BaseModel):
    """One entry of a job's append-only history."""

    time: float
    from_state: JobState | None  # None for the submission itself
    to_state: JobState
    trigger: str
    reason: str = ""


class Job(BaseModel):
    """A job and everything that happened to it. Change it only through JobQueue, which
    keeps the line in order; `apply` is the one place a state changes."""

    id: str
    seq: int = Field(description="submission order: the job's place in line, kept through retries")
    spec: JobSpec
    state: JobState = JobState.QUEUED
    submitted_at: float
    state_times: dict[JobState, float] = Field(
        default_factory=dict, description="when each state was last entered"
    )
    attempts: int = Field(default=0, description="how many times the command was started")
    retries: int = Field(default=0, description="auto-retries used after failures of the job's own making")
    allocation: Allocation = Field(default_factory=dict, description="GPUs held now (planned, then as bound)")
    placements: dict[int, Allocation] = Field(
        default_factory=dict, description="where each attempt ran, by attempt"
    )
    slots: dict[int, list[str]] = Field(
        default_factory=dict, description="Ray slots (runner names) of each attempt, by rank"
    )
    idempotency_key: str | None = Field(
        default=None, description="the client's key: a retried submit returns this job"
    )
    array_id: str | None = Field(default=None, description="the array it belongs to (one submit, one id)")
    array_index: int | None = Field(default=None, description="its index in that array (GPUQ_ARRAY_INDEX)")
    exit_code: int | None = None
    failure_reason: str | None = None
    infrastructure_failure: bool = False
    ray_head: str | None = Field(
        default=None,
        description="a Ray job's own Ray cluster: its head (IP:PORT), where its latest attempt ran",
    )
    events: list[Event] = Field(default_factory=list)

    @classmethod
    def new(cls, spec: JobSpec, seq: int, now: float, job_id: str | None = None) -> Job:
        job = cls(id=job_id or str(uuid.uuid4()), seq=seq, spec=spec, submitted_at=now)
        job.state_times[JobState.QUEUED] = now
        job.events.append(
            Event(time=now, from_state=None, to_state=JobState.QUEUED, trigger="submit", reason="submitted")
        )
        return job

    @property
    def priority(self) -> Priority:
        return self.spec.priority

    def worth_retry(self, exit_code: int | None) -> bool:
        """The user's exit-code policy: may this failure be retried at all?"""
        codes = self.spec.retry_on_exit_codes
        return codes is None or exit_code in codes

    @property
    def retries_left(self) -> int:
        return max(0, (self.spec.max_retries or 0) - self.retries)

    # The attributes the policy reads (orchestrator.core.ordering.Waiting).
    @property
    def gpus(self) -> int:
        return self.spec.gpu_count

    @property
    def label(self) -> str:
        return self.spec.run_id

    @property
    def user(self) -> str:
        return self.spec.user

    @property
    def time_limit(self) -> int:
        return self.spec.time_limit  # type: ignore[return-value]  # filled in by validation

    @property
    def preemptible(self) -> bool:
        return self.spec.preemptible

    @property
    def multi_node(self) -> bool:
        return self.spec.multi_node

    def node_of_rank(self, attempt: int, rank: int) -> str | None:
        """The node of a bundle in a given attempt (ranks follow the placement's node order)."""
        nodes = list(self.placements.get(attempt, {}))
        return nodes[rank] if rank < len(nodes) else None

    def note(self, now: float, what: str, reason: str) -> None:
        """Record something that happened to the job without moving it (an idle GPU, a
        drained node): the history says it, the state machine is not involved."""
        self.events.append(
            Event(time=now, from_state=self.state, to_state=self.state, trigger=what, reason=reason)
        )

    def apply(self, trigger: Trigger, now: float, reason: str = "") -> JobState:
        """Make one move of the state machine, or raise IllegalTransition and change nothing."""
        try:
            target = next_state(self.state, trigger)
        except IllegalTransition as e:
            raise e.for_job(self.id) from None
        if trigger is Trigger.RETRY and not self.infrastructure_failure and self.retries_left == 0:
            raise IllegalTransition(
                self.state.value,
                trigger.value,
                [],
                self.id,
                f"no retries left: {self.retries} of {self.spec.max_retries} used",
            )
        # Effects of the move on the job's own fields; everything else is the caller's.
        if trigger is Trigger.START:
            self.attempts += 1
        elif trigger is Trigger.RETRY and not self.infrastructure_failure:
            self.retries += 1
        if target is JobState.QUEUED:
            self.allocation = {}
            self.exit_code = None
            self.failure_reason = None
            self.infrastructure_failure = False
        self.events.append(
            Event(time=now, from_state=self.state, to_state=target, trigger=trigger.value, reason=reason)
        )
        self.state = target
        self.state_times[target] = now
        return target


def format_allocation(allocation: Allocation) -> str:
    """The placement notation users read: `node-1:[0-3], node-2:[4,6]`."""
    parts = []
    for node, gpus in allocation.items():
        parts.append(f"{node}:[{_ranges(sorted(gpus))}]")
    return ", ".join(parts)


def _ranges(ids: list[int]) -> str:
    out, start = [], None
    for i, g in enumerate(ids):
        if start is None:
            start = g
        if i + 1 == len(ids) or ids[i + 1] != g + 1:
            out.append(str(start) if start == g else f"{start}-{g}")
            start = None
    return ",".join(out)
