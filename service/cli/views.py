"""How sweeps look in a terminal: a progress bar per trial state, tables of trials."""

from __future__ import annotations

import math
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from dualtune.core.report_table import render_report
from dualtune.core.states import TrialState
from dualtune.service.api.schemas import ReportPublic, SweepPublic, TrialPublic

COLOURS: dict[TrialState, str] = {
    TrialState.PENDING: "grey50",
    TrialState.RUNNING: "cyan",
    TrialState.SUCCEEDED: "green",
    TrialState.DIVERGED: "yellow",
    TrialState.STOPPED: "blue",
    TrialState.FAILED: "red",
    TrialState.CANCELLED: "magenta",
}
STATES = tuple(COLOURS)
"""The trial states in the order the progress bars show them."""


class SweepProgressBars:
    """One bar per trial state, filled to the share of trials in it."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("{task.description:>10}"),
            BarColumn(bar_width=40),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.tasks: dict[str, Any] = {}
        self.header = ""

    def __enter__(self) -> SweepProgressBars:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def update(self, sweep: SweepPublic) -> None:
        total = max(1, sweep.total_trials)
        counts = sweep.trial_counts
        if not self.tasks:
            for state in STATES:
                self.tasks[state] = self.progress.add_task(
                    f"[{COLOURS[state]}]{state}", total=total
                )
        for state in STATES:
            self.progress.update(self.tasks[state], completed=counts.get(state, 0), total=total)


def print_sweep(sweep: SweepPublic, console: Console) -> None:
    counts = ", ".join(f"{n} {s}" for s, n in sweep.trial_counts.items()) or "no trials"
    console.print(
        f"[bold]{sweep.id}[/bold] {sweep.name}: [bold]{sweep.status}[/bold] "
        f"({sweep.total_trials} trials: {counts})",
        highlight=False,
        soft_wrap=True,
    )
    if sweep.error:
        console.print(f"  error: {sweep.error}", highlight=False, soft_wrap=True)
    best = sweep.best_trial
    if best:
        console.print(
            f"  best trial: {best.trial_id} ({best.method})", highlight=False, soft_wrap=True
        )
    if sweep.mlflow.experiment_url:
        console.print(f"  MLflow: {sweep.mlflow.experiment_url}", highlight=False, soft_wrap=True)
    elif sweep.mlflow.parent_run_id:
        console.print(
            f"  MLflow parent run: {sweep.mlflow.parent_run_id}", highlight=False, soft_wrap=True
        )


def print_report(report: ReportPublic, console: Console) -> None:
    """The report table (the same as ``dualtune run`` prints)."""
    render_report(report.model_dump(mode="json"), console)


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.4g}"


def print_trials(trials: list[TrialPublic], console: Console, metric: str) -> None:
    table = Table(title=f"{len(trials)} trials", title_justify="left")
    for column in ("#", "trial", "method", "params", "status", "attempts", metric, "MLflow run"):
        table.add_column(column)
    for t in trials:
        params = ", ".join(f"{k}={v}" for k, v in t.params.items())
        status = f"[{COLOURS.get(t.status, 'white')}]{t.status}"
        table.add_row(
            str(t.position),
            t.trial_id,
            t.method,
            params,
            status,
            str(t.attempts),
            _fmt(t.metrics.get(metric)),
            t.mlflow_run_id or "—",
        )
    console.print(table)


__all__ = ["SweepProgressBars", "print_report", "print_sweep", "print_trials", "render_report"]
