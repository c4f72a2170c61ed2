"""``/api/v1/worker``: the driver fetches its sweep and reports trial events (worker token)."""

from __future__ import annotations

import logging

from fastapi import APIRouter

from dualtune.service.api.deps import AppMetrics, Repo, SweepId, WorkerToken
from dualtune.service.api.schemas import (
    ErrorPublic,
    EventAck,
    EventBatch,
    RejectedEventPublic,
    SweepFailure,
    TrialEventIn,
    WorkerSweep,
    check_event,
    trial_public,
)
from dualtune.service.records import RejectedEvent, TrialUpdate
from dualtune.service.usecases import worker_events

log = logging.getLogger("dualtune.api.worker")

router = APIRouter(
    prefix="/api/v1/worker/sweeps",
    tags=["worker"],
    responses={401: {"model": ErrorPublic}},
)


@router.get("/{sweep_id}")
def fetch(sweep_id: SweepId, token: WorkerToken, repo: Repo) -> WorkerSweep:
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
def events(
    sweep_id: SweepId, body: EventBatch, token: WorkerToken, repo: Repo, metrics: AppMetrics
) -> EventAck:
    """Each event is checked on its own: the valid ones are applied, the others come back in
    ``rejected`` (by their position in this batch) and are not to be sent again."""
    valid: list[tuple[int, TrialUpdate]] = []
    refused: list[RejectedEvent] = []
    for index, raw in enumerate(body.events):
        checked = check_event(index, raw)
        if isinstance(checked, TrialEventIn):
            valid.append((index, _update(checked)))
        else:
            refused.append(RejectedEvent(checked.index, checked.trial_id, checked.reason))
    applied = worker_events.record_events(
        repo,
        sweep_id,
        token,
        generation=body.generation,
        updates=valid,
        refused=refused,
        mlflow_experiment_id=body.mlflow_experiment_id,
        mlflow_parent_run_id=body.mlflow_parent_run_id,
    )
    for r in applied.rejected:
        log.warning(
            "sweep %s: event %d (trial %s) rejected: %s", sweep_id, r.index, r.trial_id, r.reason
        )
    metrics.events_rejected.inc(len(applied.rejected))
    return EventAck(
        changed=applied.changed,
        rejected=[
            RejectedEventPublic(index=r.index, trial_id=r.trial_id, reason=r.reason)
            for r in applied.rejected
        ],
    )


def _update(e: TrialEventIn) -> TrialUpdate:
    return TrialUpdate(e.trial_id, e.status, e.attempt, e.metrics, e.mlflow_run_id, e.error)


@router.post("/{sweep_id}/failure")
def failure(sweep_id: SweepId, body: SweepFailure, token: WorkerToken, repo: Repo) -> EventAck:
    changed = worker_events.fail_sweep(
        repo, sweep_id, token, generation=body.generation, error=body.error
    )
    return EventAck(changed=changed)
