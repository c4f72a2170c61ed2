"""Commands that talk to a running service: submit, list, status, trials, report, cancel,
retry. They read ``DUALTUNE_URL`` and ``DUALTUNE_TOKEN`` (else the data dir's ``token``)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, cast

import typer

from dualtune.core.spec import SpecError, load_spec
from dualtune.core.states import SweepState
from dualtune.service.api.schemas import SweepStatus, TrialStatus
from dualtune.service.cli.console import app, console, fail, table_console
from dualtune.service.cli.views import SweepProgressBars, print_report, print_sweep, print_trials
from dualtune.service.client import Client, ClientError, default_token

SweepId = Annotated[str, typer.Argument(help="the sweep id (sw-...)")]
Url = Annotated[str | None, typer.Option("--url", help="default: $DUALTUNE_URL or :8000")]


@contextmanager
def session(url: str | None = None) -> Iterator[Client]:
    """A client for the service; a refused or failed call ends the command with its message
    (exit 1), never a traceback."""
    token = default_token()
    if token is None:
        raise fail(
            "no token: set DUALTUNE_TOKEN, or start the embedded stack with `dualtune up` "
            "(it writes ~/.dualtune/token)"
        )
    with Client(url, token) as c:
        try:
            yield c
        except ClientError as exc:
            raise fail(str(exc)) from None


def wait_and_report(c: Client, sweep_id: str) -> int:
    """Progress bars until the sweep is final, then the report table; the exit status."""
    with SweepProgressBars(console) as bars:
        sweep = c.wait(sweep_id, bars.update)
    print_sweep(sweep, console)
    print_report(c.report(sweep_id), table_console())
    return 0 if sweep.status == SweepState.SUCCEEDED else 1


@app.command()
def submit(
    spec: Annotated[Path, typer.Argument(help="sweep spec (YAML or JSON)")],
    wait: Annotated[bool, typer.Option("--wait", help="show progress, then the report")] = False,
    idempotency_key: Annotated[
        str | None, typer.Option(help="submitting again with the same key returns the same sweep")
    ] = None,
    url: Url = None,
) -> None:
    """Submit a sweep to the service."""
    try:
        loaded = load_spec(spec)
    except SpecError as exc:
        raise fail(f"invalid spec {spec}\n{exc}", 2) from None
    with session(url) as c:
        sweep = c.submit(loaded, idempotency_key)
        console.print(
            f"submitted [bold]{sweep.id}[/bold]: {sweep.total_trials} trials", highlight=False
        )
        if wait:
            raise typer.Exit(wait_and_report(c, sweep.id))


@app.command("list")
def list_sweeps(
    status: Annotated[str | None, typer.Option(help="only sweeps in this state")] = None,
    url: Url = None,
) -> None:
    """List your sweeps, newest first."""
    with session(url) as c:
        page = c.sweeps(cast("SweepStatus | None", status))  # the service checks the name
    for sweep in page.items:
        print_sweep(sweep, console)
    if not page.items:
        console.print("no sweeps")


@app.command()
def status(sweep_id: SweepId, url: Url = None) -> None:
    """A sweep's state, trial counts, best trial and MLflow link."""
    with session(url) as c:
        print_sweep(c.get(sweep_id), console)


@app.command()
def trials(
    sweep_id: SweepId,
    status: Annotated[str | None, typer.Option(help="only trials in this state")] = None,
    url: Url = None,
) -> None:
    """A sweep's trials: params, state, attempts, the selection metric, MLflow run."""
    with session(url) as c:
        sweep = c.get(sweep_id)
        rows = c.trials(sweep_id, cast("TrialStatus | None", status))
    print_trials(rows, table_console(), sweep.spec["selection"]["metric"])


@app.command()
def report(sweep_id: SweepId, url: Url = None) -> None:
    """Per method, the best trial and its tail metrics against ERM."""
    with session(url) as c:
        print_report(c.report(sweep_id), table_console())


@app.command()
def cancel(sweep_id: SweepId, url: Url = None) -> None:
    """Stop a sweep's driver; unfinished trials become cancelled."""
    with session(url) as c:
        print_sweep(c.cancel(sweep_id), console)


@app.command()
def retry(
    sweep_id: SweepId,
    wait: Annotated[bool, typer.Option("--wait", help="show progress, then the report")] = False,
    url: Url = None,
) -> None:
    """Re-run the failed, diverged and cancelled trials of a finished sweep."""
    with session(url) as c:
        print_sweep(c.retry(sweep_id), console)
        if wait:
            raise typer.Exit(wait_and_report(c, sweep_id))


@app.command()
def logs(
    sweep_id: SweepId,
    tail: Annotated[int, typer.Option(help="last lines")] = 200,
    url: Url = None,
) -> None:
    """The output of a sweep's driver (its latest launch)."""
    with session(url) as c:
        sys.stdout.write(c.logs(sweep_id, tail))
