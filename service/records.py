"""Frozen records: what the repository returns and the use-cases and routes work with."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

from dualtune.core.states import SweepState, TrialState

T = TypeVar("T")


@dataclass(frozen=True)
class Tenant:
    pk: int
    name: str


@dataclass(frozen=True)
class Trial:
    trial_id: str
    position: int
    method: str
    params: dict[str, Any]
    status: TrialState
    generation: int
    attempts: int
    metrics: dict[str, float]
    mlflow_run_id: str | None
    error: str | None
    updated_at: datetime


@dataclass(frozen=True)
class Sweep:
    pk: int
    id: str
    tenant_pk: int
    name: str
    spec: dict[str, Any]
    status: SweepState
    generation: int
    launch_count: int
    launch_failures: int
    retry_launch_at: datetime | None
    launcher_ref: str | None
    launch_submission_id: str | None
    mlflow_experiment_id: str | None
    mlflow_parent_run_id: str | None
    error: str | None
    created_at: datetime
    updated_at: datetime
    launched_at: datetime | None
    finished_at: datetime | None
    trial_counts: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


@dataclass(frozen=True)
class NewTrial:
    trial_id: str
    position: int
    method: str
    params: dict[str, Any]


@dataclass(frozen=True)
class TrialUpdate:
    """One worker event about one trial."""

    trial_id: str
    status: TrialState
    attempt: int
    metrics: dict[str, float]
    mlflow_run_id: str | None
    error: str | None


@dataclass(frozen=True)
class WorkerView:
    """What a driver needs of its sweep: the spec, the generation, and which trials to run."""

    sweep: Sweep
    run_trial_ids: list[str]
    trials: list[Trial]


@dataclass(frozen=True)
class RejectedEvent:
    """One event the service did not apply, and why (the driver logs it and drops it)."""

    index: int
    """Its position in the batch the driver sent."""
    trial_id: str | None
    reason: str


@dataclass(frozen=True)
class AppliedEvents:
    changed: int
    """Trials whose stored state changed."""
    rejected: list[RejectedEvent] = field(default_factory=list)
