"""`gpuq` commands about the fleet: usage accounting for everyone; drain, undrain,
events and fault injection (simulated nodes only) for admins. Through the REST API."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer

from orchestrator.cli.jobs import JSON_OPT, _client, _run, console, err, table


def _target(text: str) -> tuple[str, list[int] | None]:
    """`gmi-node-2` (every GPU) or `gmi-node-2:3` or `gmi-node-2:0,1`."""
    node, _, gpus = text.partition(":")
    if not gpus:
        return node, None
    try:
        return node, [int(g) for g in gpus.split(",")]
    except ValueError:
        err.print(f"[red]refused:[/red] {text!r}: give NODE or NODE:GPU[,GPU...], e.g. gmi-node-2:3")
        raise typer.Exit(1) from None


def register(app: typer.Typer) -> None:
    @app.command()
    def usage(
        since: Annotated[str, typer.Option(help="how far back: 7d, 24h, 30m")] = "7d",
        user: str | None = None,
        by_day: Annotated[bool, typer.Option("--by-day", help="one row per day and user")] = False,
        as_json: JSON_OPT = False,
    ) -> None:
        """GPU-hours per user (and per day) since a time back from now."""
        out = _run(lambda: _client().get("/usage", since=since, user=user))
        if as_json:
            console.print_json(json.dumps(out))
            return
        if by_day:
            t = table("day (UTC)", "user", "GPU-hours", title=f"GPU usage, last {since}")
            for d in out["days"]:
                t.add_row(d["day"], d["user"], f"{d['gpu_hours']:.2f}")
        else:
            t = table("user", "GPU-hours", "share", "jobs", title=f"GPU usage, last {since}")
            for u in out["users"]:
                t.add_row(u["user"], f"{u['gpu_hours']:.2f}", f"{u['share']:.0%}", str(u["jobs"]))
        console.print(t)
        console.print(f"total: {out['total_gpu_hours']:.2f} GPU-hours")

    @app.command()
    def drain(
        target: Annotated[str, typer.Argument(help="NODE or NODE:GPU[,GPU]")],
        reason: Annotated[str, typer.Option(help="why (kept in the audit trail)")],
        requeue: Annotated[bool, typer.Option(help="stop and requeue the jobs on them now")] = False,
    ) -> None:
        """Admin: take GPUs out of service. Their jobs run to the end unless --requeue."""
        node, gpus = _target(target)
        out = _run(
            lambda: _client().post(
                f"/nodes/{node}/drain", {"gpus": gpus, "reason": reason, "requeue": requeue}
            )
        )
        jobs = (
            f"; jobs {'requeued' if requeue else 'left to finish'}: {', '.join(out['jobs'])}"
            if out["jobs"]
            else ""
        )
        console.print(f"{node}: GPUs {','.join(map(str, out['gpus']))} drained{jobs}")

    @app.command()
    def undrain(
        target: Annotated[str, typer.Argument(help="NODE or NODE:GPU[,GPU]")], reason: str = ""
    ) -> None:
        """Admin: put drained or unhealthy GPUs back in service."""
        node, gpus = _target(target)
        out = _run(lambda: _client().post(f"/nodes/{node}/undrain", {"gpus": gpus, "reason": reason}))
        back = ",".join(map(str, out["returned"])) or "none (they were in service)"
        console.print(f"{node}: back in service: {back}")

    @app.command()
    def events(limit: int = 50, as_json: JSON_OPT = False) -> None:
        """The fleet's audit trail: drains, health findings, returns (newest first)."""
        out = _run(lambda: _client().get("/nodes/events", limit=limit))["events"]
        if as_json:
            console.print_json(json.dumps(out))
            return
        t = table("time (UTC)", "GPU", "action", "by", "reason", "job")
        for e in out:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e["time"]))
            where = e["node"] if e["gpu"] is None else f"{e['node']}:{e['gpu']}"
            t.add_row(when, where, e["action"], e["by"], e["reason"], e.get("job_id") or "")
        console.print(t)

    @app.command()
    def fault(
        target: Annotated[str, typer.Argument(help="NODE or NODE:GPU")],
        kind: Annotated[str, typer.Argument(help="xid, ecc, utilization, silent or resume")],
        value: Annotated[
            float | None, typer.Argument(help="the XID, error count or utilization (0-1)")
        ] = None,
    ) -> None:
        """Admin: inject a fault into a simulated node's telemetry (never a real one)."""
        node, gpus = _target(target)
        gpu = gpus[0] if gpus else None
        out = _run(
            lambda: _client().post(f"/nodes/{node}/faults", {"fault": kind, "gpu": gpu, "value": value})
        )
        console.print(out["result"])
