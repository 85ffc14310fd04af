"""`gpuq login`, `logout`, `whoami` and `clusters`: a user's own clusters and tokens, kept
in their config file (cli/clusters.py says where, and which one a command uses)."""

from __future__ import annotations

import json
import sys
import time
from typing import Annotated

import typer

from orchestrator.cli import clusters
from orchestrator.cli.client import ApiRefused, ApiUnavailable, Client
from orchestrator.cli.jobs import JSON_OPT, _client, _run, console, err, table
from orchestrator.core.durations import format_duration


def _config_or_exit() -> dict:
    try:
        return clusters.load()
    except clusters.ConfigError as e:
        err.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from None


def _read_token(url: str) -> str:
    """The token: typed at a hidden prompt on a terminal, else the first line of stdin
    (`gpuq login URL < token-file`): never an argument, which `ps` and shell history keep."""
    if sys.stdin.isatty():
        return typer.prompt(f"Token for {url} (an admin makes one: gpuq token create USER)", hide_input=True)
    return sys.stdin.readline().strip()


def _expiry(expires_at: float | None) -> str:
    if expires_at is None:
        return "never expires"
    left = expires_at - time.time()
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(expires_at))
    if left <= 0:
        return f"expired {when}"
    return (
        f"expires {when} (in {int(left // 86400)} days)"
        if left >= 2 * 86400
        else f"expires {when} (in {format_duration(left)})"
    )


def register(app: typer.Typer) -> None:
    @app.command()
    def login(
        url: Annotated[
            str | None, typer.Argument(help="the cluster's API (default: GPUQ_URL, else this machine's)")
        ] = None,
        name: Annotated[
            str | None, typer.Option(help="what to call this cluster (default: its host's name)")
        ] = None,
    ) -> None:
        """Sign in to a cluster: check a token against its API and keep both in
        ~/.config/gpuq/config.toml (mode 600), as the default cluster.

        The token is asked for at a hidden prompt, or read from stdin:
        `gpuq login http://gmi-head:8000 < token-file`."""
        config = _config_or_exit()
        known = config.get("clusters", {})
        if url is None:
            url = clusters.resolve().url if name not in known else known[name]["url"]
        url = url.rstrip("/")
        token = _read_token(url)
        if not token:
            err.print("[red]error:[/red] no token given (type it at the prompt, or pipe it on stdin)")
            raise typer.Exit(2)
        try:
            me = Client(url, token).get("/whoami")
        except ApiRefused as e:
            err.print(f"[red]refused ({e.status}):[/red] {url} did not take this token: {e}; nothing stored")
            raise typer.Exit(1) from None
        except ApiUnavailable as e:
            err.print(f"[red]unavailable:[/red] {e}; nothing stored")
            raise typer.Exit(3) from None
        if name is None:
            same = [n for n, c in known.items() if c["url"].rstrip("/") == url]
            name = same[0] if same else _free_name(clusters.name_for(url), known)
        known[name] = {"url": url, "token": token, "user": me["user"]}
        config["clusters"], config["default"] = known, name
        path = clusters.save(config)
        console.print(
            f"Signed in to [bold]{name}[/bold] ({url}) as {me['user']} ({me['role']}); the token "
            f"{_expiry(me.get('expires_at'))}. Kept in {path}, the default cluster now."
        )

    @app.command()
    def logout(
        name: Annotated[
            str | None, typer.Argument(help="the cluster to forget (default: the default)")
        ] = None,
    ) -> None:
        """Forget a cluster's token (the token stays valid until an admin revokes it)."""
        config = _config_or_exit()
        known = config.get("clusters", {})
        name = name or config.get("default")
        if name not in known:
            err.print(f"[red]error:[/red] not signed in to {name or 'any cluster'}")
            raise typer.Exit(1)
        del known[name]
        if config.get("default") == name:
            config.pop("default")
            if known:
                config["default"] = sorted(known)[0]
        clusters.save(config)
        then = f"; the default is now {config['default']}" if config.get("default") else ""
        console.print(f"Forgot {name}'s token{then}.")

    @app.command()
    def whoami(as_json: JSON_OPT = False) -> None:
        """Who this command runs as: the user and role of its token, the token's expiry,
        and which cluster (and why that one)."""
        client = _client()
        target = client.target
        assert target is not None  # resolved: _client() names no URL
        me = _run(lambda: client.get("/whoami"))
        if as_json:
            out = {**me, "cluster": target.cluster, "url": target.url, "token_from": target.token_from}
            console.print_json(json.dumps(out))
            return
        console.print(f"{me['user']} ({me['role']})", highlight=False)
        cluster = f"{target.cluster} " if target.cluster else ""
        console.print(f"cluster: {cluster}{target.url} (from {target.url_from})", highlight=False)
        console.print(
            f"token:   {me['token_id']}, {_expiry(me.get('expires_at'))} (from {target.token_from})",
            highlight=False,
        )

    @app.command("clusters")
    def list_clusters(
        use: Annotated[str | None, typer.Option("--use", help="make this cluster the default")] = None,
        as_json: JSON_OPT = False,
    ) -> None:
        """The clusters you are signed in to; * marks the default (gpuq --cluster NAME
        picks another for one command)."""
        config = _config_or_exit()
        known = config.get("clusters", {})
        if use is not None:
            if use not in known:
                err.print(f"[red]error:[/red] no cluster {use!r}; signed in to: {', '.join(known) or 'none'}")
                raise typer.Exit(1)
            config["default"] = use
            clusters.save(config)
        if as_json:
            shown = {n: {k: v for k, v in c.items() if k != "token"} for n, c in known.items()}
            console.print_json(json.dumps({"default": config.get("default"), "clusters": shown}))
            return
        if not known:
            console.print("Not signed in to any cluster: gpuq login URL")
            return
        t = table(box=None)
        for col in ("", "name", "url", "user"):
            t.add_column(col)
        for n, c in sorted(known.items()):
            t.add_row("*" if n == config.get("default") else "", n, c["url"], c.get("user", ""))
        console.print(t)


def _free_name(base: str, known: dict) -> str:
    name, n = base, 2
    while name in known:
        name, n = f"{base}-{n}", n + 1
    return name
