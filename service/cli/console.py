"""The typer app and the consoles every command prints to."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

app = typer.Typer(
    name="dualtune",
    help="Constrained-learning sweeps on Ray Tune with MLflow tracking.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
errors = Console(stderr=True)


def table_console() -> Console:
    """A console for tables: the terminal's width, or 200 columns when the output is piped
    (a table cut at 80 columns wraps every cell; the table is the point)."""
    return Console(width=None if sys.stdout.isatty() else 200)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``message`` on stderr (no traceback) and return the exit to raise."""
    errors.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)
