"""The driver's side of the API: fetch its sweep, report trial events, or fail the sweep."""

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


def fail_sweep(repo: Repository, sweep_id: str, token: str, *, generation: int, error: str) -> int:
    """The driver's check found that the sweep cannot run: it ends ``failed`` with ``error``
    (1), unless it had already ended or is being cancelled (0)."""
    return int(repo.fail_from_driver(sweep_id, token, generation=generation, error=error))
