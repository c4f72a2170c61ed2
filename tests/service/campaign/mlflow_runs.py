"""A sweep as MLflow holds it: its parent run and the trials' child runs (by their tags)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mlflow.tracking import MlflowClient

SWEEP_TAG = "dualtune.sweep_id"
TRIAL_TAG = "dualtune.trial_id"
ROLE_TAG = "dualtune.role"
PARENT_TAG = "mlflow.parentRunId"


@dataclass(frozen=True)
class ChildRun:
    run_id: str
    trial_id: str
    status: str
    parent_run_id: str | None


@dataclass(frozen=True)
class SweepRuns:
    parents: list[str]
    """Run ids tagged as the sweep's parent run (one expected)."""
    children: list[ChildRun]


def sweep_runs(data_dir: Path, sweep_id: str) -> SweepRuns:
    """Every run tagged with ``sweep_id`` in the MLflow store of ``data_dir``."""
    client = MlflowClient(tracking_uri=f"sqlite:///{data_dir / 'mlflow.db'}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(
        experiments, filter_string=f"tags.`{SWEEP_TAG}` = '{sweep_id}'", max_results=5000
    )
    parents = [r.info.run_id for r in runs if r.data.tags.get(ROLE_TAG) == "sweep"]
    children = [
        ChildRun(
            run_id=r.info.run_id,
            trial_id=r.data.tags.get(TRIAL_TAG, ""),
            status=r.info.status,
            parent_run_id=r.data.tags.get(PARENT_TAG),
        )
        for r in runs
        if r.data.tags.get(ROLE_TAG) == "trial"
    ]
    return SweepRuns(parents, children)
