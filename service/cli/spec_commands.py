"""Commands on specs: ``validate``, ``catalog``, and ``run`` (one sweep without the service).

They read specs here (no torch, no Ray). ``dualtune run`` hands the sweep to the worker's
own entry point (``python -m worker run``) in a child process, so the service package never
imports the training stack (ARCHITECTURE §2, §3.7).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from dualtune.core.catalog import CONSTRAINT_KINDS, METHODS, TASKS, plugin_errors
from dualtune.core.catalog.registry import DISTRIBUTION
from dualtune.core.spec import SpecError, SweepSpec, load_spec
from dualtune.service.cli.console import app, console, errors, table_console

SpecPath = Annotated[Path, typer.Argument(help="sweep spec (YAML or JSON)")]


def _load(path: Path) -> SweepSpec:
    try:
        return load_spec(path)
    except SpecError as exc:
        errors.print(f"[red]invalid spec {path}[/red]\n{exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


@app.command()
def validate(spec: SpecPath) -> None:
    """Check a spec and list the trials it expands to."""
    sweep = _load(spec)
    trials = sweep.trials()
    table = Table(title=f"{sweep.name}: {len(trials)} trials", title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("trial")
    table.add_column("method")
    table.add_column("params")
    for t in trials:
        params = ", ".join(f"{k}={v}" for k, v in t.params.items())
        table.add_row(str(t.index), t.trial_id, t.method, params)
    console.print(table)
    per_method = {m: sum(t.method == m for t in trials) for m in sweep.methods}
    console.print(
        "per method: " + ", ".join(f"{m} {n}" for m, n in per_method.items()), highlight=False
    )


@app.command()
def catalog() -> None:
    """List tasks, constraint kinds and methods, the plugins' sources, and the plugins that
    failed to load."""
    tasks = Table(title="tasks", title_justify="left")
    for col in ("name", "problem", "summary", "parameters"):
        tasks.add_column(col)
    for t in TASKS.values():
        params = ", ".join(
            f"{name} (required)"
            if field.is_required()
            else f"{name}={field.default!r}"
            if field.default_factory is None
            else f"{name}={field.default_factory()!r}"  # type: ignore[call-arg]
            for name, field in t.params.model_fields.items()
        )
        tasks.add_row(t.name, t.problem, t.summary, params)
    kinds = Table(title="constraint kinds", title_justify="left")
    for col in ("kind", "constraints", "multipliers"):
        kinds.add_column(col)
    for k in CONSTRAINT_KINDS.values():
        kinds.add_row(k.name, k.summary, k.multipliers)
    methods = Table(title="methods", title_justify="left")
    for col in ("method", "solves", "grid keys", "constraint kinds"):
        methods.add_column(col)
    for m in METHODS.values():
        methods.add_row(m.name, m.summary, ", ".join(m.grid_keys), ", ".join(m.kinds))
    tables = [tasks, kinds, methods]
    # dualtune's own entries all come from dualtune: only the plugins' sources are news.
    plugged = [
        (registry.group, name, registry.source(name))
        for registry in (TASKS, CONSTRAINT_KINDS)
        for name in registry
        if not registry.source(name).startswith(f"{DISTRIBUTION} ")
    ]
    if plugged:
        plugins = Table(title="from plugins", title_justify="left")
        for col in ("group", "name", "source"):
            plugins.add_column(col)
        for row in plugged:
            plugins.add_row(*row)
        tables.append(plugins)
    failed = plugin_errors()
    if failed:
        broken = Table(title="plugins that failed to load", title_justify="left")
        for col in ("group", "name", "source", "error"):
            broken.add_column(col)
        for e in failed:
            broken.add_row(e.group, e.name, e.source, e.error)
        tables.append(broken)
    out = table_console()
    for table in tables:
        out.print(table)


@app.command()
def run(
    spec: SpecPath,
    storage: Annotated[Path | None, typer.Option(help="Tune storage path")] = None,
    sweep_id: Annotated[str | None, typer.Option(help="default: derived from the spec")] = None,
    no_progress: Annotated[bool, typer.Option("--no-progress")] = False,
) -> None:
    """Run one sweep on local Ray and local MLflow, without the service."""
    _load(spec)  # fail fast, here, on a bad spec
    command = [sys.executable, "-m", "dualtune.worker", "run", str(spec)]
    if storage is not None:
        command += ["--storage", str(storage)]
    if sweep_id is not None:
        command += ["--sweep-id", sweep_id]
    if no_progress:
        command.append("--no-progress")
    # The driver takes this process's place (its pid, its terminal, Ctrl-C): nothing is
    # left here to wait for it and exit after it.
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, command)
