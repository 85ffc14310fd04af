"""The `gpuq` command line."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from orchestrator import __version__
from orchestrator.states import TABLE

app = typer.Typer(help="gpuq: a GPU job scheduler on Ray.", no_args_is_help=True, add_completion=False)
console = Console()


@app.command()
def version() -> None:
    """Print gpuq's version."""
    console.print(f"gpuq {__version__}")


@app.command()
def states() -> None:
    """Show the job state machine: every move, from where, to where, and why."""
    table = Table(title="gpuq job states")
    for col in ("move", "from", "to", "when"):
        table.add_column(col)
    for move in TABLE:
        table.add_row(move.trigger.value, ", ".join(sorted(s.value for s in move.sources)), move.target.value, move.why)
    console.print(table)


@app.command()
def up() -> None:
    """Start gpuq on this machine."""
    console.print(f"gpuq {__version__} is installed. Nothing runs yet: the job model, state machine and queue are a library so far.")
    console.print("Try: gpuq states")


@app.command()
def down() -> None:
    """Stop what `gpuq up` started."""
    console.print("Nothing to stop.")


if __name__ == "__main__":
    app()
