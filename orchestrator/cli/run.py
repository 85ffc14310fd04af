"""`gpuq run`, like `srun`: submit, stream the job's output to the terminal as it is
written, and exit with the job's exit code.

One Ctrl-C cancels the job (its processes get TERM, the grace period, then KILL) and
says so; the output keeps coming until the job is gone, and gpuq run exits 130. A
second Ctrl-C stops waiting and says how to follow the job. Ctrl-C is a flag, not an
exception thrown into a read: the stream is never cut by it. While the job waits, one
status line (its reason and estimated start) is kept up to date on stderr, when stderr
is a terminal only.

The job's stdout and stderr arrive as one stream of bytes, written here as they are:
the supervisor writes both to one log on the node, in the order they were written, and
a retried job's attempts follow each other with gpuq's line between them. A stream
that is cut (the API restarted, the network) is resumed at the byte count already
written, for up to RESUME_FOR_S: nothing is repeated, nothing skipped.
"""

from __future__ import annotations

import signal
import sys
import threading
import time

import typer
from rich.console import Console

from orchestrator.cli.client import ApiRefused, ApiUnavailable
from orchestrator.cli.jobs import _client, _run
from orchestrator.cli.submitting import (
    CPUS_OPT,
    DEPENDENCY_OPT,
    ENV_OPT,
    GPUS_OPT,
    MEM_OPT,
    PRIORITY_OPT,
    RAY_OPT,
    RETRIES_OPT,
    RUN_ID_OPT,
    TIME_OPT,
    WORKDIR_OPT,
    WORKING_DIR_OPT,
    job_body,
    runtime_env,
    uploaded,
)

err = Console(stderr=True, highlight=False, soft_wrap=True)
WAITING = ("queued", "held", "scheduled", "allocating", "preempted")
INTERRUPTED = 130  # a shell's code for a command ended by SIGINT
TERMINAL = ("completed", "failed", "cancelled")
RESUME_FOR_S = 60.0


class Detached(Exception):
    """A second Ctrl-C: stop waiting, leave the job running."""


def register(app: typer.Typer) -> None:
    @app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def run(
        ctx: typer.Context,
        gpus: GPUS_OPT = 1,
        priority: PRIORITY_OPT = "normal",
        time_limit: TIME_OPT = None,
        retries: RETRIES_OPT = None,
        run_id: RUN_ID_OPT = None,
        env: ENV_OPT = None,
        workdir: WORKDIR_OPT = None,
        working_dir: WORKING_DIR_OPT = None,
        dependency: DEPENDENCY_OPT = None,
        ray: RAY_OPT = False,
        cpus: CPUS_OPT = None,
        mem: MEM_OPT = None,
    ) -> None:
        """Run a command on GPUs and wait, like srun: its output here, its exit code as
        gpuq's. Ctrl-C cancels it; a second Ctrl-C stops waiting."""
        body = job_body(ctx.args, gpus, priority, time_limit, retries, run_id, None, env, workdir, cpus, mem)
        if dependency:
            body["dependency"] = dependency
        if ray:
            body["ray"] = True
        renv = runtime_env(None, None, working_dir)
        if renv:
            body["runtime_env"] = _run(lambda: uploaded(_client(), renv))
        raise typer.Exit(_run(lambda: see_through(body)))


def see_through(body: dict) -> int:
    """Submit `body` and see the job through; the process's exit code."""
    job_id = _client().post("/queue/submit", body)["job_id"]
    done = threading.Event()
    if sys.stderr.isatty():
        threading.Thread(target=_status_line, args=(job_id, done), daemon=True).start()
    interrupts = [0]

    def on_sigint(signum, frame):  # noqa: ARG001
        interrupts[0] += 1
        if interrupts[0] > 1:
            raise Detached()
        threading.Thread(target=_cancel, args=(job_id, done), daemon=True).start()

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        job = _follow(job_id, done)
    except Detached:
        done.set()
        _clear_line()
        err.print(f"gpuq: detached; job {job_id} goes on. Follow it with: gpuq logs -f {job_id}")
        return INTERRUPTED
    finally:
        signal.signal(signal.SIGINT, previous)
        done.set()
    if job["state"] == "completed":
        return 0
    if job["state"] == "cancelled":
        return INTERRUPTED if interrupts[0] else 1
    err.print(f"gpuq: job {job_id} {job['state']}: {job.get('failure_reason') or 'no reason given'}")
    return job.get("exit_code") or 1


def _follow(job_id: str, done: threading.Event) -> dict:
    """Copy the job's output to stdout until it has ended; its last record."""
    written, lost_since = 0, None
    while True:
        try:
            for chunk in _client().stream(f"/jobs/{job_id}/logs", follow="true", offset=written or None):
                if not done.is_set():
                    done.set()
                    _clear_line()
                sys.stdout.buffer.write(chunk)
                sys.stdout.buffer.flush()
                written += len(chunk)
                lost_since = None
            job = _client().get(f"/jobs/{job_id}")
            if job["state"] in TERMINAL:
                return job
            # The stream ended before the job did (the API let it go): on from where it stopped.
        except ApiUnavailable:
            lost_since = lost_since or time.monotonic()
            if time.monotonic() - lost_since > RESUME_FOR_S:
                raise
            time.sleep(0.5)


def _cancel(job_id: str, done: threading.Event) -> None:
    done.set()
    _clear_line()
    try:
        _client().post(f"/jobs/{job_id}/cancel")
        err.print(f"gpuq: cancelling job {job_id} (Ctrl-C again to stop waiting)")
    except ApiRefused as e:  # it had ended already
        err.print(f"gpuq: {e}")
    except ApiUnavailable as e:
        err.print(f"gpuq: could not cancel job {job_id}: {e} (Ctrl-C again to stop waiting)")


def _status_line(job_id: str, done: threading.Event) -> None:
    """Why the job waits and until when, on one line of stderr, until it starts."""
    client = _client()
    while not done.is_set():
        try:
            job = client.get(f"/jobs/{job_id}")
        except (ApiRefused, ApiUnavailable):
            return
        if job["state"] not in WAITING:
            return
        why = job.get("pending") or {}
        when = why.get("estimated_start")
        eta = f", estimated start {time.strftime('%H:%M', time.localtime(when))}" if when else ""
        text = (
            f"gpuq: job {job_id[:8]} {job['state']}: {why.get('reason', '')} {why.get('message', '')}".strip()
        )
        if not done.is_set():
            sys.stderr.write(f"\r\x1b[2K{text[:150]}{eta}")
            sys.stderr.flush()
        done.wait(1.0)


def _clear_line() -> None:
    if sys.stderr.isatty():
        sys.stderr.write("\r\x1b[2K")
        sys.stderr.flush()
