"""The sweep's experiment and parent run, and the report logged on it."""

from __future__ import annotations

import json
import math
import re
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from dualtune.core.mlflow_links import VIEW_TAG
from dualtune.core.reporting import FINAL_STATES, TrialOutcome
from dualtune.core.spec.metric_names import BEST_FEASIBLE
from dualtune.worker.tracking import plots
from dualtune.worker.tracking.resilient import ResilientClient, artifact_root_for
from dualtune.worker.tracking.run_names import grid_key_order

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
"""Without it MLflow's UI (3.x) infers the kind and opens a sweep's experiment on its GenAI
traces page; with it, on the runs table."""


def ensure_experiment(client: ResilientClient, name: str) -> str | None:
    """The experiment named after the sweep, created if missing, tagged as model training
    (``EXPERIMENT_KIND``, also on an experiment created before the tag existed); ``None``
    if MLflow cannot be reached (the sweep still runs; its trials log what they can)."""

    def get_or_create(c: MlflowClient) -> str:
        found = c.get_experiment_by_name(name)
        if found is None:
            root = artifact_root_for(client.tracking_uri)
            location = f"{root}/{re.sub(r'[^A-Za-z0-9._-]+', '_', name)}" if root else None
            try:
                return str(
                    c.create_experiment(
                        name,
                        artifact_location=location,
                        tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND},
                    )
                )
            except Exception:  # another driver created it first
                found = c.get_experiment_by_name(name)
                if found is None:
                    raise
        experiment_id = str(found.experiment_id)
        if found.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
            c.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return experiment_id

    ok, experiment_id = client.call(get_or_create)
    return experiment_id if ok else None


def parent_run_filter(sweep_id: str) -> str:
    """The MLflow search that finds a sweep's parent run (ARCHITECTURE §3.5)."""
    return f"tags.`dualtune.sweep_id` = '{sweep_id}' and tags.`dualtune.role` = 'sweep'"


def ensure_parent_run(
    client: ResilientClient,
    experiment_id: str,
    *,
    sweep_id: str,
    sweep_name: str,
    params: dict[str, str],
) -> str | None:
    """The sweep's parent run, found again by its ``dualtune.sweep_id`` tag on a resume."""

    def find_or_create(c: MlflowClient) -> str:
        found = c.search_runs(
            [experiment_id],
            filter_string=parent_run_filter(sweep_id),
            max_results=1,
        )
        if found:
            run_id = str(found[0].info.run_id)
            if found[0].info.status != "RUNNING":
                c.update_run(run_id, status="RUNNING")
            return run_id
        run = c.create_run(
            experiment_id,
            tags={"dualtune.sweep_id": sweep_id, "dualtune.role": "sweep"},
            run_name=sweep_name,
        )
        run_id = str(run.info.run_id)
        c.log_batch(run_id, params=[Param(k, v) for k, v in sorted(params.items())])
        return run_id

    ok, run_id = client.call(find_or_create)
    return run_id if ok else None


BEST_PREFIX = "best/"
"""The parent's copy of the best feasible trial's metrics: ``best/val/loss_mean``, …"""
TRIALS_PREFIX = "trials/"
"""The parent's trial counts: ``trials/total``, one per final state, ``trials/feasible``."""
BEST_TRIAL_TAG = "dualtune.best_trial_id"
BEST_METHOD_TAG = "dualtune.best_method"
RUN_NAME_COLUMN = "attributes.`Run Name`"
RUN_NAME_WIDTH = 280


def best_feasible(
    report: Mapping[str, Any], outcomes: Sequence[TrialOutcome] = ()
) -> tuple[str, dict[str, Any], dict[str, float]] | None:
    """The sweep's best feasible trial: the best of each method's ``best`` (succeeded and
    within every ``selection.subject_to`` bound) by ``selection.metric``/``mode``, as
    (method, its report entry, its metrics). The metrics are the trial's own from
    ``outcomes`` where it is there, else the report's table metrics. ``None`` when no trial
    is feasible. Ties go to the method listed first."""
    selection = report["selection"]
    by_id = {o.trial_id: o for o in outcomes}
    candidates: list[tuple[float, int, str, dict[str, Any], dict[str, float]]] = []
    for position, entry in enumerate(report["methods"]):
        best = entry["best"]
        if best is None:
            continue
        outcome = by_id.get(best["trial_id"])
        metrics = dict(outcome.metrics) if outcome is not None else dict(best["metrics"])
        value = metrics.get(selection["metric"])
        score = math.inf if value is None or math.isnan(value) else float(value)
        if selection["mode"] == "max" and score != math.inf:
            score = -score
        candidates.append((score, position, entry["method"], best, metrics))
    if not candidates:
        return None
    _, _, method, best, metrics = min(candidates, key=lambda c: (c[0], c[1]))
    return method, best, metrics


def parent_metrics(
    report: Mapping[str, Any], outcomes: Sequence[TrialOutcome] = ()
) -> dict[str, float]:
    """What the parent run shows in the runs table: the trial counts of the report (every
    final state, their total, and how many met the selection's bounds) and the best
    feasible trial's metrics under ``best/``."""
    counts = {state: int(report["trial_counts"].get(state, 0)) for state in FINAL_STATES}
    metrics: dict[str, float] = {
        f"{TRIALS_PREFIX}total": float(sum(report["trial_counts"].values())),
        **{f"{TRIALS_PREFIX}{state}": float(n) for state, n in counts.items()},
        f"{TRIALS_PREFIX}feasible": float(sum(m["met_bounds"] for m in report["methods"])),
    }
    best = best_feasible(report, outcomes)
    if best is not None:
        for name, value in sorted(best[2].items()):
            # Its own best feasible evaluation stays on its child run.
            if name.startswith(BEST_FEASIBLE):
                continue
            if value is not None and math.isfinite(value):
                metrics[f"{BEST_PREFIX}{name}"] = float(value)
    return metrics


def runs_view(report: Mapping[str, Any], outcomes: Sequence[TrialOutcome] = ()) -> dict[str, Any]:
    """The runs table's columns for ``VIEW_TAG`` (the UI's own view-state keys): the swept
    grid keys (the child runs' ``params.<key>`` params), the selection metric and its
    bounds' metrics on the children and under ``best/`` on the parent, and the parent's
    trial counts."""
    selection = report["selection"]
    entries = [e[kind] for e in report["methods"] for kind in ("best", "best_infeasible")]
    keys = {k for o in outcomes for k in o.params} | {
        k for entry in entries if entry for k in entry["params"]
    }
    params = [f"params.`params.{k}`" for k in sorted(keys, key=grid_key_order)]
    compared = [
        selection["metric"],
        *(m for m in selection["subject_to"] if m != selection["metric"]),
    ]
    metrics = [
        *(f"metrics.`{m}`" for m in compared),
        *(f"metrics.`{BEST_PREFIX}{m}`" for m in compared),
        *(f"metrics.`{TRIALS_PREFIX}{n}`" for n in ("total", "succeeded", "feasible")),
    ]
    # Wide enough for a child's name (run_names): the table's default cuts it after ε.
    return {
        "selectedColumns": [*params, *metrics],
        "columnOrder": [RUN_NAME_COLUMN],
        "columnWidths": {RUN_NAME_COLUMN: RUN_NAME_WIDTH},
    }


def log_sweep_report(
    tracking_uri: str,
    parent_run_id: str,
    report: dict[str, Any],
    curves: dict[str, np.ndarray],
    *,
    epsilon: float | None = None,
    outcomes: Sequence[TrialOutcome] = (),
) -> str:
    """``report.json``, ``plots/compare_loss_cdf.png`` (when there are ``curves``),
    ``plots/pareto.png`` (when a trial is in the report's ``pareto`` points) and, in one
    ``log_batch``, ``parent_metrics`` (with the best trial's id and method as tags) on the
    parent run, which is then ended. ``outcomes`` (the report's) give ``best/`` every
    metric of the best trial; without them it gets the report's table metrics. Returns
    what could not be logged (empty when all was)."""
    client = ResilientClient(tracking_uri)
    missing: list[str] = []
    now = int(time.time() * 1000)
    metrics = [Metric(k, v, now, 0) for k, v in parent_metrics(report, outcomes).items()]
    best = best_feasible(report, outcomes)
    tags = (
        [RunTag(BEST_TRIAL_TAG, best[1]["trial_id"]), RunTag(BEST_METHOD_TAG, best[0])]
        if best is not None
        else []
    )
    ok, _ = client.call(lambda c: c.log_batch(parent_run_id, metrics=metrics, tags=tags))
    if not ok:
        missing.append("best/* and trials/* metrics")
    view = json.dumps(runs_view(report, outcomes))

    def set_view(c: MlflowClient) -> None:
        c.set_experiment_tag(c.get_run(parent_run_id).info.experiment_id, VIEW_TAG, view)

    ok, _ = client.call(set_view)
    if not ok:
        missing.append("the runs table's view")
    name = report.get("name", "sweep")
    with tempfile.TemporaryDirectory() as directory:
        plots_dir = Path(directory) / "plots"
        plots_dir.mkdir()
        if curves:
            plots.compare_loss_cdf(
                curves,
                epsilon,
                plots_dir / "compare_loss_cdf.png",
                f"{name}: each method's best trial",
            )
        if report.get("pareto"):
            plots.pareto(report["pareto"], plots_dir / "pareto.png", f"{name}: Pareto fronts")
        ok, _ = client.call(lambda c: c.log_dict(parent_run_id, report, "report.json"))
        if not ok:
            missing.append("report.json")
        drawn = sorted(p.name for p in plots_dir.iterdir())
        if drawn:
            ok, _ = client.call(lambda c: c.log_artifacts(parent_run_id, str(plots_dir), "plots"))
            if not ok:
                missing += [f"plots/{n}" for n in drawn]
    ok, _ = client.call(lambda c: c.set_terminated(parent_run_id, "FINISHED"))
    if not ok:
        missing.append("end parent run")
    if missing:
        return f"not logged to MLflow: {', '.join(missing)} ({client.last_error})"
    return ""


def final_train_losses(tracking_uri: str, run_id: str) -> np.ndarray | None:
    """The last logged ``per_sample/train_epoch*.parquet``'s losses of a child run, or
    ``None`` (for trials whose checkpoint no longer holds them)."""
    client = ResilientClient(tracking_uri, budget_s=5.0)
    ok, listing = client.call(lambda c: c.list_artifacts(run_id, "per_sample"))
    if not ok or not listing:
        return None
    names = sorted(a.path for a in listing if Path(a.path).name.startswith("train_epoch"))
    if not names:
        return None
    with tempfile.TemporaryDirectory() as directory:
        ok, path = client.call(lambda c: c.download_artifacts(run_id, names[-1], directory))
        if not ok or path is None:
            return None
        return np.asarray(pd.read_parquet(path)["loss"].to_numpy())
