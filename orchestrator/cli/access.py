"""`gpuq` commands about who may do what, for admins: tokens (create, list, revoke) and
the audit trail of every change. Through the REST API, like every other command."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer

from orchestrator.cli.jobs import JSON_OPT, _client, _run, console, table

token_app = typer.Typer(
    help="Admin: API tokens (create, list, revoke); changes apply at once.", no_args_is_help=True
)


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(t)) if t else ""


@token_app.command("create")
def token_create(
    user: Annotated[str, typer.Argument(help="the gpuq user the token is for")],
    role: Annotated[str, typer.Option(help="user, admin or reader (read-only, e.g. Prometheus)")] = "user",
    expires: Annotated[str | None, typer.Option(help="lifetime, e.g. 90d or 12h (default: never)")] = None,
    as_json: JSON_OPT = False,
) -> None:
    """Make a token. It is printed once, alone on the last line: keep it; gpuq keeps only its hash."""
    out = _run(lambda: _client().post("/tokens", {"user": user, "role": role, "expires": expires}))
    if as_json:
        print(json.dumps(out))
        return
    until = f", expires {_when(out['expires_at'])} UTC" if out["expires_at"] else ""
    console.print(f"token {out['id']} for {out['user']} (role {out['role']}{until}):", highlight=False)
    print(out["token"])


@token_app.command("list")
def token_list(as_json: JSON_OPT = False) -> None:
    """Every token: id, user, role, created, expiry, last use (never the secret)."""
    out = _run(lambda: _client().get("/tokens"))["tokens"]
    if as_json:
        print(json.dumps(out))
        return
    t = table("id", "user", "role", "created (UTC)", "by", "expires (UTC)", "last used (UTC)")
    for e in out:
        expires = "[red]expired[/red]" if e["expired"] else (_when(e["expires_at"]) or "never")
        t.add_row(
            e["id"],
            e["user"],
            e["role"],
            _when(e["created_at"]),
            e.get("created_by") or "",
            expires,
            _when(e["last_used_at"]) or "never",
        )
    console.print(t)


@token_app.command("revoke")
def token_revoke(token_id: Annotated[str, typer.Argument(help="the token's id (gpuq token list)")]) -> None:
    """Revoke a token: refused from the next request on."""
    out = _run(lambda: _client().request("DELETE", f"/tokens/{token_id}"))
    console.print(f"revoked token {out['revoked']} of {out['user']} ({out['role']})")


def register(app: typer.Typer) -> None:
    app.add_typer(token_app, name="token")

    @app.command()
    def webhooks(limit: int = 50, as_json: JSON_OPT = False) -> None:
        """Admin: recent notification deliveries (delivered, failed, dropped), newest first."""
        out = _run(lambda: _client().get("/webhooks/deliveries", limit=limit))
        if as_json:
            print(json.dumps(out))
            return
        t = table("time (UTC)", "webhook", "event", "delivery", "result")
        for d in out["deliveries"]:
            t.add_row(
                time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(d["at"])),
                d["webhook"],
                d["event"],
                d["delivery"][:8],
                d["result"],
            )
        console.print(t)
        waiting = ", ".join(f"{name}: {n}" for name, n in out["waiting"].items() if n)
        console.print(f"waiting to be delivered: {waiting or 'none'}")

    @app.command()
    def audit(
        limit: int = 50,
        user: Annotated[str | None, typer.Option(help="changes made by this user")] = None,
        action: Annotated[
            str | None,
            typer.Option(
                help="submit, cancel, hold, release, priority, drain, undrain, token-create, token-revoke"
            ),
        ] = None,
        since: Annotated[str | None, typer.Option(help="how far back: 7d, 24h")] = None,
        as_json: JSON_OPT = False,
    ) -> None:
        """Admin: the audit trail, newest first: who changed what, and when."""
        out = _run(lambda: _client().get("/audit", limit=limit, user=user, action=action, since=since))[
            "events"
        ]
        if as_json:
            print(json.dumps(out))
            return
        t = table("time (UTC)", "who", "action", "target", "detail")
        for e in out:
            detail = ", ".join(f"{k}={v}" for k, v in e["detail"].items() if v is not None)
            t.add_row(
                time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e["time"])),
                e["who"],
                e["action"],
                e["target"],
                detail,
            )
        console.print(t)
