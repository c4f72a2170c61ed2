"""SQLAlchemy 2 rows. Only the repository touches them; routes see frozen records."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dict[str, Any]: JSON,
        datetime: DateTime(timezone=True),
    }


class TenantRow(Base):
    __tablename__ = "tenants"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[datetime]


class TokenRow(Base):
    """A bearer token, stored as its SHA-256 only (tokens are 256 random bits, so a salt adds
    nothing); ``prefix`` lets a person tell tokens apart."""

    __tablename__ = "tokens"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_pk: Mapped[int] = mapped_column(ForeignKey("tenants.pk", ondelete="CASCADE"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]


class SweepRow(Base):
    __tablename__ = "sweeps"
    __table_args__ = (
        Index("ix_sweeps_tenant_status", "tenant_pk", "status", "pk"),
        Index("ix_sweeps_status_lease", "status", "lease_expires_at"),
    )

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    tenant_pk: Mapped[int] = mapped_column(ForeignKey("tenants.pk", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    spec: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(20))
    generation: Mapped[int] = mapped_column(Integer, default=0)
    """Raised by each retry: a retry runs the reset trials as a new Tune experiment."""
    launch_count: Mapped[int] = mapped_column(Integer, default=0)
    """Driver launches in this generation (the first and every relaunch)."""
    launch_failures: Mapped[int] = mapped_column(Integer, default=0)
    """Launches the launcher refused in a row (they do not count as launches)."""
    retry_launch_at: Mapped[datetime | None]
    launcher_ref: Mapped[str | None] = mapped_column(String(200))
    launch_submission_id: Mapped[str | None] = mapped_column(String(120))
    """The current launch's submission id, committed before the launcher starts the driver:
    a service that dies in between finds the driver again by it (revision 0002)."""
    worker_token_hash: Mapped[str | None] = mapped_column(String(64))
    mlflow_experiment_id: Mapped[str | None] = mapped_column(String(64))
    mlflow_parent_run_id: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    lease_owner: Mapped[str | None] = mapped_column(String(100))
    lease_expires_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    launched_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class TrialRow(Base):
    __tablename__ = "trials"
    __table_args__ = (
        UniqueConstraint("sweep_pk", "trial_id"),
        Index("ix_trials_sweep_status", "sweep_pk", "status", "position"),
        Index("ix_trials_sweep_position", "sweep_pk", "position"),
    )

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    sweep_pk: Mapped[int] = mapped_column(ForeignKey("sweeps.pk", ondelete="CASCADE"))
    trial_id: Mapped[str] = mapped_column(String(80))
    position: Mapped[int] = mapped_column(Integer)
    method: Mapped[str] = mapped_column(String(40))
    params: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(20))
    generation: Mapped[int] = mapped_column(Integer, default=0)
    """The sweep generation that (re)runs this trial."""
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    prior_attempts: Mapped[int] = mapped_column(Integer, default=0)
    """Attempts of earlier generations: a retry's attempts count on from them."""
    metrics: Mapped[dict[str, Any]]
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime]


class IdempotencyRow(Base):
    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("tenant_pk", "key"),)

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_pk: Mapped[int] = mapped_column(ForeignKey("tenants.pk", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(200))
    body_hash: Mapped[str] = mapped_column(String(64))
    sweep_pk: Mapped[int] = mapped_column(ForeignKey("sweeps.pk", ondelete="CASCADE"))
    created_at: Mapped[datetime]
