"""The repository's ground floor: one unit of work per call, records out of rows, cursors.

Every database failure is mapped into the service's error tree here, once (as Optuna's RDB
storage does): bad data the database refused (a value it cannot store) is the caller's
``InvalidInput`` (422); only a connection or lock problem is ``Unavailable`` (503, retry).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from sqlalchemy import CursorResult, Engine, text
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError, StatementError
from sqlalchemy.orm import Session, sessionmaker

from dualtune.core.states import SweepState, TrialState
from dualtune.service.db.rows import SweepRow, TrialRow
from dualtune.service.errors import InvalidInput, Unavailable
from dualtune.service.records import Sweep, Trial

MAX_PK = 2**63 - 1
"""The largest key a cursor may name (a BIGINT on Postgres; SQLite's INTEGER)."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def aware(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; everything stored is UTC.
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def rowcount(result: object) -> int:
    assert isinstance(result, CursorResult)
    return int(result.rowcount)


def encode_cursor(pk: int) -> str:
    return base64.urlsafe_b64encode(str(pk).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int | None:
    if not cursor:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = int(base64.urlsafe_b64decode(padded.encode()).decode())
    except (ValueError, binascii.Error, UnicodeDecodeError):
        value = -1
    if not 0 <= value <= MAX_PK:
        raise InvalidInput(
            "cursor: not a cursor this service issued; pass the next_cursor of the previous "
            "page, or leave it out for the first page",
            field="cursor",
        )
    return value


def sweep_record(row: SweepRow, counts: dict[str, int] | None = None) -> Sweep:
    return Sweep(
        pk=row.pk,
        id=row.id,
        tenant_pk=row.tenant_pk,
        name=row.name,
        spec=dict(row.spec),
        status=SweepState(row.status),
        generation=row.generation,
        launch_count=row.launch_count,
        launch_failures=row.launch_failures,
        retry_launch_at=aware(row.retry_launch_at),
        launcher_ref=row.launcher_ref,
        launch_submission_id=row.launch_submission_id,
        mlflow_experiment_id=row.mlflow_experiment_id,
        mlflow_parent_run_id=row.mlflow_parent_run_id,
        error=row.error,
        created_at=aware(row.created_at) or row.created_at,
        updated_at=aware(row.updated_at) or row.updated_at,
        launched_at=aware(row.launched_at),
        finished_at=aware(row.finished_at),
        trial_counts=counts or {},
    )


def trial_record(row: TrialRow) -> Trial:
    return Trial(
        trial_id=row.trial_id,
        position=row.position,
        method=row.method,
        params=dict(row.params),
        status=TrialState(row.status),
        generation=row.generation,
        attempts=row.attempts,
        metrics={k: float(v) for k, v in (row.metrics or {}).items()},
        mlflow_run_id=row.mlflow_run_id,
        error=row.error,
        updated_at=aware(row.updated_at) or row.updated_at,
    )


class UnitOfWork:
    """Sessions on ``engine``; ``_unit()`` commits on success and rolls back on any error."""

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
        except DataError as exc:  # a value the database cannot store: the request's fault
            session.rollback()
            raise InvalidInput(
                f"the database refused a value: {_reason(exc)}; remove NUL characters and "
                "non-finite numbers, and keep numbers within 64 bits",
                cause=_reason(exc),
            ) from exc
        except OperationalError as exc:
            session.rollback()
            raise Unavailable(
                "the database is unavailable; retry shortly", cause=_reason(exc)
            ) from exc
        except DBAPIError as exc:
            session.rollback()
            if exc.connection_invalidated:
                raise Unavailable(
                    "the database connection was lost; retry shortly", cause=_reason(exc)
                ) from exc
            raise
        except StatementError as exc:  # the driver refused to send a parameter (a NUL, ...)
            session.rollback()
            if isinstance(exc.orig, ValueError):
                raise InvalidInput(
                    f"the database cannot store a value: {exc.orig}", cause=str(exc.orig)
                ) from exc
            raise
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def ping(self) -> None:
        with self._unit() as s:
            s.execute(text("SELECT 1"))


def _reason(exc: DBAPIError) -> str:
    return str(exc.orig if exc.orig is not None else exc).strip().splitlines()[0]
