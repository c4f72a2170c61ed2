"""Sweeps and their trials, the tenant's side: submit, read, cancel, retry.

Another tenant's sweep is as absent as a missing one (``NotFound``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dualtune.core.states import (
    SWEEP_FINAL,
    TRIAL_FINAL,
    TRIAL_RETRYABLE,
    SweepState,
    TrialState,
    check_sweep_transition,
)
from dualtune.service.db.repository.unit import (
    UnitOfWork,
    decode_cursor,
    encode_cursor,
    rowcount,
    sweep_record,
    trial_record,
    utcnow,
)
from dualtune.service.db.rows import IdempotencyRow, SweepRow, TrialRow
from dualtune.service.errors import Conflict, NotFound
from dualtune.service.records import NewTrial, Page, Sweep, Tenant, Trial


class SweepStore(UnitOfWork):
    def create_sweep(
        self,
        tenant: Tenant,
        *,
        sweep_id: str,
        name: str,
        spec: dict[str, Any],
        trials: Sequence[NewTrial],
        idempotency_key: str | None = None,
        body_hash: str = "",
    ) -> tuple[Sweep, bool]:
        """Store a sweep and its trials; returns ``(sweep, created)``. With an idempotency key
        already used by this tenant, returns that key's sweep (same body) or raises Conflict."""
        if idempotency_key is not None:
            earlier = self._sweep_for_key(tenant, idempotency_key, body_hash)
            if earlier is not None:
                return earlier, False
        now = utcnow()
        try:
            with self._unit() as s:
                row = SweepRow(
                    id=sweep_id,
                    tenant_pk=tenant.pk,
                    name=name,
                    spec=spec,
                    status=SweepState.PENDING,
                    generation=0,
                    launch_count=0,
                    launch_failures=0,
                    created_at=now,
                    updated_at=now,
                )
                s.add(row)
                s.flush()
                if trials:
                    s.execute(
                        insert(TrialRow),
                        [
                            {
                                "sweep_pk": row.pk,
                                "trial_id": t.trial_id,
                                "position": t.position,
                                "method": t.method,
                                "params": t.params,
                                "status": TrialState.PENDING,
                                "generation": 0,
                                "attempts": 0,
                                "prior_attempts": 0,
                                "metrics": {},
                                "updated_at": now,
                            }
                            for t in trials
                        ],
                    )
                if idempotency_key is not None:
                    s.add(
                        IdempotencyRow(
                            tenant_pk=tenant.pk,
                            key=idempotency_key,
                            body_hash=body_hash,
                            sweep_pk=row.pk,
                            created_at=now,
                        )
                    )
                return sweep_record(row, {TrialState.PENDING: len(trials)}), True
        except IntegrityError:
            if idempotency_key is not None:  # a concurrent request with the same key won
                earlier = self._sweep_for_key(tenant, idempotency_key, body_hash)
                if earlier is not None:
                    return earlier, False
            raise Conflict(f"sweep id {sweep_id} is taken; submit again") from None

    def _sweep_for_key(self, tenant: Tenant, key: str, body_hash: str) -> Sweep | None:
        with self._unit() as s:
            found = s.execute(
                select(IdempotencyRow.body_hash, SweepRow)
                .join(SweepRow, SweepRow.pk == IdempotencyRow.sweep_pk)
                .where(IdempotencyRow.tenant_pk == tenant.pk, IdempotencyRow.key == key)
            ).first()
            if found is None:
                return None
            if found.body_hash != body_hash:
                raise Conflict(
                    f"Idempotency-Key {key!r} was used for a different sweep spec; "
                    "use a new key for a new sweep",
                    sweep_id=found.SweepRow.id,
                )
            return sweep_record(found.SweepRow, self._counts(s, found.SweepRow.pk))

    def _counts(self, s: Session, sweep_pk: int) -> dict[str, int]:
        rows = s.execute(
            select(TrialRow.status, func.count())
            .where(TrialRow.sweep_pk == sweep_pk)
            .group_by(TrialRow.status)
        )
        return {status: int(n) for status, n in rows}

    def _owned(self, s: Session, tenant: Tenant, sweep_id: str, *, lock: bool = False) -> SweepRow:
        query = select(SweepRow).where(SweepRow.id == sweep_id, SweepRow.tenant_pk == tenant.pk)
        if lock:
            query = query.with_for_update()
        row = s.scalar(query)
        if row is None:  # another tenant's sweep is as absent as a missing one
            raise NotFound(f"no sweep {sweep_id!r}; list yours with GET /api/v1/sweeps")
        return row

    def get_sweep(self, tenant: Tenant, sweep_id: str) -> Sweep:
        with self._unit() as s:
            row = self._owned(s, tenant, sweep_id)
            return sweep_record(row, self._counts(s, row.pk))

    def list_sweeps(
        self, tenant: Tenant, *, status: str | None, limit: int, cursor: str | None
    ) -> Page[Sweep]:
        after = decode_cursor(cursor)
        with self._unit() as s:
            query = select(SweepRow).where(SweepRow.tenant_pk == tenant.pk)
            if status:
                query = query.where(SweepRow.status == status)
            if after is not None:
                query = query.where(SweepRow.pk < after)
            rows = list(s.scalars(query.order_by(SweepRow.pk.desc()).limit(limit + 1)))
            more = len(rows) > limit
            rows = rows[:limit]
            counts: dict[int, dict[str, int]] = {r.pk: {} for r in rows}
            if rows:
                for sweep_pk, trial_status, n in s.execute(
                    select(TrialRow.sweep_pk, TrialRow.status, func.count())
                    .where(TrialRow.sweep_pk.in_(list(counts)))
                    .group_by(TrialRow.sweep_pk, TrialRow.status)
                ):
                    counts[sweep_pk][trial_status] = int(n)
            items = [sweep_record(r, counts[r.pk]) for r in rows]
        return Page(items, encode_cursor(rows[-1].pk) if more else None)

    def list_trials(
        self,
        tenant: Tenant,
        sweep_id: str,
        *,
        status: str | None,
        limit: int,
        cursor: str | None,
    ) -> Page[Trial]:
        after = decode_cursor(cursor)
        with self._unit() as s:
            sweep = self._owned(s, tenant, sweep_id)
            query = select(TrialRow).where(TrialRow.sweep_pk == sweep.pk)
            if status:
                query = query.where(TrialRow.status == status)
            if after is not None:
                query = query.where(TrialRow.position > after)
            rows = list(s.scalars(query.order_by(TrialRow.position).limit(limit + 1)))
        more = len(rows) > limit
        rows = rows[:limit]
        return Page(
            [trial_record(r) for r in rows], encode_cursor(rows[-1].position) if more else None
        )

    def all_trials(self, tenant: Tenant, sweep_id: str) -> tuple[Sweep, list[Trial]]:
        with self._unit() as s:
            row = self._owned(s, tenant, sweep_id)
            trials = s.scalars(
                select(TrialRow).where(TrialRow.sweep_pk == row.pk).order_by(TrialRow.position)
            )
            records = [trial_record(t) for t in trials]
            counts: dict[str, int] = {}
            for t in records:
                counts[t.status] = counts.get(t.status, 0) + 1
            return sweep_record(row, counts), records

    def sweep_and_succeeded(self, tenant: Tenant, sweep_id: str) -> tuple[Sweep, list[Trial]]:
        """The sweep with its counts, and only its succeeded trials (the best trial's pool)."""
        with self._unit() as s:
            row = self._owned(s, tenant, sweep_id)
            trials = s.scalars(
                select(TrialRow)
                .where(TrialRow.sweep_pk == row.pk, TrialRow.status == TrialState.SUCCEEDED)
                .order_by(TrialRow.position)
            )
            records = [trial_record(t) for t in trials]
            return sweep_record(row, self._counts(s, row.pk)), records

    def request_cancel(self, tenant: Tenant, sweep_id: str) -> Sweep:
        """A pending sweep is cancelled at once; a launching or running one goes to
        ``cancelling`` and the reconciler stops every driver of it before closing it.
        Cancelling a cancelled or cancelling sweep changes nothing."""
        with self._unit() as s:
            row = self._owned(s, tenant, sweep_id, lock=True)
            now = utcnow()
            status = SweepState(row.status)
            if status in (SweepState.SUCCEEDED, SweepState.FAILED):
                raise Conflict(f"sweep {sweep_id} already {status}; there is nothing to cancel")
            if status == SweepState.PENDING:
                row.status = check_sweep_transition(status, SweepState.CANCELLED)
                row.finished_at = now
                finish_trials(s, row.pk, TrialState.CANCELLED, now)
            elif status in (SweepState.LAUNCHING, SweepState.RUNNING):
                row.status = check_sweep_transition(status, SweepState.CANCELLING)
            row.updated_at = now
            s.flush()
            return sweep_record(row, self._counts(s, row.pk))

    def retry(self, tenant: Tenant, sweep_id: str) -> Sweep:
        """Reset the failed, diverged and cancelled trials of a finished sweep to pending, in
        a new generation, and queue the sweep for launch again."""
        with self._unit() as s:
            row = self._owned(s, tenant, sweep_id, lock=True)
            status = SweepState(row.status)
            if status not in SWEEP_FINAL:
                raise Conflict(
                    f"sweep {sweep_id} is {status}; retry it once it has finished "
                    "(or cancel it first)"
                )
            now = utcnow()
            generation = row.generation + 1
            reset = rowcount(
                s.execute(
                    update(TrialRow)
                    .where(TrialRow.sweep_pk == row.pk, TrialRow.status.in_(TRIAL_RETRYABLE))
                    .values(
                        status=TrialState.PENDING,
                        generation=generation,
                        prior_attempts=TrialRow.attempts,
                        error=None,
                        updated_at=now,
                    )
                )
            )
            if not reset:
                raise Conflict(
                    f"sweep {sweep_id} has no failed, diverged or cancelled trials to retry"
                )
            row.generation, row.launch_count = generation, 0
            row.launch_failures, row.retry_launch_at = 0, None
            row.status = check_sweep_transition(status, SweepState.PENDING)
            row.error, row.finished_at = None, None
            row.launcher_ref = row.launch_submission_id = row.worker_token_hash = None
            row.updated_at = now
            s.flush()
            return sweep_record(row, self._counts(s, row.pk))

    # -- gauges for /metrics
    def sweeps_by_status(self) -> dict[str, int]:
        with self._unit() as s:
            rows = s.execute(select(SweepRow.status, func.count()).group_by(SweepRow.status))
            return {status: int(n) for status, n in rows}

    def trials_by_status(self) -> dict[str, int]:
        with self._unit() as s:
            rows = s.execute(select(TrialRow.status, func.count()).group_by(TrialRow.status))
            return {status: int(n) for status, n in rows}


def finish_trials(
    s: Session, sweep_pk: int, status: TrialState, now: datetime, error: str | None = None
) -> None:
    """End every trial of the sweep not yet final as ``status``."""
    s.execute(
        update(TrialRow)
        .where(TrialRow.sweep_pk == sweep_pk, TrialRow.status.not_in(TRIAL_FINAL))
        .values(status=status, updated_at=now, error=error)
    )
