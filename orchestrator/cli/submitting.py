"""What `gpuq submit` and `gpuq run` share: their options and the body they make.

A job's limits (--cpus, --mem) are per node, as Slurm's --mem is; the site's per-GPU
defaults apply where they are not given.
"""

from __future__ import annotations

import json
import shlex
from typing import Annotated

import typer
from rich.console import Console

from orchestrator.cli.client import Client
from orchestrator.core.durations import parse_duration

err = Console(stderr=True, soft_wrap=True)  # a message in a pipe or a log stays one line

# The options `submit` and `run` share (module level, where typer resolves annotations).
GPUS_OPT = Annotated[int, typer.Option("--gpus", "-g", help="GPUs the job needs")]
PRIORITY_OPT = Annotated[str, typer.Option("--priority", "-p", help="low, normal, high, critical or 1-4")]
TIME_OPT = Annotated[str | None, typer.Option("--time", "-t", help="time limit: 90m, 4h, 2d, D-HH:MM:SS")]
RETRIES_OPT = Annotated[int | None, typer.Option("--retries", help="auto-retries after a failure")]
RUN_ID_OPT = Annotated[
    str | None, typer.Option("--run-id", help="your name for this run (default: the command's first word)")
]
ENV_OPT = Annotated[list[str] | None, typer.Option("--env", "-e", help="KEY=VALUE, repeatable")]
WORKDIR_OPT = Annotated[
    str | None, typer.Option(help="absolute working directory on the nodes (code already there)")
]
WORKING_DIR_OPT = Annotated[
    str | None,
    typer.Option(
        "--working-dir",
        help="a local directory: uploaded, and the job runs in it (as ray job submit --working-dir)",
    ),
]
RAY_OPT = Annotated[
    bool,
    typer.Option(
        "--ray", help="a Ray program: ray.init() joins a private Ray cluster on exactly the job's GPUs"
    ),
]
DEPENDENCY_OPT = Annotated[
    str | None,
    typer.Option("--dependency", "-d", help="afterok:ID[:ID...], afternotok:, afterany:, after: (as sbatch)"),
]
CPUS_OPT = Annotated[
    float | None, typer.Option("--cpus", help="CPUs per node, enforced (default: the site's per GPU)")
]
MEM_OPT = Annotated[
    str | None,
    typer.Option("--mem", help="memory per node, enforced: 64G, 512M (default: the site's per GPU)"),
]


def runtime_env(as_json: str | None, file: str | None, working_dir: str | None) -> dict | None:
    """The runtime env the flags describe, as Ray's `ray job submit` reads them: a JSON
    text or a YAML/JSON file, then --working-dir over its working_dir."""
    renv: dict = {}
    try:
        if as_json and file:
            raise ValueError("give --runtime-env-json or --runtime-env, not both")
        if as_json:
            renv = json.loads(as_json)
        elif file:
            import yaml  # only here: it costs a plain submit ~20 ms

            renv = yaml.safe_load(open(file).read())
        if not isinstance(renv, dict):
            raise ValueError("must be an object (Ray's runtime_env)")
    except (OSError, ValueError) as e:
        err.print(f"[red]{'--runtime-env-json' if as_json else '--runtime-env'}:[/red] {e}")
        raise typer.Exit(2) from None
    if working_dir:
        renv["working_dir"] = working_dir
    return renv or None


def uploaded(client: Client, renv: dict) -> dict:
    """Local code named by the runtime env, uploaded to the cluster (cli/packages.py)."""
    import importlib.util

    named = [renv.get("working_dir"), *(renv.get("py_modules") or [])]
    if not any(isinstance(p, str) and "://" not in p for p in named):
        return renv  # nothing local: URIs of code already on the cluster go as they are
    if importlib.util.find_spec("ray") is None:
        err.print(
            "[red]runtime_env:[/red] local code (working_dir, py_modules) is packed with Ray's own "
            "functions, as `ray job submit` packs it, and this client-only install has no Ray: "
            "pip install 'gpuq\\[upload]' adds it (Ray alone, not the server)"
        )
        raise typer.Exit(2)
    from orchestrator.cli.packages import upload_local_code

    try:
        return upload_local_code(client, renv)
    except (TypeError, ValueError) as e:  # Ray's packaging: no such directory, a bad archive
        err.print(f"[red]runtime_env:[/red] {e}")
        raise typer.Exit(2) from None


def job_body(
    args: list[str],
    gpus: int,
    priority: str,
    time_limit: str | None,
    retries: int | None,
    run_id: str | None,
    user: str | None,
    env: list[str] | None,
    workdir: str | None,
    cpus: float | None = None,
    mem: str | None = None,
) -> dict:
    """The submit body the common options describe (`submit` and `run`)."""
    # One argument is a command line as typed; several are quoted as the shell would
    # have received them (`-- bash -c "exit 7"`), like `ray job submit` does.
    command = args[0] if len(args) == 1 else shlex.join(args)
    if not command.strip():
        err.print(
            "[red]command:[/red] give the command after --, e.g. gpuq submit --gpus 2 -- python train.py"
        )
        raise typer.Exit(2)
    body: dict = {
        "command": command,
        "gpu_count": gpus,
        "priority": priority,
        "run_id": run_id or _default_run_id(args),
    }
    if user:
        body["user"] = user
    if time_limit:
        try:
            body["time_limit"] = parse_duration(time_limit)
        except ValueError as e:
            err.print(f"[red]--time:[/red] {e}")
            raise typer.Exit(2) from None
    if retries is not None:
        body["max_retries"] = retries
    if env:
        body["env"] = dict(e.split("=", 1) for e in env if "=" in e)
    if workdir:
        body["working_dir"] = workdir
    if cpus is not None:
        body["cpus"] = cpus
    if mem is not None:  # the API reads the unit (a bare number is MiB, as Slurm's --mem)
        body["memory"] = mem
    return body


def _default_run_id(args: list[str]) -> str:
    import re

    word = next((a for a in args if not a.startswith("-")), "job").split("/")[-1]
    return re.sub(r"[^A-Za-z0-9._-]", "-", word)[:64].lstrip("-._") or "job"
