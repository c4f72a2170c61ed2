"""The repository: every read and write of the service's database, one unit of work each.

It returns frozen records (never rows), owns commit and rollback, and maps database failures
into the service's error tree once (as Optuna's RDB storage does).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import CursorResult, Engine, func, insert, or_, select, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from dualtune.service.db.rows import IdempotencyRow, SweepRow, TenantRow, TokenRow, TrialRow
from dualtune.service.errors import Conflict, InvalidInput, NotFound, Unauthorized, Unavailable
from dualtune.service.records import (
    SWEEP_ACTIVE,
    SWEEP_FINAL,
    TRIAL_FINAL,
    TRIAL_RETRYABLE,
    NewTrial,
    Page,
    Sweep,
    Tenant,
    Trial,
    TrialUpdate,
    WorkerView,
)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; everything stored is UTC.
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _rowcount(result: object) -> int:
    assert isinstance(result, CursorResult)
    return int(result.rowcount)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def encode_cursor(pk: int) -> str:
    return base64.urlsafe_b64encode(str(pk).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int | None:
    if not cursor:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        return int(base64.urlsafe_b64decode(padded.encode()).decode())
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidInput(
            "cursor: not a cursor this service issued; pass the next_cursor of the previous "
            "page, or leave it out for the first page",
            field="cursor",
        ) from None


def _sweep(row: SweepRow, counts: dict[str, int] | None = None) -> Sweep:
    return Sweep(
        pk=row.pk,
        id=row.id,
        tenant_pk=row.tenant_pk,
        name=row.name,
        spec=dict(row.spec),
        status=row.status,
        generation=row.generation,
        launch_count=row.launch_count,
        launch_failures=row.launch_failures,
        retry_launch_at=_aware(row.retry_launch_at),
        launcher_ref=row.launcher_ref,
        mlflow_experiment_id=row.mlflow_experiment_id,
        mlflow_parent_run_id=row.mlflow_parent_run_id,
        error=row.error,
        created_at=_aware(row.created_at) or row.created_at,
        updated_at=_aware(row.updated_at) or row.updated_at,
        launched_at=_aware(row.launched_at),
        finished_at=_aware(row.finished_at),
        trial_counts=counts or {},
    )


def _trial(row: TrialRow) -> Trial:
    return Trial(
        trial_id=row.trial_id,
        position=row.position,
        method=row.method,
        params=dict(row.params),
        status=row.status,
        generation=row.generation,
        attempts=row.attempts,
        metrics={k: float(v) for k, v in (row.metrics or {}).items()},
        mlflow_run_id=row.mlflow_run_id,
        error=row.error,
        updated_at=_aware(row.updated_at) or row.updated_at,
    )


class Repository:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @contextmanager
    def _unit(self) -> Iterator[Session]:
        session = self._sessions()
        try:
            yield session
            session.commit()
        except IntegrityError:
            session.rollback()
            raise
        except (OperationalError, DBAPIError) as exc:
            session.rollback()
            raise Unavailable(
                "the database is unavailable; retry shortly",
                cause=str(exc.orig if exc.orig is not None else exc),
            ) from exc
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    # -- health
    def ping(self) -> None:
        with self._unit() as s:
            s.execute(text("SELECT 1"))

    # -- tenants and tokens
    def create_token(self, tenant_name: str, token: str) -> Tenant:
        """Store ``token`` (its hash only) for ``tenant_name``, creating the tenant if new."""
        for _ in range(2):  # a concurrent first token for the same tenant: read it again
            try:
                with self._unit() as s:
                    tenant = s.scalar(select(TenantRow).where(TenantRow.name == tenant_name))
                    if tenant is None:
                        tenant = TenantRow(name=tenant_name, created_at=utcnow())
                        s.add(tenant)
                        s.flush()
                    s.add(
                        TokenRow(
                            tenant_pk=tenant.pk,
                            token_hash=hash_token(token),
                            prefix=token[:12],
                            created_at=utcnow(),
                        )
                    )
                    return Tenant(tenant.pk, tenant.name)
            except IntegrityError:
                continue
        raise Conflict(f"could not create a token for tenant {tenant_name!r}; try again")

    def list_tokens(self, tenant_name: str) -> list[tuple[str, datetime]]:
        """The tenant's tokens as (prefix, created) — the prefix is all that is shown."""
        with self._unit() as s:
            rows = s.execute(
                select(TokenRow.prefix, TokenRow.created_at)
                .join(TenantRow, TenantRow.pk == TokenRow.tenant_pk)
                .where(TenantRow.name == tenant_name)
                .order_by(TokenRow.pk)
            )
            return [(prefix, _aware(created) or created) for prefix, created in rows]

    def revoke_token(self, prefix: str) -> int:
        """Delete the token with this prefix; refuses an ambiguous prefix."""
        with self._unit() as s:
            found = list(s.scalars(select(TokenRow).where(TokenRow.prefix.startswith(prefix))))
            if len(found) > 1:
                raise Conflict(f"{len(found)} tokens start with {prefix!r}; give more of it")
            for row in found:
                s.delete(row)
            return len(found)

    def tenant_for_token(self, token: str) -> Tenant:
        with self._unit() as s:
            row = s.execute(
                select(TenantRow.pk, TenantRow.name)
                .join(TokenRow, TokenRow.tenant_pk == TenantRow.pk)
                .where(TokenRow.token_hash == hash_token(token))
            ).first()
        if row is None:
            raise Unauthorized("unknown token; create one with `dualtune token create --tenant T`")
        return Tenant(row.pk, row.name)

    # -- sweeps
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
                    status="pending",
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
                                "status": "pending",
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
                return _sweep(row, {"pending": len(trials)}), True
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
            return _sweep(found.SweepRow, self._counts(s, found.SweepRow.pk))

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
            return _sweep(row, self._counts(s, row.pk))

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
            items = [_sweep(r, counts[r.pk]) for r in rows]
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
        return Page([_trial(r) for r in rows], encode_cursor(rows[-1].position) if more else None)

    def all_trials(self, tenant: Tenant, sweep_id: str) -> tuple[Sweep, list[Trial]]:
        with self._unit() as s:
            row = self._owned(s, tenant, sweep_id)
            trials = s.scalars(
                select(TrialRow).where(TrialRow.sweep_pk == row.pk).order_by(TrialRow.position)
            )
            records = [_trial(t) for t in trials]
            counts: dict[str, int] = {}
            for t in records:
                counts[t.status] = counts.get(t.status, 0) + 1
            return _sweep(row, counts), records

    def sweep_and_succeeded(self, tenant: Tenant, sweep_id: str) -> tuple[Sweep, list[Trial]]:
        """The sweep with its counts, and only its succeeded trials (the best trial's pool)."""
        with self._unit() as s:
            row = self._owned(s, tenant, sweep_id)
            trials = s.scalars(
                select(TrialRow)
                .where(TrialRow.sweep_pk == row.pk, TrialRow.status == "succeeded")
                .order_by(TrialRow.position)
            )
            records = [_trial(t) for t in trials]
            return _sweep(row, self._counts(s, row.pk)), records

    def request_cancel(self, tenant: Tenant, sweep_id: str) -> Sweep:
        """A pending sweep is cancelled at once; a launched one goes to ``cancelling`` and the
        reconciler stops its driver. Cancelling a cancelled sweep changes nothing."""
        with self._unit() as s:
            row = self._owned(s, tenant, sweep_id, lock=True)
            now = utcnow()
            if row.status in ("succeeded", "failed"):
                raise Conflict(
                    f"sweep {sweep_id} already {row.status}; there is nothing to cancel"
                )
            if row.status == "pending":
                row.status, row.finished_at = "cancelled", now
                self._finish_trials(s, row.pk, "cancelled", now)
            elif row.status in ("launching", "running"):
                row.status = "cancelling"
            row.updated_at = now
            s.flush()
            return _sweep(row, self._counts(s, row.pk))

    def retry(self, tenant: Tenant, sweep_id: str) -> Sweep:
        """Reset the failed, diverged and cancelled trials of a finished sweep to pending, in
        a new generation, and queue the sweep for launch again."""
        with self._unit() as s:
            row = self._owned(s, tenant, sweep_id, lock=True)
            if row.status not in SWEEP_FINAL:
                raise Conflict(
                    f"sweep {sweep_id} is {row.status}; retry it once it has finished "
                    "(or cancel it first)"
                )
            now = utcnow()
            generation = row.generation + 1
            reset = _rowcount(
                s.execute(
                    update(TrialRow)
                    .where(TrialRow.sweep_pk == row.pk, TrialRow.status.in_(TRIAL_RETRYABLE))
                    .values(
                        status="pending",
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
            row.status, row.error, row.finished_at = "pending", None, None
            row.launcher_ref = row.worker_token_hash = None
            row.updated_at = now
            s.flush()
            return _sweep(row, self._counts(s, row.pk))

    # -- the driver's side (per-sweep worker token)
    def _worker_sweep(self, s: Session, sweep_id: str, token: str) -> SweepRow:
        row = s.scalar(select(SweepRow).where(SweepRow.id == sweep_id))
        if row is None or row.worker_token_hash != hash_token(token):
            raise Unauthorized("the worker token does not belong to this sweep's current driver")
        return row

    def worker_view(self, sweep_id: str, token: str) -> WorkerView:
        with self._unit() as s:
            row = self._worker_sweep(s, sweep_id, token)
            trials = [
                _trial(t)
                for t in s.scalars(
                    select(TrialRow).where(TrialRow.sweep_pk == row.pk).order_by(TrialRow.position)
                )
            ]
            run = [t.trial_id for t in trials if t.generation == row.generation]
            return WorkerView(_sweep(row), run, trials)

    def apply_events(
        self,
        sweep_id: str,
        token: str,
        *,
        generation: int,
        updates: Sequence[TrialUpdate],
        mlflow_experiment_id: str | None = None,
        mlflow_parent_run_id: str | None = None,
    ) -> int:
        """Upsert trial states from the driver; returns how many trials changed. Replaying an
        event changes nothing: a final state is never overwritten by ``running``, and events
        of an older generation, or for a finished sweep, are ignored."""
        changed = 0
        with self._unit() as s:
            sweep = self._worker_sweep(s, sweep_id, token)
            if sweep.status in SWEEP_FINAL or generation != sweep.generation:
                return 0
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
            for u in updates:
                row = rows.get(u.trial_id)
                if row is None or row.generation != generation:
                    continue
                if u.status == "running" and row.status in TRIAL_FINAL:
                    continue
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
            if sweep.status == "launching" and changed:
                sweep.status = "running"
        return changed

    def fail_from_driver(self, sweep_id: str, token: str, *, generation: int, error: str) -> bool:
        """The driver found that the sweep cannot run (its check before any trial): close
        it ``failed`` with ``error``, its unfinished trials too, and release it (a relaunch
        would fail the same way). False, changing nothing, for a finished or cancelling
        sweep or another generation's driver."""
        with self._unit() as s:
            row = s.scalar(select(SweepRow).where(SweepRow.id == sweep_id).with_for_update())
            if row is None or row.worker_token_hash != hash_token(token):
                raise Unauthorized(
                    "the worker token does not belong to this sweep's current driver"
                )
            if row.status in SWEEP_FINAL or row.status == "cancelling":
                return False
            if generation != row.generation:
                return False
            now = utcnow()
            self._finish_trials(s, row.pk, "failed", now, error)
            row.status, row.error = "failed", error
            row.finished_at = row.updated_at = now
            row.lease_owner, row.lease_expires_at = None, None
            row.worker_token_hash = None
            return True

    # -- the reconciler's side
    def claim(self, owner: str, *, lease_s: float, limit: int | None = None) -> list[Sweep]:
        """Take (or renew) the lease on active sweeps no other live replica holds. Safe with
        several replicas: candidates are locked with SKIP LOCKED on Postgres, and the claim is
        one conditional update that only one replica can win for each sweep."""
        now = utcnow()
        claimable = or_(
            SweepRow.lease_owner.is_(None),
            SweepRow.lease_owner == owner,
            SweepRow.lease_expires_at < now,
        )
        with self._unit() as s:
            candidates = list(
                s.scalars(
                    select(SweepRow.pk)
                    .where(SweepRow.status.in_(SWEEP_ACTIVE), claimable)
                    .order_by(SweepRow.pk)
                    .limit(limit)  # None: every one (this replica renews what it holds)
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
            return sorted((_sweep(r) for r in rows), key=lambda sweep: sweep.pk)

    def release(self, owner: str) -> None:
        with self._unit() as s:
            s.execute(
                update(SweepRow)
                .where(SweepRow.lease_owner == owner)
                .values(lease_owner=None, lease_expires_at=None)
            )

    def begin_launch(self, sweep_id: str, owner: str, worker_token: str) -> Sweep:
        """Mark a claimed sweep ``launching`` with a fresh worker token; counts the launch."""
        with self._unit() as s:
            row = self._leased(s, sweep_id, owner)
            row.status = "launching"
            row.launch_count += 1
            row.worker_token_hash = hash_token(worker_token)
            row.updated_at = utcnow()
            s.flush()
            return _sweep(row)

    def launched(self, sweep_id: str, owner: str, launcher_ref: str) -> None:
        with self._unit() as s:
            row = self._leased(s, sweep_id, owner)
            if row.status == "launching":
                row.status = "running"
            row.launcher_ref = launcher_ref
            row.launch_failures, row.retry_launch_at, row.error = 0, None, None
            row.launched_at = row.updated_at = utcnow()

    def launch_failed(self, sweep_id: str, owner: str, error: str) -> None:
        """The launcher refused: back to pending, to be tried again after a backoff (1, 2, 4,
        … 60 s). A refused launch started no driver, so it is not counted as a launch."""
        with self._unit() as s:
            row = self._leased(s, sweep_id, owner)
            if row.status == "launching":
                row.status = "pending"
            now = utcnow()
            row.launch_count -= 1
            row.launch_failures += 1
            row.retry_launch_at = now + timedelta(
                seconds=min(2.0 ** (row.launch_failures - 1), 60)
            )
            row.error = error
            row.updated_at = now

    def finish(
        self, sweep_id: str, owner: str, status: str, *, trials: str, error: str | None = None
    ) -> None:
        """Close a sweep: its unfinished trials become ``trials`` (cancelled or failed)."""
        with self._unit() as s:
            row = self._leased(s, sweep_id, owner)
            now = utcnow()
            self._finish_trials(s, row.pk, trials, now, error)
            row.status, row.error = status, error
            row.finished_at = row.updated_at = now
            row.lease_owner, row.lease_expires_at = None, None
            row.worker_token_hash = None

    def _finish_trials(
        self, s: Session, sweep_pk: int, status: str, now: datetime, error: str | None = None
    ) -> None:
        s.execute(
            update(TrialRow)
            .where(TrialRow.sweep_pk == sweep_pk, TrialRow.status.not_in(TRIAL_FINAL))
            .values(status=status, updated_at=now, error=error)
        )

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

    # -- gauges for /metrics
    def sweeps_by_status(self) -> dict[str, int]:
        with self._unit() as s:
            rows = s.execute(select(SweepRow.status, func.count()).group_by(SweepRow.status))
            return {status: int(n) for status, n in rows}

    def trials_by_status(self) -> dict[str, int]:
        with self._unit() as s:
            rows = s.execute(select(TrialRow.status, func.count()).group_by(TrialRow.status))
            return {status: int(n) for status, n in rows}
