"""Request and response bodies, separate from rows and records (``*Create``/``*Public``).

Pure pydantic (no FastAPI, no SQLAlchemy): ``dualtune.Client`` parses the service's answers
with these same models.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from dualtune.service.records import Sweep, Trial

SweepStatus = Literal[
    "pending", "launching", "running", "cancelling", "succeeded", "failed", "cancelled"
]
TrialStatus = Literal["pending", "running", "succeeded", "failed", "diverged", "cancelled"]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SweepCreate(Body):
    spec: dict[str, Any] = Field(
        description="The sweep spec (ARCHITECTURE §3.1), as the YAML file's content in JSON."
    )


class MlflowLinks(BaseModel):
    experiment_id: str | None
    parent_run_id: str | None
    parent_run_url: str | None


class TrialPublic(BaseModel):
    trial_id: str
    position: int
    method: str
    params: dict[str, Any]
    status: TrialStatus
    attempts: int
    metrics: dict[str, float]
    mlflow_run_id: str | None
    mlflow_run_url: str | None
    error: str | None
    updated_at: datetime


class SweepPublic(BaseModel):
    id: str
    name: str
    status: SweepStatus
    generation: int
    spec: dict[str, Any]
    total_trials: int
    trial_counts: dict[str, int]
    best_trial: TrialPublic | None = None
    mlflow: MlflowLinks
    error: str | None
    created_at: datetime
    updated_at: datetime
    launched_at: datetime | None
    finished_at: datetime | None


class SweepPage(BaseModel):
    items: list[SweepPublic]
    next_cursor: str | None


class TrialPage(BaseModel):
    items: list[TrialPublic]
    next_cursor: str | None


class ErrorPublic(BaseModel):
    detail: str
    errors: list[dict[str, str]] = Field(default_factory=list)


class BoundPublic(BaseModel):
    min: float | None = None
    max: float | None = None


class SelectionPublic(BaseModel):
    metric: str
    mode: Literal["min", "max"]
    subject_to: dict[str, BoundPublic] = Field(default_factory=dict)


class ReportTrialPublic(BaseModel):
    trial_id: str
    params: dict[str, Any]
    metrics: dict[str, float | None] = Field(description="the report's table metrics")
    mlflow_run_id: str | None = None


class MethodReportPublic(BaseModel):
    method: str
    trials: int
    succeeded: int
    met_bounds: int = Field(description="succeeded trials that meet every selection bound")
    best: ReportTrialPublic | None = Field(
        description="the best trial by the selection among those that meet its bounds"
    )
    best_infeasible: ReportTrialPublic | None = Field(
        description="when none meets the bounds: the trial closest to them"
    )
    vs_erm: dict[str, float] = Field(description="table metrics as ratios to ERM's best")


class ReportPublic(BaseModel):
    sweep_id: str
    name: str
    status: SweepStatus
    selection: SelectionPublic
    trial_counts: dict[str, int]
    table_metrics: list[str]
    methods: list[MethodReportPublic]
    mlflow_parent_run_id: str | None


class TaskPublic(BaseModel):
    name: str
    problem: str
    summary: str
    group_attributes: list[str]
    parameters: dict[str, Any] = Field(description="JSON schema of the task's parameters")
    source: str = Field(
        description="where the task comes from: a distribution and its entry point, or "
        "'registered in-process'"
    )


class MethodPublic(BaseModel):
    name: str
    summary: str
    grid_keys: list[str]
    constraint_kinds: list[str]


class ConstraintKindPublic(BaseModel):
    name: str
    summary: str
    multipliers: str
    source: str = Field(description="where the kind comes from (as a task's source)")


class GridKeyPublic(BaseModel):
    name: str
    summary: str
    default: float | None


class PluginErrorPublic(BaseModel):
    group: str = Field(description="the entry-point group: dualtune.tasks or dualtune.constraints")
    name: str
    source: str
    error: str


class CatalogPublic(BaseModel):
    tasks: list[TaskPublic]
    methods: list[MethodPublic]
    constraint_kinds: list[ConstraintKindPublic]
    grid_keys: list[GridKeyPublic]
    plugin_errors: list[PluginErrorPublic] = Field(
        description="plugins that failed to load: not in the catalog, everything else works"
    )


class TrialEventIn(Body):
    trial_id: str = Field(max_length=80)
    status: Literal["running", "succeeded", "failed", "diverged"]
    attempt: int = Field(ge=1)
    metrics: dict[str, float] = Field(default_factory=dict)
    mlflow_run_id: str | None = Field(default=None, max_length=64)
    error: str | None = None


class EventBatch(Body):
    generation: int = Field(ge=0)
    events: list[TrialEventIn] = Field(default_factory=list, max_length=20000)
    mlflow_experiment_id: str | None = Field(default=None, max_length=64)
    mlflow_parent_run_id: str | None = Field(default=None, max_length=64)


class SweepFailure(Body):
    """The driver's check found that the sweep cannot run (before any trial started)."""

    generation: int = Field(ge=0)
    error: str = Field(min_length=1, max_length=20_000)


class EventAck(BaseModel):
    changed: int


class WorkerSweep(BaseModel):
    sweep_id: str
    name: str
    generation: int
    spec: dict[str, Any]
    run_trial_ids: list[str]
    trials: list[TrialPublic]


def _run_url(ui: str | None, experiment_id: str | None, run_id: str | None) -> str | None:
    if not (ui and experiment_id and run_id):
        return None
    return f"{ui.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def trial_public(
    t: Trial, *, ui: str | None = None, experiment_id: str | None = None
) -> TrialPublic:
    return TrialPublic(
        trial_id=t.trial_id,
        position=t.position,
        method=t.method,
        params=t.params,
        status=t.status,  # type: ignore[arg-type]
        attempts=t.attempts,
        metrics=t.metrics,
        mlflow_run_id=t.mlflow_run_id,
        mlflow_run_url=_run_url(ui, experiment_id, t.mlflow_run_id),
        error=t.error,
        updated_at=t.updated_at,
    )


def sweep_public(s: Sweep, *, ui: str | None = None, best: Trial | None = None) -> SweepPublic:
    return SweepPublic(
        id=s.id,
        name=s.name,
        status=s.status,  # type: ignore[arg-type]
        generation=s.generation,
        spec=s.spec,
        total_trials=sum(s.trial_counts.values()),
        trial_counts=s.trial_counts,
        best_trial=trial_public(best, ui=ui, experiment_id=s.mlflow_experiment_id)
        if best
        else None,
        mlflow=MlflowLinks(
            experiment_id=s.mlflow_experiment_id,
            parent_run_id=s.mlflow_parent_run_id,
            parent_run_url=_run_url(ui, s.mlflow_experiment_id, s.mlflow_parent_run_id),
        ),
        error=s.error,
        created_at=s.created_at,
        updated_at=s.updated_at,
        launched_at=s.launched_at,
        finished_at=s.finished_at,
    )
