"""The shape of every request body the API takes, as the OpenAPI spec shows it.

These models check types and absolute bounds (lengths, counts, numeric ranges) before
anything is sent on: a body that breaks one is answered 422 here, naming the field.
What depends on the site and the cluster (a GPU count the cluster can place, the
longest time limit, who may ask for which priority) is checked once, where it is
known: by JobSpec in the orchestrator (orchestrator/core/job.py). Unknown fields are
refused everywhere, so a typo is never silently dropped.
"""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    StrictBool,
    StrictInt,
    StringConstraints,
    WithJsonSchema,
    field_validator,
)
from starlette.requests import HTTPConnection

from orchestrator.core.durations import parse_duration
from orchestrator.core.job import MAX_COMMAND_CHARS, MAX_ENV_VALUE_CHARS, MAX_ENV_VARS, SAFE_NAME
from orchestrator.core.priority import Priority as JobPriority
from orchestrator.core.states import StateName
from orchestrator.core.submission import MAX_ARRAY, MAX_ARRAY_TEXT
from serve_app.errors import ApiError

Name = Annotated[str, StringConstraints(pattern=f"^{SAFE_NAME.pattern}$")]
Text = Annotated[str, StringConstraints(max_length=1000)]
Env = Annotated[
    dict[
        Annotated[str, StringConstraints(max_length=256)],
        Annotated[str, StringConstraints(max_length=MAX_ENV_VALUE_CHARS)],
    ],
    Field(max_length=MAX_ENV_VARS),
]
Gpus = Annotated[list[Annotated[StrictInt, Field(ge=0, le=1023)]], Field(max_length=1024)]


# Fields that take more than one JSON type are checked by one function each, so that a
# mistake gets one message naming the field (a pydantic union would report one error
# per member, under names like `priority.constrained-str`).


def _number(v):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError("must be a number")
    return v


def _priority(v):
    try:
        return int(JobPriority.parse(v))
    except ValueError as e:
        raise ValueError(str(e)) from None


def _duration(v):
    if isinstance(v, bool) or not isinstance(v, (int, str)):
        raise ValueError("must be seconds, or a duration such as 4h, 2d or 1-12:00:00")
    try:
        seconds = parse_duration(v) if isinstance(v, str) else v
    except ValueError:
        raise ValueError("must be seconds, or a duration such as 4h, 2d or 1-12:00:00") from None
    if not 1 <= seconds <= 10**9:
        raise ValueError("must be between 1 second and about 30 years")
    return v


def _array(v):
    ok = (isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_ARRAY) or (
        isinstance(v, str) and 0 < len(v) <= MAX_ARRAY_TEXT
    )
    if not ok:
        raise ValueError(f'must be a count, a range "0-9" or a list "1,3,5", of at most {MAX_ARRAY} jobs')
    return v


Number = Annotated[float, BeforeValidator(_number), Field(allow_inf_nan=False)]
Priority = Annotated[
    int,
    PlainValidator(_priority),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 1, "maximum": 4},
                {"type": "string", "enum": [p.name for p in JobPriority]},
            ],
            "description": "1-4 or LOW, NORMAL, HIGH, CRITICAL",
        }
    ),
]
Duration = Annotated[
    int | str,
    PlainValidator(_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 1, "maximum": 10**9},
                {"type": "string", "maxLength": 32},
            ],
            "description": "seconds, or text: 4h, 2d, 1-12:00:00",
        }
    ),
]
Array = Annotated[
    int | str,
    PlainValidator(_array),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 1, "maximum": MAX_ARRAY},
                {"type": "string", "minLength": 1, "maxLength": MAX_ARRAY_TEXT},
            ],
            "description": 'one job per index: a count, a range "0-9" or a list "1,3,5"; '
            f"at most {MAX_ARRAY}",
        }
    ),
]


# In the spec so that the contract test (tests/api/test_contract.py) sends them: what is
# accepted, and what is refused by name (a URL, a path, `name @ url` as a requirement).
RUNTIME_ENV_EXAMPLES = [
    {"pip": ["numpy>=1.26"], "env_vars": {"SEED": "1"}},
    {"pip": ["https://evil.example/x-1.0-py3-none-any.whl"]},
    {"uv": ["pkg @ file:///etc/passwd"]},
    {"pip": ["/home/alice/pkg"]},
]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def fields(self) -> dict:
        """What the client sent, as sent: unset fields take the site's defaults later."""
        return self.model_dump(exclude_unset=True)


class SubmitRequest(Body):
    """A job, or an array of them."""

    run_id: Name = Field(description="your name for this run, e.g. experiment-1 (letters, digits, . _ -)")
    command: Annotated[str, StringConstraints(min_length=1, max_length=MAX_COMMAND_CHARS)] = Field(
        description="shell command line run on the allocated GPUs"
    )
    gpu_count: Annotated[
        StrictInt, Field(ge=1, le=4096, description="GPUs; at most the cluster's largest placement")
    ]
    user: Name | None = Field(None, description="defaults to the token's user; only admins may name another")
    priority: Priority | None = None
    env: Env | None = None
    working_dir: Annotated[str, StringConstraints(max_length=4096, pattern="^/")] | None = Field(
        None, description="absolute path; default: the user's home"
    )
    max_retries: Annotated[StrictInt, Field(ge=0, le=1000)] | None = Field(
        None, description="auto-retries after a failure; the site's default and limit apply"
    )
    time_limit: Duration | None = None
    name: Annotated[str, StringConstraints(max_length=200)] | None = None
    preemptible: StrictBool | None = None
    multi_node: StrictBool | None = Field(None, description="may span nodes even when it fits on one")
    ray: StrictBool | None = Field(
        None,
        description="a Ray program: its own Ray cluster on exactly its GPUs, which a bare ray.init() joins",
    )
    cpus: Annotated[float, Field(gt=0, le=4096)] | None = Field(
        None, description="CPUs per node (its cgroup's CPU time); default: the site's per GPU"
    )
    memory: Annotated[StrictInt, Field(ge=1)] | Annotated[str, StringConstraints(max_length=32)] | None = (
        Field(
            None,
            description="memory per node: bytes, or text such as 64G or 512M (Slurm's --mem); past it the "
            "job ends OUT_OF_MEMORY; default: the site's per GPU",
            examples=["64G"],
        )
    )
    retry_on_exit_codes: (
        Annotated[list[Annotated[StrictInt, Field(ge=0, le=255)]], Field(max_length=256)] | None
    ) = None
    runtime_env: dict[str, Any] | None = Field(
        None,
        description="Ray's runtime_env: working_dir and py_modules (packages uploaded to /api/packages), "
        "pip, uv (names with version specifiers, from the site's index), env_vars, excludes",
        examples=RUNTIME_ENV_EXAMPLES,
    )
    notify: (
        Annotated[str, StringConstraints(min_length=1, max_length=64)]
        | Annotated[list[Annotated[str, StringConstraints(max_length=16)]], Field(max_length=5)]
        | None
    ) = Field(
        None,
        description=(
            "Slurm's --mail-type words for the site's opt-in webhooks: BEGIN, END, FAIL, REQUEUE, ALL"
        ),
    )
    dependency: Annotated[str, StringConstraints(min_length=1, max_length=20_000)] | None = Field(
        None,
        description="Slurm's: afterok:ID[:ID...], afternotok:, afterany:, after: (started); several joined "
        "with ',' (all must hold). IDs are jobs, arrays or ARRAY_INDEX members",
    )
    array: Array | None = None
    test_only: StrictBool | None = Field(
        None, description="where and when it would start; nothing is enqueued"
    )


class PriorityChange(Body):
    priority: Priority


JobRef = Annotated[str, StringConstraints(min_length=1, max_length=80)]


class BulkRequest(Body):
    """Which jobs a bulk action touches, as `scancel`'s filters choose them: ids and
    `array` name a set, the rest filter it (all must hold); without ids or an array the
    filters apply to every job you may act on. At least one criterion is required."""

    ids: Annotated[list[JobRef], Field(max_length=10_000)] | None = Field(
        None, description="job ids (or unique prefixes), array members ARRAY_INDEX, or array ids"
    )
    array: JobRef | None = Field(None, description="every member of this array")
    user: Name | None = Field(None, description="only this user's jobs (yours unless you are an admin)")
    states: Annotated[list[StateName], Field(max_length=8)] | None = None
    name: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = Field(
        None, description="only jobs whose run id or name starts with this"
    )
    priority: Priority | None = Field(None, description="the new priority (action priority only)")


class DrainRequest(Body):
    reason: Annotated[str, StringConstraints(min_length=1, max_length=1000)] = Field(
        description="why (kept in the audit trail)"
    )
    gpus: Gpus | None = Field(None, description="GPU indices; default: the whole node")
    requeue: StrictBool = Field(False, description="stop and requeue their jobs now; default: let them end")


class UndrainRequest(Body):
    reason: Text = ""
    gpus: Gpus | None = None


class FaultRequest(Body):
    fault: Literal["xid", "ecc", "utilization", "silent", "resume"]
    gpu: Annotated[StrictInt, Field(ge=0, le=1023)] | None = None
    value: Annotated[Number, Field(ge=-1e9, le=1e9)] | None = None


class StartsChange(Body):
    enabled: StrictBool = Field(description="false: start nothing new (queue only); true: start again")


class TokenRequest(Body):
    # The contract test sends these too: a person's name, and accounts no token is made for.
    user: Name = Field(examples=["alice", "root", "daemon", "admin"])
    role: Literal["user", "admin", "reader"] = "user"
    expires: Duration | None = Field(None, description="e.g. 90d or 12h; default: never")


# --- Ray's Jobs API (ray.dashboard.modules.job.common.JobSubmitRequest) -----------------

RAY_METADATA = ("priority", "user", "time_limit", "max_retries", "name", "dependency", "ray")


def _whole(v: float | int | None, field: str) -> None:
    if v is not None and v != 0:
        raise ValueError(f"is not supported: gpuq reserves GPUs only (drop {field}, or set it to 0)")


class RaySubmitRequest(BaseModel):
    """What `ray job submit` and JobSubmissionClient.submit_job send."""

    model_config = ConfigDict(extra="forbid")

    entrypoint: Annotated[str, StringConstraints(min_length=1, max_length=MAX_COMMAND_CHARS)]
    submission_id: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = Field(
        None, description="also the idempotency key: a repeated submit returns the first job"
    )
    job_id: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = Field(
        None, description="deprecated by Ray in favour of submission_id"
    )
    runtime_env: dict[str, Any] | None = Field(
        None,
        description=(
            "working_dir, py_modules (packages uploaded to /api/packages), pip, uv, env_vars, excludes"
        ),
        examples=RUNTIME_ENV_EXAMPLES,
    )
    metadata: (
        Annotated[
            dict[
                Annotated[str, StringConstraints(max_length=64)],
                Annotated[str, StringConstraints(max_length=1000)],
            ],
            Field(max_length=16),
        ]
        | None
    ) = Field(None, description=f"gpuq reads {', '.join(RAY_METADATA)}")
    entrypoint_num_gpus: Annotated[Number, Field(ge=1, le=4096)] | None = Field(
        None, description="whole GPUs (default 1: gpuq queues GPU jobs)"
    )
    entrypoint_num_cpus: Number | None = None
    entrypoint_memory: StrictInt | None = None
    entrypoint_resources: (
        Annotated[dict[Annotated[str, StringConstraints(max_length=64)], Number], Field(max_length=16)] | None
    ) = None
    entrypoint_label_selector: (
        Annotated[
            dict[
                Annotated[str, StringConstraints(max_length=64)],
                Annotated[str, StringConstraints(max_length=256)],
            ],
            Field(max_length=16),
        ]
        | None
    ) = None

    @field_validator("submission_id", "job_id")
    @classmethod
    def _printable(cls, v):
        if v is not None and not v.isprintable():
            raise ValueError("must be printable characters")
        return v

    @field_validator("entrypoint_num_gpus")
    @classmethod
    def _gpus(cls, v):
        if v is not None and not float(v).is_integer():
            raise ValueError("must be a whole number of GPUs: gpuq does not share a GPU between jobs")
        return v

    @field_validator("entrypoint_num_cpus", "entrypoint_memory")
    @classmethod
    def _unreserved(cls, v, info):
        _whole(v, info.field_name)
        return v

    @field_validator("entrypoint_resources", "entrypoint_label_selector")
    @classmethod
    def _unplaced(cls, v, info):
        if v:
            raise ValueError(
                f"is not supported: gpuq places jobs on its GPU nodes itself (drop {info.field_name})"
            )
        return v

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, v):
        unknown = sorted(set(v or {}) - set(RAY_METADATA))
        if unknown:
            raise ValueError(f"{', '.join(unknown)} not read by gpuq (it reads {', '.join(RAY_METADATA)})")
        return v


# --- query strings ------------------------------------------------------------------------


async def strict_query(request: HTTPConnection) -> None:
    """Refuse query parameters a route does not take, or one given twice: `?limt=5`
    would otherwise be ignored and `?user=a&user=b` quietly read as b."""
    route = request.scope.get("route")
    if route is None or not hasattr(route, "dependant"):
        return
    known = _query_names(route.dependant)
    counts = Counter(k for k, _ in request.query_params.multi_items())
    errors = [
        {
            "field": k or "(empty name)",
            "message": "is not a parameter here"
            + (f" (it takes {', '.join(sorted(known))})" if known else " (it takes none)"),
        }
        for k in counts
        if k not in known
    ]
    errors += [
        {"field": k, "message": "is given more than once"} for k, n in counts.items() if n > 1 and k in known
    ]
    if errors:
        raise ApiError(422, errors)


def _query_names(dependant) -> set[str]:
    """The query parameters a route takes, its dependencies' included."""
    names = {p.alias for p in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names
