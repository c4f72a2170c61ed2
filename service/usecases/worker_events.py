"""The driver's side of the API: fetch its sweep, report trial events."""

from __future__ import annotations

from dualtune.service.db.repository import Repository
from dualtune.service.records import TrialUpdate, WorkerView


def worker_view(repo: Repository, sweep_id: str, token: str) -> WorkerView:
    return repo.worker_view(sweep_id, token)


def record_events(
    repo: Repository,
    sweep_id: str,
    token: str,
    *,
    generation: int,
    updates: list[TrialUpdate],
    mlflow_experiment_id: str | None,
    mlflow_parent_run_id: str | None,
) -> int:
    return repo.apply_events(
        sweep_id,
        token,
        generation=generation,
        updates=updates,
        mlflow_experiment_id=mlflow_experiment_id,
        mlflow_parent_run_id=mlflow_parent_run_id,
    )
