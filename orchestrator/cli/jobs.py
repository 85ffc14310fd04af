"""`gpuq` commands for researchers: submit, queue, jobs, show, logs, cancel, hold,
release, priority, status, top, nodes. They talk only to the REST API. Formatted, the
file runs over 400 lines: one short function per command, found by its name.

Exit codes scripts can rely on: 0 done; 1 refused by gpuq (bad input, not yours, not
found, not allowed in this state); 3 gpuq unreachable or unavailable; `submit --wait`
exits with the job's own exit code (1 if it failed without one, e.g. a time limit).
"""

from __future__ import annotations

import json
import sys
import time
from typing import Annotated

import typer
from rich.console import Console

from orchestrator.cli.client import ApiRefused, ApiUnavailable, Client
from orchestrator.cli.clusters import ConfigError
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
from orchestrator.core.durations import format_duration
from orchestrator.core.sizes import format_size

console = Console(width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True, soft_wrap=True)  # a message in a pipe or a log stays one line
STATE_COLOURS = {
    "queued": "yellow",
    "held": "magenta",
    "scheduled": "cyan",
    "allocating": "cyan",
    "running": "green",
    "preempted": "yellow",
    "completed": "blue",
    "failed": "red",
    "cancelled": "dim",
}
PAGE = 1 << 20
JSON_OPT = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]


def table(*columns, **options):
    """A rich Table, imported when first made: a command that prints none (status,
    submit, whoami) does not pay the 4 ms its import costs."""
    from rich.table import Table

    return Table(*columns, **options)


def _client() -> Client:
    """The API this command was pointed at (cli/clusters.py); a config that cannot say
    which is a usage error (exit 2), not an outage."""
    try:
        return Client()
    except ConfigError as e:
        err.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from None


def _run(fn):
    """Call the API; turn its refusals into a message and an exit code, never a traceback."""
    try:
        return fn()
    except ApiRefused as e:
        hint = " (sign in with: gpuq login URL)" if e.status == 401 else ""
        err.print(f"[red]refused ({e.status}):[/red] {e}{hint}")
        raise typer.Exit(1) from None
    except ApiUnavailable as e:
        err.print(f"[red]unavailable:[/red] {e}")
        raise typer.Exit(3) from None


def _grouped(by_node: dict[str, str]) -> dict[str, list[str]]:
    """Nodes by what they say, so that a cluster of like nodes reads as one line."""
    out: dict[str, list[str]] = {}
    for node, said in by_node.items():
        out.setdefault(said, []).append(node)
    return out


def _state(s: str) -> str:
    return f"[{STATE_COLOURS.get(s, 'white')}]{s}[/]"


def _ago(t: float | None) -> str:
    return "" if not t else format_duration(max(0.0, time.time() - t))


def register(app: typer.Typer) -> None:
    @app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def submit(
        ctx: typer.Context,
        gpus: GPUS_OPT = 1,
        priority: PRIORITY_OPT = "normal",
        time_limit: TIME_OPT = None,
        retries: RETRIES_OPT = None,
        run_id: RUN_ID_OPT = None,
        user: Annotated[
            str | None, typer.Option(help="submit as this user (admins only; default: your token's user)")
        ] = None,
        env: ENV_OPT = None,
        workdir: WORKDIR_OPT = None,
        working_dir: WORKING_DIR_OPT = None,
        runtime_env_json: Annotated[
            str | None,
            typer.Option(
                "--runtime-env-json",
                help="Ray's runtime_env as JSON: working_dir, py_modules, pip, uv, env_vars, excludes",
            ),
        ] = None,
        runtime_env_file: Annotated[
            str | None, typer.Option("--runtime-env", help="Ray's runtime_env from a YAML or JSON file")
        ] = None,
        array: Annotated[
            str | None, typer.Option(help="a job per index: 10, 0-9 or 1,3,5 (GPUQ_ARRAY_INDEX)")
        ] = None,
        notify: Annotated[
            str | None,
            typer.Option(
                "--notify",
                help="tell the site's opt-in webhooks: BEGIN, END, FAIL, REQUEUE, ALL (as --mail-type)",
            ),
        ] = None,
        dependency: DEPENDENCY_OPT = None,
        ray: RAY_OPT = False,
        cpus: CPUS_OPT = None,
        mem: MEM_OPT = None,
        test_only: Annotated[
            bool, typer.Option("--test-only", help="where and when it would start; submits nothing")
        ] = False,
        wait: Annotated[
            bool, typer.Option("--wait", help="wait for the job and exit with its exit code")
        ] = False,
        parsable: Annotated[
            bool,
            typer.Option(
                "--parsable", help="print only the job id (the array's id for an array), as sbatch --parsable"
            ),
        ] = False,
        as_json: JSON_OPT = False,
    ) -> None:
        """Submit a command: gpuq submit --gpus 4 --priority high --time 4h -- python train.py"""
        body = job_body(ctx.args, gpus, priority, time_limit, retries, run_id, user, env, workdir, cpus, mem)
        renv = runtime_env(runtime_env_json, runtime_env_file, working_dir)
        body.update(
            {
                k: v
                for k, v in (
                    ("dependency", dependency),
                    ("ray", ray),
                    ("notify", notify),
                    ("test_only", test_only),
                )
                if v
            }
        )
        if array:
            body["array"] = int(array) if array.isdigit() else array
        client = _client()
        if renv:
            body["runtime_env"] = _run(lambda: uploaded(client, renv))
        out = _run(lambda: client.post("/queue/submit", body))
        if as_json:
            console.print_json(json.dumps(out))
        elif parsable:
            print(out["array"]["id"] if "array" in out else out.get("job_id", ""))
        elif test_only:
            when = out.get("estimated_start")
            at = time.strftime("%a %H:%M", time.localtime(when)) if when else "unknown"
            console.print(
                f"would start now on {out['placement']}"
                if out["would_start"]
                else f"would wait: {out['reason']}: {out['message']} (estimated start {at})"
            )
            return
        elif "array" in out:
            console.print(
                f"submitted an array of {out['array']['count']} jobs; first {out['job_id']}, "
                f"position {out['queue_position']}"
            )
        else:
            console.print(
                f"submitted [bold]{out['job_id']}[/bold] ({body['run_id']}), position "
                f"{out['queue_position']} in line"
            )
        if wait:
            job = _wait(client, out["job_id"])
            code = job.get("exit_code")
            raise typer.Exit(0 if job["state"] == "completed" else (code if code else 1))

    @app.command()
    def queue(as_json: JSON_OPT = False, limit: int = 100) -> None:
        """The line: position, job, user, GPUs, priority, why it waits, estimated start."""
        out = _run(lambda: _client().get("/queue", limit=limit))
        jobs = out["jobs"]
        if as_json:
            console.print_json(json.dumps(out))
            return
        listed = sum(1 for j in jobs if j["position"] is not None)
        shown = f" (first {listed:,} shown)" if listed < out["total"] else ""
        held = f", {out['held']:,} held" if out["held"] else ""
        t = table(title=f"gpuq queue: {out['total']:,} waiting{shown}{held}")
        for col in ("#", "id", "run id", "user", "GPUs", "priority", "waiting", "reason", "estimated start"):
            t.add_column(col)
        for j in jobs:
            est = j.get("estimated_start")
            t.add_row(
                str(j["position"] or "-"),
                j["id"][:8],
                j["run_id"],
                j["user"],
                str(j["gpu_count"]),
                j["priority_name"],
                _ago(j["submitted_at"]),
                f"{j['reason']}: {j['message']}",
                time.strftime("%a %H:%M", time.localtime(est)) if est else "",
            )
        console.print(t)

    @app.command()
    def jobs(
        state: str | None = None, user: str | None = None, limit: int = 50, as_json: JSON_OPT = False
    ) -> None:
        """Jobs, newest first (filter with --state, --user)."""
        out = _run(lambda: _client().get("/jobs", state=state, user=user, limit=limit))
        if as_json:
            console.print_json(json.dumps(out))
            return
        shown = f", first {len(out['jobs'])} shown" if len(out["jobs"]) < out["total"] else ""
        t = table(title=f"gpuq jobs ({out['total']:,}{shown})")
        for col in ("id", "run id", "user", "state", "GPUs", "placement", "age", "exit"):
            t.add_column(col)
        for j in out["jobs"]:
            t.add_row(
                j["id"][:8],
                j["run_id"],
                j["user"],
                _state(j["state"]),
                str(j["gpu_count"]),
                j["placement"],
                _ago(j["submitted_at"]),
                "" if j["exit_code"] is None else str(j["exit_code"]),
            )
        console.print(t)

    @app.command()
    def show(job_id: str, as_json: JSON_OPT = False) -> None:
        """One job: details and its event history."""
        j = _run(lambda: _client().get(f"/jobs/{job_id}"))
        if as_json:
            console.print_json(json.dumps(j))
            return
        console.print(
            f"[bold]{j['id']}[/bold]  {j['run_id']}  {_state(j['state'])}  user {j['user']}  "
            f"{j['gpu_count']} GPUs  priority {j['priority_name']}"
        )
        if j.get("private"):  # another user's job: its command and environment are theirs
            console.print("command: (visible to its owner and admins)")
        else:
            console.print(f"command: {j['spec']['command']}")
            if j["spec"].get("runtime_env"):
                console.print(f"runtime env: {json.dumps(j['spec']['runtime_env'])}")
        if j["placement"]:
            # One numbering everywhere (events, the web page, metrics): the node's own.
            console.print(
                f"placement: {j['placement']}  (the nodes' GPU indices, as NVML numbers them and as "
                "they are in the job's CUDA_VISIBLE_DEVICES)"
            )
        limits = [
            f"{j['spec']['cpus']:g} CPUs" if j["spec"].get("cpus") else "",
            f"{format_size(j['spec']['memory'])} memory" if j["spec"].get("memory") else "",
        ]
        console.print(f"limits: {', '.join(filter(None, limits)) or 'the site defaults'} per node")
        if j.get("ray_cluster"):
            console.print(
                f"Ray program: its own Ray cluster, head {j['ray_cluster']['head'] or '(not started)'}, no "
                "dashboard"
            )
        if j["failure_reason"]:
            console.print(f"failure: {j['failure_reason']} (exit code {j['exit_code']})")
        t = table(title="events")
        for col in ("time", "from", "to", "why"):
            t.add_column(col)
        for e in j["events"]:
            t.add_row(
                time.strftime("%H:%M:%S", time.localtime(e["time"])),
                e["from_state"] or "",
                _state(e["to_state"]),
                e["reason"],
            )
        console.print(t)

    @app.command()
    def logs(
        job_id: str,
        follow: Annotated[bool, typer.Option("--follow", "-f")] = False,
        attempt: int | None = None,
        rank: int = 0,
        tail: int | None = None,
    ) -> None:
        """A job's output (every attempt's, a line between them, unless --attempt names
        one); -f follows it until the job ends."""
        client = _client()
        if not follow:

            def pages() -> None:  # all of it as it is now: the API answers PAGE bytes at a time
                offset = 0
                while True:
                    page = client.get(
                        f"/jobs/{job_id}/logs",
                        attempt=attempt,
                        rank=rank,
                        tail=tail,
                        offset=offset or None,
                        limit=PAGE,
                    )
                    sys.stdout.write(page["data"])
                    if (
                        tail is not None or page["offset"] - offset < PAGE - 3
                    ):  # short: the end (3: a cut character)
                        return
                    offset = page["offset"]

            _run(pages)
            return

        def copy() -> None:  # the API's follow stream (serve_app/follow.py), to the job's end
            for chunk in client.stream(
                f"/jobs/{job_id}/logs", attempt=attempt, rank=rank, tail=tail, follow="true"
            ):
                sys.stdout.buffer.write(chunk)  # the job's bytes as they are
                sys.stdout.buffer.flush()

        _run(copy)

    @app.command()
    def status(as_json: JSON_OPT = False) -> None:
        """Cluster and queue at a glance (GET /orchestrator/status)."""
        s = _run(lambda: _client().get("/orchestrator/status"))
        if as_json:
            console.print_json(json.dumps(s))
            return
        r, q = s["resource_summary"], s["queue_summary"]
        util = r["allocated_gpus"] / r["total_gpus"] if r["total_gpus"] else 0
        d = s.get("details", {})
        out = {why: d.get(f"{why}_gpus", 0) for why in ("down", "unhealthy", "drained")}
        why = (
            "; out of service: " + ", ".join(f"{n} {w}" for w, n in out.items() if n)
            if any(out.values())
            else ""
        )
        if d.get("down_nodes"):
            why += f" (node{'s' if len(d['down_nodes']) > 1 else ''} down: {', '.join(d['down_nodes'])})"
        for node, at in (d.get("fencing") or {}).items():
            why += (
                f"\n{node} is fencing: its jobs may still run there, out of reach; they are requeued at "
                f"{time.strftime('%H:%M:%S', time.localtime(at))} (in {max(0, at - time.time()):.0f} s)"
            )
        console.print(
            f"GPUs: {r['total_gpus']} total, {r['available_gpus']} available, {r['allocated_gpus']} "
            "allocated "
            f"({util:.0%}){why}"
        )
        console.print(
            f"jobs: {q['queued']} queued, {q['running']} running, {q['completed']} completed, {q['failed']} "
            "failed"
        )
        busy = d.get("busy_while_waiting")
        if busy and busy.get("utilization_while_waiting") is not None:
            console.print(busy["text"], highlight=False)
        install = s.get("details", {}).get("install")
        if install:
            colour = "green" if install["mode"] == "multi-user" else "yellow"
            console.print(f"[{colour}]{install['mode']} install[/{colour}]: {install['message']}")
        details = s.get("details", {})
        for contained, nodes in _grouped(details.get("containment") or {}).items():
            colour = "green" if contained.startswith("cgroup") else "yellow"
            console.print(f"[{colour}]containment[/{colour}] ({', '.join(nodes)}): {contained}")
        if details.get("starting_jobs") is False:
            console.print(
                "[yellow]starting no jobs[/yellow]: submissions are queued but nothing starts "
                "(an admin stopped starts, or start_jobs = false); resume with "
                'PUT /orchestrator/starts {"enabled": true}'
            )
        store = details.get("store") or {}
        if store.get("writable") is False:
            console.print(
                f"[red]the job store cannot write[/red]: {store.get('error')}; changes are refused "
                "until it can (running jobs go on; their ends are recorded then)"
            )
        if details.get("records_set_aside"):
            console.print(
                f"[red]{details['records_set_aside']} job record(s) set aside[/red] at the last start: "
                "see gpuq events"
            )

    @app.command()
    def top(
        once: Annotated[bool, typer.Option("--once", help="print one frame and exit")] = False,
        interval: float = 2.0,
    ) -> None:
        """A live view of cluster, GPUs, active jobs and the line (Ctrl-C to quit)."""
        from rich.live import Live

        client = _client()
        if once:
            console.print(_run(lambda: _top_view(client)))
            return
        with Live(_run(lambda: _top_view(client)), console=console, screen=False, auto_refresh=False) as live:
            try:
                while True:
                    time.sleep(interval)
                    live.update(_run(lambda: _top_view(client)), refresh=True)
            except KeyboardInterrupt:
                pass

    @app.command()
    def nodes(as_json: JSON_OPT = False) -> None:
        """Every node and GPU: free, or which job and user hold it."""
        out = _run(lambda: _client().get("/resources"))
        if as_json:
            console.print_json(json.dumps(out))
            return
        for node in out["nodes"]:
            cells = []
            for g in node["gpus"]:
                util = f" {g['telemetry']['utilization']:.0%}" if g.get("telemetry") else ""
                if g["state"] == "free":
                    cells.append(f"[green]{g['index']}:free[/]")
                elif g["state"] == "allocated":
                    idle = " IDLE" if g.get("idle") else ""
                    cells.append(f"[yellow]{g['index']}:{g['run_id']}({g['user']}){util}{idle}[/]")
                else:
                    cells.append(f"[red]{g['index']}:{g['state']}[/]")
            tel = node.get("telemetry") or {}
            console.print(
                f"[bold]{node['node']}[/bold] {node['free']}/{node['total']} free  " + "  ".join(cells)
            )
            down = node.get("down")
            if down and node.get("state") == "fencing" and down.get("requeue_at"):
                at = down["requeue_at"]
                console.print(
                    f"  [red]fencing[/red]: {down['reason']}; its jobs may still run there, requeued at "
                    f"{time.strftime('%H:%M:%S', time.localtime(at))} (in {max(0, at - time.time()):.0f} s)"
                )
            elif down:
                console.print(f"  [red]down[/red]: {down['reason']}")
            console.print(f"  telemetry: {tel.get('detail', 'none')}", style="dim")


def _top_view(client: Client):
    """The web page's dashboard in a terminal: cluster, queue, GPU grid, active jobs, the line."""
    from rich.console import Group
    from rich.panel import Panel

    s = client.get("/orchestrator/status")
    nodes = client.get("/resources")["nodes"]
    running = client.get("/jobs", state="running", limit=50)["jobs"]
    waiting = client.get("/queue", limit=10)["jobs"]
    r, q = s["resource_summary"], s["queue_summary"]
    util = r["allocated_gpus"] / r["total_gpus"] if r["total_gpus"] else 0.0
    head = (
        f"Cluster  total {r['total_gpus']}  available {r['available_gpus']}  allocated {r['allocated_gpus']} "
        " "
        f"util {util:.0%}      Jobs  queued {q['queued']}  running {q['running']}  completed "
        f"{q['completed']}  "
        f"failed {q['failed']}"
    )
    grid = []
    for node in nodes:
        cells = " ".join(
            "[green]■[/]"
            if g["state"] == "free"
            else "[yellow]■[/]"
            if g["state"] == "allocated"
            else "[red]■[/]"
            for g in node["gpus"]
        )
        grid.append(f"{node['node']:<12} {cells}")
    active = table(title="Active jobs", expand=True)
    for col in ("run id", "user", "GPUs", "placement", "runtime"):
        active.add_column(col)
    for j in running:
        active.add_row(j["run_id"], j["user"], str(j["gpu_count"]), j["placement"], _ago(j["started_at"]))
    line = table(title="Queue (head)", expand=True)
    for col in ("#", "run id", "user", "GPUs", "priority", "reason"):
        line.add_column(col)
    for j in waiting:
        line.add_row(
            str(j["position"] or "-"),
            j["run_id"],
            j["user"],
            str(j["gpu_count"]),
            j["priority_name"],
            j["reason"],
        )
    return Group(
        Panel(head, title="gpuq"),
        Panel("\n".join(grid), title="GPUs (green free, yellow allocated, red out)"),
        active,
        line,
    )


def _wait(client: Client, job_id: str) -> dict:
    # A failure that will be retried goes back to QUEUED in the same step, so a job seen
    # in a final state stays there.
    while True:
        job = _run(lambda: client.get(f"/jobs/{job_id}"))
        if job["state"] in ("completed", "failed", "cancelled"):
            return job
        time.sleep(0.3)
