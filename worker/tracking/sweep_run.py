"""The sweep's experiment and parent run, and the report logged on it."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.entities import Param
from mlflow.tracking import MlflowClient

from dualtune.worker.tracking import plots
from dualtune.worker.tracking.resilient import ResilientClient, artifact_root_for


def ensure_experiment(client: ResilientClient, name: str) -> str | None:
    """The experiment named after the sweep, created if missing; ``None`` if MLflow cannot
    be reached (the sweep still runs; its trials log what they can)."""

    def get_or_create(c: MlflowClient) -> str:
        found = c.get_experiment_by_name(name)
        if found is not None:
            return str(found.experiment_id)
        root = artifact_root_for(client.tracking_uri)
        location = f"{root}/{re.sub(r'[^A-Za-z0-9._-]+', '_', name)}" if root else None
        try:
            return str(c.create_experiment(name, artifact_location=location))
        except Exception:  # another driver created it first
            again = c.get_experiment_by_name(name)
            if again is None:
                raise
            return str(again.experiment_id)

    ok, experiment_id = client.call(get_or_create)
    return experiment_id if ok else None


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
            filter_string=(
                f"tags.`dualtune.sweep_id` = '{sweep_id}' and tags.`dualtune.role` = 'sweep'"
            ),
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


def log_sweep_report(
    tracking_uri: str,
    parent_run_id: str,
    report: dict[str, Any],
    curves: dict[str, np.ndarray],
    *,
    epsilon: float | None = None,
) -> str:
    """``report.json`` and ``plots/compare_loss_cdf.png`` on the parent run, which is then
    ended. Returns what could not be logged (empty when all was)."""
    client = ResilientClient(tracking_uri)
    missing: list[str] = []
    with tempfile.TemporaryDirectory() as directory:
        plots_dir = Path(directory) / "plots"
        plots_dir.mkdir()
        if curves:
            plots.compare_loss_cdf(
                curves,
                epsilon,
                plots_dir / "compare_loss_cdf.png",
                f"{report.get('name', 'sweep')}: each method's best trial",
            )
        ok, _ = client.call(lambda c: c.log_dict(parent_run_id, report, "report.json"))
        if not ok:
            missing.append("report.json")
        if curves:
            ok, _ = client.call(lambda c: c.log_artifacts(parent_run_id, str(plots_dir), "plots"))
            if not ok:
                missing.append("plots/compare_loss_cdf.png")
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
