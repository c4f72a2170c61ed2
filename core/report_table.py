"""The report as terminal tables: per method, the best trial and its tail metrics vs ERM,
then each method's Pareto front of the selection metric against the constraint metric."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

COLUMNS: tuple[tuple[str, str], ...] = (
    ("train/loss_mean", "train mean"),
    ("train/cvar_0.1", "train CVaR₀.₁"),
    ("train/loss_max", "train max"),
    ("train/feasible_frac", "train feasible"),
    ("val/loss_mean", "val mean"),
    ("val/cvar_0.1", "val CVaR₀.₁"),
    ("val/accuracy", "val acc"),
)


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.4g}"


def _better(direction: str) -> str:
    return "lower is better" if direction == "min" else "higher is better"


def _bound_text(bound: dict[str, Any] | None) -> str:
    if not bound:
        return ""
    sides = [f"≥ {bound['min']:g}" if bound.get("min") is not None else ""]
    sides.append(f"≤ {bound['max']:g}" if bound.get("max") is not None else "")
    return " ".join(side for side in sides if side)


def pareto_table(pareto: dict[str, Any]) -> Table:
    """Each method's front (the report's ``pareto``): its trials in ascending constraint
    metric, with both metrics."""
    x, y = pareto["x"], pareto["y"]
    bound = _bound_text(x.get("bound"))
    title = f"Pareto fronts: {y['metric']} against {x['metric']}" + (
        f" (feasible: {bound})" if bound else ""
    )
    table = Table(title=title, title_justify="left")
    table.add_column("method", style="bold")
    table.add_column("trial")
    table.add_column(f"{x['metric']} ({_better(x['direction'])})", justify="right")
    table.add_column(f"{y['metric']} ({_better(y['mode'])})", justify="right")
    for entry in pareto["methods"]:
        points = {p["trial_id"]: p for p in entry["points"]}
        if not entry["front"]:
            table.add_row(entry["method"], "no trial with both metrics", "—", "—")
            continue
        for position, trial_id in enumerate(entry["front"]):
            point = points[trial_id]
            params = ", ".join(f"{k}={v}" for k, v in point["params"].items())
            table.add_row(
                entry["method"] if position == 0 else "",
                escape(trial_id) + (f" [dim]{escape(params)}[/dim]" if params else ""),
                _fmt(point["x"]),
                _fmt(point["y"]),
            )
    return table


def render_report(report: dict[str, Any], console: Console | None = None) -> None:
    """The best-trial table, the trial counts, and the fronts (when the report has them)."""
    console = console or Console()
    counts = report["trial_counts"]
    sel = report["selection"]
    bounds = ", ".join(
        f"{k} {'≥ ' + str(b['min']) if b.get('min') is not None else ''}"
        f"{' ' if b.get('min') is not None and b.get('max') is not None else ''}"
        f"{'≤ ' + str(b['max']) if b.get('max') is not None else ''}"
        for k, b in sel.get("subject_to", {}).items()
    )
    title = f"{report['name']} — best per method by {sel['metric']} ({sel['mode']})" + (
        f" subject to {bounds}" if bounds else ""
    )
    table = Table(title=title, title_justify="left")
    table.add_column("method", style="bold")
    table.add_column("best trial")
    for _, header in COLUMNS:
        table.add_column(header, justify="right")
    erm = next((m for m in report["methods"] if m["method"] == "erm" and m["best"]), None)
    for entry in report["methods"]:
        best, shown = entry["best"], entry["best"] or entry["best_infeasible"]
        if shown is None:
            table.add_row(entry["method"], "no finished trial", *["—"] * len(COLUMNS))
            continue
        params = ", ".join(f"{k}={v}" for k, v in shown["params"].items())
        label = shown["trial_id"] + (f"\n{params}" if params else "")
        if best is None:
            label += "\n[red]met no selection bound[/red]"
        if shown.get("status") == "stopped" and shown.get("epochs") is not None:
            label += f"\nstopped at epoch {int(shown['epochs'])}"
        cells = []
        for key, _ in COLUMNS:
            value = shown["metrics"].get(key)
            cell = _fmt(value)
            if (erm is not None and entry is not erm and value is not None and "loss" in key) or (
                erm is not None and entry is not erm and "cvar" in key and value is not None
            ):
                ref = erm["best"]["metrics"].get(key)
                if ref:
                    cell += f" ({value / ref:.2f}×)"
            cells.append(cell)
        table.add_row(entry["method"], label, *cells)
    console.print(table)
    console.print(
        f"trials: {counts.get('succeeded', 0)} succeeded, {counts.get('stopped', 0)} stopped, "
        f"{counts.get('diverged', 0)} diverged, {counts.get('failed', 0)} failed, "
        f"{counts.get('cancelled', 0)} cancelled"
        + ("   (× = ratio to ERM's best)" if erm else ""),
        highlight=False,
    )
    for line in best_feasible_lines(report) + compute_lines(report):
        console.print(line, highlight=False)
    if report.get("pareto"):
        console.print(pareto_table(report["pareto"]))


def best_feasible_lines(report: Mapping[str, Any]) -> list[str]:
    """Each method's best trial's best feasible evaluation, where it is not its last."""
    metric = report["selection"]["metric"]
    lines = []
    for entry in report["methods"]:
        best = entry["best"]
        earlier = best and best.get("best_feasible")
        if not earlier or earlier["epoch"] == best.get("epochs"):
            continue
        value = earlier["metrics"].get(metric)
        lines.append(
            f"{entry['method']}: its best feasible evaluation was epoch {earlier['epoch']} "
            f"({metric} {_fmt(value)}, last {_fmt(best['metrics'].get(metric))})"
        )
    return lines


def compute_lines(report: Mapping[str, Any]) -> list[str]:
    """What early stopping saved (nothing is said of a sweep without it)."""
    compute = report.get("compute")
    if not compute or not compute.get("early_stopping"):
        return []
    share = compute["share"]
    return [
        f"early stopping: {compute['epochs_run']} of {compute['epochs_asked']} epochs run"
        + (f" ({100 * share:.0f} %)" if share is not None else "")
        + f", {compute['stopped']} trials stopped"
    ]
