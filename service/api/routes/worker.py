"""``/api/v1/worker``: the driver fetches its sweep and reports trial events (worker token)."""

from __future__ import annotations

from fastapi import APIRouter

from dualtune.service.api.deps import Repo, WorkerToken
from dualtune.service.api.schemas import (
    ErrorPublic,
    EventAck,
    EventBatch,
    SweepFailure,
    WorkerSweep,
    trial_public,
)
from dualtune.service.records import TrialUpdate
from dualtune.service.usecases import worker_events

router = APIRouter(
    prefix="/api/v1/worker/sweeps",
    tags=["worker"],
    responses={401: {"model": ErrorPublic}},
)


@router.get("/{sweep_id}")
def fetch(sweep_id: str, token: WorkerToken, repo: Repo) -> WorkerSweep:
    view = worker_events.worker_view(repo, sweep_id, token)
    return WorkerSweep(
        sweep_id=view.sweep.id,
        name=view.sweep.name,
        generation=view.sweep.generation,
        spec=view.sweep.spec,
        run_trial_ids=view.run_trial_ids,
        trials=[trial_public(t) for t in view.trials],
    )


@router.post("/{sweep_id}/events")
def events(sweep_id: str, body: EventBatch, token: WorkerToken, repo: Repo) -> EventAck:
    updates = [
        TrialUpdate(e.trial_id, e.status, e.attempt, e.metrics, e.mlflow_run_id, e.error)
        for e in body.events
    ]
    changed = worker_events.record_events(
        repo,
        sweep_id,
        token,
        generation=body.generation,
        updates=updates,
        mlflow_experiment_id=body.mlflow_experiment_id,
        mlflow_parent_run_id=body.mlflow_parent_run_id,
    )
    return EventAck(changed=changed)


@router.post("/{sweep_id}/failure")
def failure(sweep_id: str, body: SweepFailure, token: WorkerToken, repo: Repo) -> EventAck:
    changed = worker_events.fail_sweep(
        repo, sweep_id, token, generation=body.generation, error=body.error
    )
    return EventAck(changed=changed)
