"""Changing jobs, one or many: `cancel`, `hold`, `release`, `priority`.

One job by its id goes to the job's own route, with its own refusals ("cannot cancel
a completed job"). Anything more (several ids, an array id, Slurm-style filters) is one
bulk request: one pass and one commit in the orchestrator (head/bulk.py), answered
with how many changed and why the others did not.
"""

from __future__ import annotations

from typing import Annotated

import typer

from orchestrator.cli.jobs import _client, _run, _state, console

# Bulk selectors, as scancel's (-u, -t, -n): module level, where typer resolves annotations.
USER_OPT = Annotated[
    str | None, typer.Option("--user", "-u", help="only this user's jobs (yours unless admin)")
]
STATE_OPT = Annotated[
    list[str] | None, typer.Option("--state", "-t", help="only jobs in this state (repeatable)")
]
NAME_OPT = Annotated[
    str | None, typer.Option("--name", "-n", help="only jobs whose run id or name starts with this")
]
ARRAY_OPT = Annotated[str | None, typer.Option("--array", help="every member of this array")]
JOB_IDS = Annotated[list[str] | None, typer.Argument(help="job ids, ARRAY_INDEX members, array ids")]


def register(app: typer.Typer) -> None:
    for verb in ("cancel", "hold", "release"):
        app.command(name=verb)(_change(verb))

    @app.command()
    def priority(
        args: Annotated[
            list[str],
            typer.Argument(
                help="[IDS...] LEVEL: job ids, members or arrays, then low, normal, high, critical or 1-4"
            ),
        ],
        user: USER_OPT = None,
        state: STATE_OPT = None,
        name: NAME_OPT = None,
        array: ARRAY_OPT = None,
    ) -> None:
        """Change waiting jobs' priority: gpuq priority ID high | gpuq priority --name sweep low"""
        _act("priority", args[:-1], user, state, name, array, args[-1])


def _change(verb: str):
    """The `cancel`, `hold` or `release` command (a closure: typer would show a
    parameter carrying the verb as an option)."""

    def action(
        job_ids: JOB_IDS = None,
        user: USER_OPT = None,
        state: STATE_OPT = None,
        name: NAME_OPT = None,
        array: ARRAY_OPT = None,
    ) -> None:
        _act(verb, job_ids or [], user, state, name, array)

    action.__doc__ = {
        "cancel": "Cancel jobs (running ones are stopped): "
        "gpuq cancel ID | ARRAY_ID | --user alice --state queued",
        "hold": "Hold queued jobs: gpuq hold ID | ARRAY_ID | --name sweep",
        "release": "Put held jobs back in line: gpuq release ID | ARRAY_ID | --user alice",
    }[verb]
    return action


def _act(verb: str, ids: list[str], user, states, name, array, level: str | None = None) -> None:
    """One job by its id: the job's own route, with its own refusals (`cannot cancel a
    completed job`). Anything more (several ids, an array, a filter): one bulk call."""
    client = _client()
    if len(ids) == 1 and not (user or states or name or array) and not ids[0].startswith("arr"):
        if verb == "priority":
            j = _run(lambda: client.patch(f"/jobs/{ids[0]}", {"priority": level}))
            console.print(f"{j['id']}: priority {j['priority_name']}")
        else:
            j = _run(lambda: client.post(f"/jobs/{ids[0]}/{verb}"))
            console.print(f"{j['id']}: {_state(j['state'])}")
        return
    body = {
        k: v
        for k, v in {
            "ids": ids or None,
            "user": user,
            "states": states,
            "name": name,
            "array": array,
            "priority": level,
        }.items()
        if v
    }
    out = _run(lambda: client.post(f"/jobs/{verb}", body))
    left = "; ".join(f"{n:,} {why}" for why, n in out["unchanged"].items())
    console.print(
        f"{verb}: {out['changed']:,} of {out['matched']:,} matching jobs"
        + (f" (unchanged: {left})" if left else "")
    )
    if not out["changed"] and out["matched"]:
        raise typer.Exit(1)
