"""Leases and launches, the reconciler's side.

A replica process leases the active sweeps it reconciles (one conditional update that only
one process can win per sweep). A launch is recorded — its submission id and the worker
token's hash — before the launcher starts the driver, so a service that dies in between
finds the driver again by its submission id (adopts it) or knows none was started.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import timedelta

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from dualtune.core.states import (
    SWEEP_ACTIVE,
    TRIAL_FINAL,
    SweepState,
    TrialState,
    check_sweep_transition,
    no_success_error,
    sweep_outcome,
)
from dualtune.service.db.repository.sweeps import finish_trials
from dualtune.service.db.repository.tokens import hash_token
from dualtune.service.db.repository.unit import UnitOfWork, sweep_record, utcnow
from dualtune.service.db.rows import SweepRow, TrialRow
from dualtune.service.errors import Conflict
from dualtune.service.records import Sweep


class LaunchStore(UnitOfWork):
    def claim(
        self,
        owner: str,
        *,
        lease_s: float,
        limit: int | None = None,
        dead_owners: Collection[str] = (),
    ) -> list[Sweep]:
        """Take (or renew) the lease on active sweeps no other live process holds: free ones,
        this owner's, expired ones, and those of ``dead_owners`` (holders known dead). Safe
        with several processes: candidates are locked with SKIP LOCKED on Postgres, and the
        claim is one conditional update that only one process can win for each sweep."""
        now = utcnow()
        claimable = or_(
            SweepRow.lease_owner.is_(None),
            SweepRow.lease_owner == owner,
            SweepRow.lease_expires_at < now,
            *([SweepRow.lease_owner.in_(list(dead_owners))] if dead_owners else []),
        )
        with self._unit() as s:
            candidates = list(
                s.scalars(
                    select(SweepRow.pk)
                    .where(SweepRow.status.in_(SWEEP_ACTIVE), claimable)
                    .order_by(SweepRow.pk)
                    .limit(limit)  # None: every one (this process renews what it holds)
                    .with_for_update(skip_locked=True)
                )
            )
            if not candidates:
                return []
            rows = s.scalars(
                update(SweepRow)
                .where(SweepRow.pk.in_(candidates), SweepRow.status.in_(SWEEP_ACTIVE), claimable)
                .values(lease_owner=owner, lease_expires_at=now + timedelta(seconds=lease_s))
                .returning(SweepRow)
                .execution_options(synchronize_session=False)
            )
            return sorted((sweep_record(r) for r in rows), key=lambda sweep: sweep.pk)

    def lease_holders(self) -> set[str]:
        """The processes holding a lease that has not expired."""
        with self._unit() as s:
            holders = s.scalars(
                select(SweepRow.lease_owner)
                .where(SweepRow.lease_owner.is_not(None), SweepRow.lease_expires_at >= utcnow())
                .distinct()
            )
            return {h for h in holders if h is not None}

    def release(self, owner: str) -> None:
        with self._unit() as s:
            s.execute(
                update(SweepRow)
                .where(SweepRow.lease_owner == owner)
                .values(lease_owner=None, lease_expires_at=None)
            )

    def sweep_states(self, sweep_ids: Collection[str]) -> dict[str, tuple[SweepState, str | None]]:
        """Per known sweep id: its state and the current launch's submission id (the
        reconciler's view of the drivers it finds running)."""
        if not sweep_ids:
            return {}
        with self._unit() as s:
            rows = s.execute(
                select(SweepRow.id, SweepRow.status, SweepRow.launch_submission_id).where(
                    SweepRow.id.in_(list(sweep_ids))
                )
            )
            return {i: (SweepState(status), sub) for i, status, sub in rows}

    def begin_launch(
        self, sweep_id: str, owner: str, worker_token: str, *, launch: int, submission_id: str
    ) -> Sweep:
        """Record launch number ``launch`` (``submission_id``, a fresh worker token) of a
        leased sweep and mark it ``launching``: committed before the driver is started."""
        with self._unit() as s:
            row = self._leased(s, sweep_id, owner)
            if launch != row.launch_count + 1:
                raise Conflict(
                    f"sweep {sweep_id} is at launch {row.launch_count}; launch {launch} is stale"
                )
            if row.status != SweepState.LAUNCHING:
                row.status = check_sweep_transition(row.status, SweepState.LAUNCHING)
            row.launch_count = launch
            row.launch_submission_id = submission_id
            row.launcher_ref = None
            row.worker_token_hash = hash_token(worker_token)
            row.updated_at = utcnow()
            s.flush()
            return sweep_record(row)

    def launched(self, sweep_id: str, owner: str, launcher_ref: str) -> None:
        """The recorded launch's driver runs as ``launcher_ref`` (started, or found again)."""
        with self._unit() as s:
            row = self._leased(s, sweep_id, owner)
            if row.status == SweepState.LAUNCHING:
                row.status = check_sweep_transition(row.status, SweepState.RUNNING)
            row.launcher_ref = launcher_ref
            row.launch_failures, row.retry_launch_at, row.error = 0, None, None
            row.launched_at = row.updated_at = utcnow()

    def launch_failed(self, sweep_id: str, owner: str, error: str) -> None:
        """The launcher refused: back to pending, to be tried again after a backoff (1, 2, 4,
        … 60 s). A refused launch started no driver, so it is not counted as a launch."""
        with self._unit() as s:
            row = self._leased(s, sweep_id, owner)
            if row.status == SweepState.LAUNCHING:
                row.status = check_sweep_transition(row.status, SweepState.PENDING)
            now = utcnow()
            row.launch_count -= 1
            row.launch_failures += 1
            row.launch_submission_id = row.worker_token_hash = None
            row.retry_launch_at = now + timedelta(
                seconds=min(2.0 ** (row.launch_failures - 1), 60)
            )
            row.error = error
            row.updated_at = now

    def finish(
        self,
        sweep_id: str,
        owner: str,
        status: SweepState,
        *,
        trials: TrialState,
        error: str | None = None,
    ) -> None:
        """Close a sweep: its unfinished trials become ``trials`` (cancelled or failed)."""
        with self._unit() as s:
            row = self._leased(s, sweep_id, owner)
            self._close(s, row, status, trials, error)

    def close_done(self, sweep_id: str, owner: str) -> SweepState:
        """Close a sweep whose driver has ended with every trial final: ``succeeded`` if a
        trial succeeded, else ``failed`` with what its trials did."""
        with self._unit() as s:
            row = self._leased(s, sweep_id, owner)
            counts = {
                status: int(n)
                for status, n in s.execute(
                    select(TrialRow.status, func.count())
                    .where(TrialRow.sweep_pk == row.pk)
                    .group_by(TrialRow.status)
                )
            }
            outcome = sweep_outcome(counts)
            error = None if outcome == SweepState.SUCCEEDED else no_success_error(counts)
            self._close(s, row, outcome, TrialState.FAILED, error)
            return outcome

    def _close(
        self,
        s: Session,
        row: SweepRow,
        status: SweepState,
        trials: TrialState,
        error: str | None,
    ) -> None:
        now = utcnow()
        row.status = check_sweep_transition(row.status, status)
        finish_trials(s, row.pk, trials, now, error)
        row.error = error
        row.finished_at = row.updated_at = now
        row.lease_owner, row.lease_expires_at = None, None
        row.worker_token_hash = None

    def _leased(self, s: Session, sweep_id: str, owner: str) -> SweepRow:
        row = s.scalar(select(SweepRow).where(SweepRow.id == sweep_id).with_for_update())
        if row is None or row.lease_owner != owner:
            raise Conflict(f"sweep {sweep_id} is no longer leased by {owner}")
        return row

    def unfinished_trials(self, sweep_pks: Sequence[int]) -> dict[int, int]:
        """Per sweep, its trials not yet final (one query for a whole reconcile round)."""
        if not sweep_pks:
            return {}
        with self._unit() as s:
            rows = s.execute(
                select(TrialRow.sweep_pk, func.count())
                .where(TrialRow.sweep_pk.in_(list(sweep_pks)), TrialRow.status.not_in(TRIAL_FINAL))
                .group_by(TrialRow.sweep_pk)
            )
            found = {pk: int(n) for pk, n in rows}
        return {pk: found.get(pk, 0) for pk in sweep_pks}
