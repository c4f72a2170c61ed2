"""The driver's side (its per-sweep worker token): fetch the sweep, apply trial events, fail
a sweep that cannot run.

Events are idempotent upserts: a replay changes nothing. Within a generation a final trial
state is final (``dualtune.core.states``): a late ``running`` is ignored as stale, another
final state for a final trial is rejected with its reason, as is an event for a trial the
sweep does not have, while the batch's other events are applied.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dualtune.core.states import (
    SWEEP_FINAL,
    TRIAL_FINAL,
    SweepState,
    TrialState,
    check_sweep_transition,
    trial_may,
)
from dualtune.service.db.repository.sweeps import finish_trials
from dualtune.service.db.repository.tokens import hash_token
from dualtune.service.db.repository.unit import UnitOfWork, sweep_record, trial_record, utcnow
from dualtune.service.db.rows import SweepRow, TrialRow
from dualtune.service.errors import Unauthorized
from dualtune.service.faults import EVENTS_APPLIED, crash_point
from dualtune.service.records import AppliedEvents, RejectedEvent, TrialUpdate, WorkerView

REFUSED = "the worker token does not belong to this sweep's current driver"


class DriverSide(UnitOfWork):
    def _worker_sweep(
        self, s: Session, sweep_id: str, token: str, *, lock: bool = False
    ) -> SweepRow:
        query = select(SweepRow).where(SweepRow.id == sweep_id)
        row = s.scalar(query.with_for_update() if lock else query)
        if row is None or row.worker_token_hash != hash_token(token):
            raise Unauthorized(REFUSED)
        return row

    def worker_view(self, sweep_id: str, token: str) -> WorkerView:
        with self._unit() as s:
            row = self._worker_sweep(s, sweep_id, token)
            trials = [
                trial_record(t)
                for t in s.scalars(
                    select(TrialRow).where(TrialRow.sweep_pk == row.pk).order_by(TrialRow.position)
                )
            ]
            run = [t.trial_id for t in trials if t.generation == row.generation]
            return WorkerView(sweep_record(row), run, trials)

    def apply_events(
        self,
        sweep_id: str,
        token: str,
        *,
        generation: int,
        updates: Sequence[TrialUpdate],
        mlflow_experiment_id: str | None = None,
        mlflow_parent_run_id: str | None = None,
    ) -> AppliedEvents:
        """Upsert trial states from the driver. Events of an older generation, or for a
        finished sweep, change nothing (a driver that outlived its generation)."""
        changed = 0
        rejected: list[RejectedEvent] = []
        with self._unit() as s:
            sweep = self._worker_sweep(s, sweep_id, token)
            if SweepState(sweep.status) in SWEEP_FINAL or generation != sweep.generation:
                return AppliedEvents(0)
            now = utcnow()
            if mlflow_parent_run_id and sweep.mlflow_parent_run_id != mlflow_parent_run_id:
                sweep.mlflow_parent_run_id = mlflow_parent_run_id
                sweep.mlflow_experiment_id = mlflow_experiment_id
                sweep.updated_at = now
            ids = [u.trial_id for u in updates]
            rows = {
                r.trial_id: r
                for r in s.scalars(
                    select(TrialRow)
                    .where(TrialRow.sweep_pk == sweep.pk, TrialRow.trial_id.in_(ids))
                    .with_for_update()
                )
            }
            for index, u in enumerate(updates):
                row = rows.get(u.trial_id)
                reason = _refusal(row, u, sweep_id, generation)
                if reason:
                    rejected.append(RejectedEvent(index, u.trial_id, reason))
                    continue
                assert row is not None
                current = TrialState(row.status)
                if current in TRIAL_FINAL:
                    continue  # a replay of the same final state, or a stale ``running``
                values: dict[str, Any] = {
                    "status": u.status,
                    "attempts": max(row.attempts, row.prior_attempts + u.attempt),
                    "error": u.error,
                }
                if u.metrics:
                    values["metrics"] = u.metrics
                if u.mlflow_run_id:
                    values["mlflow_run_id"] = u.mlflow_run_id
                if any(getattr(row, k) != v for k, v in values.items()):
                    for k, v in values.items():
                        setattr(row, k, v)
                    row.updated_at = now
                    changed += 1
            if sweep.status == SweepState.LAUNCHING and changed:
                sweep.status = check_sweep_transition(sweep.status, SweepState.RUNNING)
        if updates:  # a heartbeat (no events) is not a cut in the events' path
            crash_point(EVENTS_APPLIED)
        return AppliedEvents(changed, rejected)

    def fail_from_driver(self, sweep_id: str, token: str, *, generation: int, error: str) -> bool:
        """The driver found that the sweep cannot run (its check before any trial): close
        it ``failed`` with ``error``, its unfinished trials too, and release it (a relaunch
        would fail the same way). False, changing nothing, for a finished or cancelling
        sweep or another generation's driver."""
        with self._unit() as s:
            row = self._worker_sweep(s, sweep_id, token, lock=True)
            status = SweepState(row.status)
            if status in SWEEP_FINAL or status == SweepState.CANCELLING:
                return False
            if generation != row.generation:
                return False
            now = utcnow()
            finish_trials(s, row.pk, TrialState.FAILED, now, error)
            row.status = check_sweep_transition(status, SweepState.FAILED)
            row.error = error
            row.finished_at = row.updated_at = now
            row.lease_owner, row.lease_expires_at = None, None
            row.worker_token_hash = None
            return True


def _refusal(
    row: TrialRow | None, update: TrialUpdate, sweep_id: str, generation: int
) -> str | None:
    """Why ``update`` cannot be applied to ``row``, or None."""
    if row is None:
        return f"sweep {sweep_id} has no trial {update.trial_id!r}"
    if row.generation != generation:
        return (
            f"trial {update.trial_id} is not run by generation {generation} of sweep "
            f"{sweep_id} (it belongs to generation {row.generation})"
        )
    current = TrialState(row.status)
    if current in TRIAL_FINAL and update.status not in (current, TrialState.RUNNING):
        return (
            f"trial {update.trial_id} already {current}; a final state is final within a "
            f"generation, so {update.status} was not applied"
        )
    if current not in TRIAL_FINAL and not trial_may(current, update.status):
        return f"trial {update.trial_id} cannot go from {current} to {update.status}"
    return None
