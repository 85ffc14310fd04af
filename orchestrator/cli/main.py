"""The `gpuq` command line."""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console

from orchestrator import __version__
from orchestrator.cli import clusters
from orchestrator.core.errors import GpuqError

# Typer's own shell completion: `gpuq --install-completion` (bash, zsh, fish, PowerShell).
app = typer.Typer(help="gpuq: a GPU job scheduler on Ray.", no_args_is_help=True)
# Tables stay readable when piped into a file or a CI log (rich assumes 80 columns there).
console = Console(width=None if sys.stdout.isatty() else 120)


def _cluster_names(incomplete: str) -> list[str]:
    """`gpuq --cluster <TAB>`: the names in the user's config, read locally."""
    try:
        return [n for n in clusters.load().get("clusters", {}) if n.startswith(incomplete)]
    except clusters.ConfigError:
        return []


@app.callback()
def _root(
    cluster: Annotated[
        str | None,
        typer.Option(
            "--cluster",
            metavar="NAME",
            help="talk to this cluster of your config (gpuq login, gpuq clusters), not the default",
            autocompletion=_cluster_names,
        ),
    ] = None,
) -> None:
    """gpuq: a GPU job scheduler on Ray."""
    clusters.choose(cluster)


@app.command()
def version() -> None:
    """Print gpuq's version."""
    console.print(f"gpuq {__version__}")


@app.command()
def states() -> None:
    """Show the job state machine: every move, from where, to where, and why."""
    from rich.table import Table

    from orchestrator.core.states import TABLE

    table = Table(title="gpuq job states")
    for col in ("move", "from", "to", "when"):
        table.add_column(col)
    for move in TABLE:
        table.add_row(
            move.trigger.value, ", ".join(sorted(s.value for s in move.sources)), move.target.value, move.why
        )
    console.print(table)


@app.command()
def up(
    simulate: Annotated[
        bool | None,
        typer.Option(
            "--simulate/--real",
            help="simulated 8-GPU nodes, or this host's GPUs (default: by what NVML finds)",
        ),
    ] = None,
    address: Annotated[
        str | None,
        typer.Option(help="attach to this running Ray cluster instead of starting one (cluster.yaml does)"),
    ] = None,
    hosts: Annotated[
        bool,
        typer.Option(
            "--hosts",
            help="each simulated node a host of its own: a network namespace on a bridge to the head, "
            "with its own data dir and /tmp (needs root)",
        ),
    ] = False,
    link_commands: Annotated[
        bool,
        typer.Option(
            "--link-commands",
            help="link gpuq and ray into /usr/local/bin, for every account on this machine (as root)",
        ),
    ] = False,
) -> None:
    """Start a local Ray cluster and the orchestrator on it.

    Run again on a running cluster, it repairs and upgrades without touching running
    jobs: simulated nodes that are gone start again, and the orchestrator, node agents
    and API are replaced if this checkout's code (or the site config) differs."""
    with _needs_server("up"):
        from orchestrator.deploy import localcluster
        from orchestrator.host.siteconfig import load_config, store_path

    try:
        cfg = load_config()
        started = localcluster.up(
            config=cfg.model_dump(),
            simulate=simulate,
            attach=address,
            separate=hosts,
            link_dir=Path("/usr/local/bin") if link_commands else None,
        )
    except (GpuqError, RuntimeError, ConnectionError) as e:
        _fail(str(e))
    kind = "simulated" if started["simulated"] else "real"
    console.print(f"[green]gpuq is up[/green] — Ray at {started['address']} (namespace gpuq)")
    apart = ", a host of its own (network namespace)" if started.get("separate_hosts") else ""
    for node, gpus in started["nodes"].items():
        again = " (started again)" if node in started.get("repaired", []) else ""
        console.print(f"  node {node}: {gpus} {kind} GPUs{apart}{again}")
    console.print(
        f"  orchestrator: actor gpuq-orchestrator (detached), {started['orchestrator']}; store "
        + store_path(cfg)
    )
    console.print(f"  web page: [bold]{started['api']}/[/bold]")
    console.print(
        f"  REST API: [bold]{started['api']}[/bold]  (OpenAPI at {started['api']}/docs; Prometheus "
        f"metrics at {started['api']}/metrics)"
    )
    console.print(f"  admin token: {started['admin_token_file']}  (more: gpuq token create USER)")
    client = f"Ray Client on port {started['ray_client']}" if started.get("ray_client") else "no Ray Client"
    console.print(
        f"  Ray: token authentication on (token {started['ray_token_file']}, the service's alone), {client}"
    )
    py = started["job_python"]
    console.print(
        f"  Ray jobs (--ray): job Python {py['path']}, every user may run it"
        if py["ray_ready"]
        else f"  [yellow]Ray jobs (--ray) are refused[/yellow]: {py['why_not']}"
    )
    contained = started["containment"]
    console.print(
        f"  containment: {contained}"
        if contained.startswith("cgroup")
        else f"  [yellow]containment[/yellow]: {contained}; jobs' processes are found by descent and tags "
        "only, "
        "and --cpus/--mem are not enforced"
    )
    install = started["install"]
    colour = "green" if install["mode"] == "multi-user" else "yellow"
    console.print(f"  [{colour}]{install['mode']} install[/{colour}]: {install['message']}")
    _say_commands(started["commands"])
    console.print("Stop with: gpuq down")


def _say_commands(offered: dict) -> None:
    """Whether the accounts on this machine can run the client (deploy/commands.py)."""
    where = offered["bin"]
    if not offered["multi_user"]:
        console.print(f"  the gpuq command: {where}/gpuq (this account's; a laptop: pip install gpuq)")
    elif offered["why_not"]:
        console.print(
            f"  [yellow]other accounts cannot run gpuq[/yellow]: {offered['why_not']} (put the checkout "
            "where every account may enter it, e.g. /opt/gpuq, and run scripts/up there)"
        )
    elif offered["linked"]:
        console.print(f"  every account runs gpuq and ray: {', '.join(offered['linked'])} -> {where}")
    else:
        console.print(
            f"  every account may run {where}/gpuq and {where}/ray; scripts/up --link-commands puts them "
            "in /usr/local/bin"
        )
    for note in offered["kept"]:
        console.print(f"  [yellow]{note}[/yellow]")


@app.command()
def down(
    force: Annotated[
        bool, typer.Option("--force", help="stop even if jobs are running (they are killed)")
    ] = False,
    drain: Annotated[
        bool, typer.Option("--drain", help="stop starting jobs, wait for the running ones to end, then stop")
    ] = False,
) -> None:
    """Stop the orchestrator and the local Ray cluster that `gpuq up` started.

    Refuses while jobs are running unless told what to do with them: --drain waits for
    them (new submissions are still queued, and start after the next `gpuq up`),
    --force kills them (queued jobs are kept either way)."""
    from orchestrator.cli.client import ApiRefused, ApiUnavailable, Client

    with _needs_server("down"):
        from orchestrator.deploy import localcluster

    if not localcluster.is_up():
        console.print("Nothing to stop: gpuq is not up.")
        return
    client = Client(localcluster.api_url(), clusters.local_token())
    try:
        active = _active_jobs(client)
        if active and drain:
            client.request("PUT", "/orchestrator/starts", json={"enabled": False})
            console.print(
                f"Starting no new jobs; waiting for {active} to end (Ctrl-C to stop waiting; "
                "gpuq keeps running)"
            )
            while active := _active_jobs(client):
                console.print(f"  {active} still running", highlight=False)
                time.sleep(5)
    except (ApiRefused, ApiUnavailable) as e:
        if not force:
            _fail(f"cannot tell whether jobs are running ({e}); gpuq down --force stops anyway")
        active = 0
    if active and not force:
        _fail(
            f"{active} job(s) are running or starting; gpuq down would kill them. Use --drain to let them "
            "finish first, or --force to kill them (queued jobs are kept either way)."
        )
    localcluster.down()
    console.print("gpuq is down (queued jobs are kept in the store and come back with gpuq up).")


def _active_jobs(client) -> int:
    """Jobs that hold or are about to hold GPUs: what `ray stop` would kill."""
    states = client.get("/orchestrator/status")["details"]["states"]
    return sum(states.get(s, 0) for s in ("scheduled", "allocating", "running", "preempted"))


@app.command()
def simulate(
    trace: Annotated[Path, typer.Option(help="CSV trace: Philly format, or any CSV with --columns")],
    vc: Annotated[str | None, typer.Option(help="Philly virtual cluster to replay (e.g. 11cb48)")] = None,
    columns: Annotated[
        str | None, typer.Option(help="generic CSV: submit=COL,duration=COL,gpus=COL[,user=COL,priority=COL]")
    ] = None,
    nodes: Annotated[int, typer.Option(min=1, help="nodes in the simulated cluster")] = 2,
    gpus_per_node: Annotated[int, typer.Option(min=1, help="GPUs per node")] = 8,
    policy: Annotated[
        list[str] | None, typer.Option(help="default, fifo, greedy or easy; repeat to compare")
    ] = None,
    reservation_depth: Annotated[
        int | None,
        typer.Option(min=0, help="reservations for the top N waiting jobs (default and easy only)"),
    ] = None,
    time_limits: Annotated[
        str,
        typer.Option(help="exact (true durations) or coarse (rounded up to 1h,2h,4h,8h,1d,3d,7d,14d,30d)"),
    ] = "exact",
    json_out: Annotated[Path | None, typer.Option("--json", help="write the results as JSON here")] = None,
    plot: Annotated[Path | None, typer.Option(help="write a PNG: utilization over time and wait CDF")] = None,
) -> None:
    """Replay a job trace through gpuq's own policy with a virtual clock."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with _needs_server("simulate"):
        from orchestrator.core.policy import PolicyConfig, PolicyName
        from orchestrator.sim import report
        from orchestrator.sim.simulator import simulate as run_simulation
        from orchestrator.sim.traces import load_trace, parse_columns

    names = policy or ["default"]
    try:
        configs = []
        for name in names:
            try:
                kind = PolicyName(name)
            except ValueError:
                raise GpuqError(
                    f"--policy {name!r}: use one of {', '.join(p.value for p in PolicyName)}"
                ) from None
            overrides = {}
            if reservation_depth is not None and kind in (PolicyName.DEFAULT, PolicyName.EASY):
                overrides["reservation_depth"] = reservation_depth
            configs.append(PolicyConfig.preset(kind, **overrides))
        if time_limits not in ("exact", "coarse"):
            raise GpuqError(f"--time-limits {time_limits!r}: use exact or coarse")
        jobs = load_trace(trace, vc=vc, columns=parse_columns(columns) if columns else None)
    except GpuqError as e:
        _fail(str(e))
    if not jobs:
        _fail(f"no jobs in {trace}" + (f" for --vc {vc}" if vc else ""))
    sizes = {f"node-{i + 1}": gpus_per_node for i in range(nodes)}
    results = []
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
        disable=not sys.stderr.isatty(),
    ) as progress:
        for cfg in configs:
            task = progress.add_task(f"replaying {len(jobs):,} jobs with {cfg.name.value}", total=len(jobs))

            def advance(done: int, total: int, task=task) -> None:
                progress.update(task, completed=done)

            results.append(run_simulation(jobs, cfg, sizes, limits=time_limits, progress=advance))
    console.print(report.table(results))
    if json_out:
        report.write_json(results, json_out)
        console.print(f"wrote {json_out}")
    if plot:
        report.write_plot(results, nodes * gpus_per_node, plot)
        console.print(f"wrote {plot}")


@contextlib.contextmanager
def _needs_server(command: str):
    """Imports of the server's packages, which a client-only install (`pip install gpuq`)
    lacks: a command that needs them says which extra to install, not a traceback."""
    try:
        yield
    except ModuleNotFoundError as e:
        _fail(
            f"gpuq {command} needs gpuq's server packages, which this client-only install lacks "
            f"(no module {e.name!r}): pip install 'gpuq[server]'"
        )


def _fail(message: str) -> NoReturn:
    from rich.markup import escape  # a message is plain text: "gpuq[server]" is not markup

    Console(stderr=True, soft_wrap=True).print(f"[red]error:[/red] {escape(message)}")
    raise typer.Exit(2)


from orchestrator.cli import jobs as cli_jobs  # noqa: E402  (the commands researchers use)

cli_jobs.register(app)
from orchestrator.cli import changes as cli_changes  # noqa: E402  (cancel, hold, release, priority: one or many)

cli_changes.register(app)
from orchestrator.cli import run as cli_run  # noqa: E402  (gpuq run: srun's counterpart)

cli_run.register(app)

from orchestrator.cli import fleet as cli_fleet  # noqa: E402  (usage, and what admins do to the fleet)

cli_fleet.register(app)

from orchestrator.cli import access as cli_access  # noqa: E402  (tokens and the audit trail, for admins)

cli_access.register(app)

from orchestrator.cli import account as cli_account  # noqa: E402  (login, whoami: a user's own clusters)

cli_account.register(app)


def main() -> None:
    """The `gpuq` command. Typer turns every registered command into a click command on
    each run: about 100 ms for gpuq's forty on this machine, most of a shell tool's
    budget. A run needs one, so only the one named is built; `gpuq`, `gpuq --help`, a
    misspelt name and shell completion get the whole app (its help, its "did you mean",
    every name to complete)."""
    import copy
    import os

    name = _command_name_in(sys.argv)
    commands = [c for c in app.registered_commands if _command_name(c) == name]
    groups = [g for g in app.registered_groups if g.name == name]
    if (not commands and not groups) or "_GPUQ_COMPLETE" in os.environ:
        app()
        return
    lean = copy.copy(app)  # keeps the root callback (--cluster), so one command stays `gpuq NAME ...`
    lean.registered_commands, lean.registered_groups = commands, groups
    lean()


def _command_name_in(argv: list[str]) -> str:
    """The command's name: the first argument after the global options (--cluster NAME)."""
    i = 1
    while i < len(argv) and argv[i].startswith("--cluster"):
        i += 1 if "=" in argv[i] else 2
    return argv[i] if i < len(argv) else ""


def _command_name(info) -> str:
    return info.name or typer.main.get_command_name(info.callback.__name__)  # typer's own naming


if __name__ == "__main__":
    main()
