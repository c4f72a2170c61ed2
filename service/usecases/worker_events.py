"""The driver's side of the API: fetch its sweep, report trial events, or fail the sweep."""

from __future__ import annotations

from collections.abc import Sequence

from dualtune.service.db.repository import Repository
from dualtune.service.records import AppliedEvents, RejectedEvent, TrialUpdate, WorkerView


def worker_view(repo: Repository, sweep_id: str, token: str) -> WorkerView:
    return repo.worker_view(sweep_id, token)


def record_events(
    repo: Repository,
    sweep_id: str,
    token: str,
    *,
    generation: int,
    updates: Sequence[tuple[int, TrialUpdate]],
    refused: Sequence[RejectedEvent] = (),
    mlflow_experiment_id: str | None,
    mlflow_parent_run_id: str | None,
) -> AppliedEvents:
    """Apply the events that passed the schema (each with its position in the driver's
    batch); the answer's ``rejected`` merges ``refused`` (the schema's rejections) with the
    repository's (unknown trial, final is final, ...), by position in the batch."""
    applied = repo.apply_events(
        sweep_id,
        token,
        generation=generation,
        updates=[u for _, u in updates],
        mlflow_experiment_id=mlflow_experiment_id,
        mlflow_parent_run_id=mlflow_parent_run_id,
    )
    # The repository numbers its rejections by position in what it was given.
    positions = [index for index, _ in updates]
    rejected = [
        *refused,
        *(RejectedEvent(positions[r.index], r.trial_id, r.reason) for r in applied.rejected),
    ]
    return AppliedEvents(applied.changed, sorted(rejected, key=lambda r: r.index))


def fail_sweep(repo: Repository, sweep_id: str, token: str, *, generation: int, error: str) -> int:
    """The driver's check found that the sweep cannot run: it ends ``failed`` with ``error``
    (1), unless it had already ended or is being cancelled (0)."""
    return int(repo.fail_from_driver(sweep_id, token, generation=generation, error=error))
