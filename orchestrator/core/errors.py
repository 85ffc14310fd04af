"""Errors a user can act on. Each carries a message meant to be shown as it is.

The API maps them to HTTP statuses (IllegalTransition → 409, JobNotFound → 404,
InvalidSpec and AmbiguousJobId → 422, Forbidden → 403, OverLimit → 429; any other GpuqError is the
service being unable to do it now → 503); the CLI prints the message without a stack
trace. An exception that is not a GpuqError is a bug: the API answers 500 with a
reference to the log, never the exception.
"""

from __future__ import annotations

from typing import Any


class GpuqError(Exception):
    """Base of every error gpuq raises on purpose."""


class IllegalTransition(GpuqError):
    """A job was asked to make a move its state does not allow. Nothing was changed."""

    def __init__(
        self, state: str, trigger: str, allowed: list[str], job_id: str | None = None, detail: str = ""
    ):
        self.state = state
        self.trigger = trigger
        self.allowed = allowed
        self.job_id = job_id
        self.detail = detail
        who = f"job {job_id}" if job_id else "a job"
        can = ", ".join(allowed) if allowed else "nothing (the job is finished)"
        msg = f"cannot {trigger} {who} in state {state}; from {state} it can: {can}"
        if detail:
            msg += f" ({detail})"
        super().__init__(msg)

    def __reduce__(self) -> tuple[type, tuple[Any, ...]]:  # crosses Ray's process boundary intact
        return (IllegalTransition, (self.state, self.trigger, self.allowed, self.job_id, self.detail))

    def for_job(self, job_id: str, detail: str = "") -> IllegalTransition:
        return IllegalTransition(self.state, self.trigger, self.allowed, job_id, detail)


class JobNotFound(GpuqError, KeyError):
    def __init__(self, job_id: str):
        self.job_id = job_id
        super().__init__(f"no job with id {job_id!r}")

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0])

    def __reduce__(self) -> tuple[type, tuple[Any, ...]]:
        return (JobNotFound, (self.job_id,))


class AmbiguousJobId(GpuqError):
    """A short job id that more than one job's id starts with."""

    def __init__(self, ref: str, matches: list[str], count: int | None = None):
        self.ref, self.matches, self.count = ref, matches[:5], count or len(matches)
        more = f" and {self.count - 5} more" if self.count > 5 else ""
        super().__init__(
            f"{ref!r} is the start of {self.count} job ids ({', '.join(self.matches)}{more}); "
            "give more of the id"
        )

    def __reduce__(self) -> tuple[type, tuple[Any, ...]]:
        return (AmbiguousJobId, (self.ref, self.matches, self.count))


class DuplicateJob(GpuqError):
    def __init__(self, job_id: str):
        self.job_id = job_id
        super().__init__(f"a job with id {job_id!r} is already known")

    def __reduce__(self) -> tuple[type, tuple[Any, ...]]:
        return (DuplicateJob, (self.job_id,))


class InvalidSpec(GpuqError):
    """A submitted job spec failed validation. `errors` lists (field, message) pairs."""

    def __init__(self, errors: list[tuple[str, str]]):
        self.errors = errors
        super().__init__("; ".join(f"{field}: {message}" for field, message in errors))

    def __reduce__(self) -> tuple[type, tuple[Any, ...]]:
        return (InvalidSpec, (self.errors,))


class Forbidden(GpuqError):
    """The caller lacks a right the request needs (403). `right` names it, so the user
    knows what to ask an admin for."""

    def __init__(self, right: str, message: str):
        self.right = right
        super().__init__(message)

    def __reduce__(self) -> tuple[type, tuple[Any, ...]]:
        return (Forbidden, (self.right, self.args[0]))


class OverLimit(GpuqError):
    """A per-user limit of the site would be passed (429): `limit` names its config key,
    `retry_after_s` says when trying again may help."""

    def __init__(self, limit: str, message: str, retry_after_s: float = 60.0):
        self.limit, self.retry_after_s = limit, retry_after_s
        super().__init__(message)

    def __reduce__(self) -> tuple[type, tuple[Any, ...]]:
        return (OverLimit, (self.limit, self.args[0], self.retry_after_s))
