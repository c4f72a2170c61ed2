"""Request and response bodies, separate from rows and records (``*Create``/``*Public``).

Pure pydantic (no FastAPI, no SQLAlchemy): ``dualtune.Client`` parses the service's answers
with these same models.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    field_validator,
)
from pydantic_core import ErrorDetails

from dualtune.core.mlflow_links import experiment_url, run_url
from dualtune.core.spec import hostile_values
from dualtune.core.spec.errors import field_errors
from dualtune.core.states import TRIAL_REPORTED, SweepState, TrialState
from dualtune.service.records import Sweep, Trial

SweepStatus = SweepState
TrialStatus = TrialState

MAX_GENERATION = 2**31 - 1
"""Generations live in a 32-bit column; each retry adds one."""
MAX_ATTEMPT = 10_000
"""Tune's attempts of one trial: its retries are a handful, never thousands."""
MAX_EVENTS = 20_000
"""Events in one batch (the driver sends at most a few hundred at a time)."""
ERROR_LENGTH = 20_000
"""The driver cuts tracebacks to this length (``worker.service_link.ERROR_LIMIT``)."""


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("contains a NUL character (\\u0000); remove it")
    return value


Text = Annotated[str, AfterValidator(_no_nul)]
"""A string the database can store: Postgres refuses NUL in text."""


class Body(BaseModel):
    # NaN and ±Infinity (Python's JSON parser accepts them) are no number a body may carry.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class SweepCreate(Body):
    spec: dict[str, Any] = Field(
        description="The sweep spec (ARCHITECTURE §3.1), as the YAML file's content in JSON. "
        "Numbers must be finite and strings free of NUL characters."
    )

    @field_validator("spec")
    @classmethod
    def _storable(cls, value: dict[str, Any]) -> dict[str, Any]:
        # A free mapping: walked here so the refusal names the path (spec.dual.lr).
        hostile = hostile_values(value)
        if hostile:
            raise field_errors(hostile)
        return value


class MlflowLinks(BaseModel):
    experiment_id: str | None
    parent_run_id: str | None
    parent_run_url: str | None
    experiment_url: str | None = None
    """The sweep's runs table in the MLflow UI, with its columns (``core.mlflow_links``)."""


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


class BestFeasiblePublic(BaseModel):
    epoch: int = Field(description="the evaluation's epoch")
    metrics: dict[str, float] = Field(
        description="its selection metric, bounded metrics and table metrics"
    )


class ReportTrialPublic(BaseModel):
    trial_id: str
    params: dict[str, Any]
    status: str | None = Field(
        default=None, description="succeeded, or stopped early (null from an older service)"
    )
    epochs: float | None = Field(default=None, description="epochs it trained")
    metrics: dict[str, float | None] = Field(description="the report's table metrics")
    best_feasible: BestFeasiblePublic | None = Field(
        default=None,
        description="its best evaluation by the selection among those meeting every bound, "
        "beside its last one (null when none met them)",
    )
    mlflow_run_id: str | None = None


class MethodReportPublic(BaseModel):
    method: str
    trials: int
    succeeded: int
    stopped: int = Field(default=0, description="trials stopped early by early_stopping")
    met_bounds: int = Field(
        description="succeeded and stopped trials that meet every selection bound"
    )
    best: ReportTrialPublic | None = Field(
        description="the best trial by the selection among those that meet its bounds"
    )
    best_infeasible: ReportTrialPublic | None = Field(
        description="when none meets the bounds: the trial closest to them"
    )
    vs_erm: dict[str, float] = Field(description="table metrics as ratios to ERM's best")


class ParetoConstraintAxisPublic(BaseModel):
    metric: str
    direction: Literal["min", "max"] = Field(description="which way the metric is better")
    bound: BoundPublic | None = Field(
        description="the feasible region: the first selection.subject_to bound, if any"
    )


class ParetoSelectionAxisPublic(BaseModel):
    metric: str
    mode: Literal["min", "max"]


class ParetoPointPublic(BaseModel):
    trial_id: str
    x: float = Field(description="the trial's constraint metric")
    y: float = Field(description="the trial's selection metric")
    params: dict[str, Any]


class MethodParetoPublic(BaseModel):
    method: str
    points: list[ParetoPointPublic] = Field(
        description="the method's succeeded and stopped trials with both metrics finite"
    )
    front: list[str] = Field(
        description="the trial ids on the method's Pareto front, in ascending x"
    )


class ParetoPublic(BaseModel):
    x: ParetoConstraintAxisPublic = Field(description="the constraint metric")
    y: ParetoSelectionAxisPublic = Field(description="the selection metric")
    methods: list[MethodParetoPublic]


class ComputePublic(BaseModel):
    epochs_run: int = Field(description="epochs the sweep's trials trained, summed")
    epochs_asked: int = Field(description="train.epochs × the trials")
    share: float | None = Field(description="epochs_run ÷ epochs_asked")
    stopped: int = Field(description="trials stopped early")
    early_stopping: dict[str, Any] | None = Field(description="the spec's early_stopping")


class ReportPublic(BaseModel):
    sweep_id: str
    name: str
    status: SweepStatus
    selection: SelectionPublic
    trial_counts: dict[str, int]
    table_metrics: list[str]
    methods: list[MethodReportPublic]
    mlflow_parent_run_id: str | None
    pareto: ParetoPublic | None = Field(
        default=None,
        description="per method, every trial's constraint metric against the selection "
        "metric and the trials on the front (null from a service that predates it)",
    )
    compute: ComputePublic | None = Field(
        default=None,
        description="the epochs run against those asked: what early stopping saved",
    )


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


def _reported(value: TrialState) -> TrialState:
    if value not in TRIAL_REPORTED:
        raise ValueError(
            f"a driver reports {', '.join(sorted(TRIAL_REPORTED))}; {value} is the service's"
        )
    return value


ReportedStatus = Annotated[
    TrialState,
    AfterValidator(_reported),
    WithJsonSchema({"type": "string", "enum": sorted(TRIAL_REPORTED)}),
]
MlflowId = Annotated[Text, Field(min_length=1, max_length=64)]
MetricName = Annotated[Text, Field(min_length=1, max_length=200)]


class TrialEventIn(Body):
    """One trial event; validated on its own, so a bad one is rejected alone."""

    trial_id: Annotated[Text, Field(min_length=1, max_length=80)]
    status: ReportedStatus
    attempt: int = Field(ge=1, le=MAX_ATTEMPT)
    metrics: dict[MetricName, float] = Field(default_factory=dict, max_length=1_000)
    mlflow_run_id: MlflowId | None = None
    error: Annotated[Text, Field(max_length=ERROR_LENGTH)] | None = None


EventItem = Annotated[Any, WithJsonSchema(TrialEventIn.model_json_schema())]
"""An event as sent: the route checks each against ``TrialEventIn`` on its own (the schema
documents it as one), so one poisoned event cannot refuse the batch."""


class EventBatch(Body):
    generation: int = Field(ge=0, le=MAX_GENERATION)
    events: list[EventItem] = Field(default_factory=list, max_length=MAX_EVENTS)
    mlflow_experiment_id: MlflowId | None = None
    mlflow_parent_run_id: MlflowId | None = None


class SweepFailure(Body):
    """The driver's check found that the sweep cannot run (before any trial started)."""

    generation: int = Field(ge=0, le=MAX_GENERATION)
    error: Annotated[Text, Field(min_length=1, max_length=ERROR_LENGTH)]


class RejectedEventPublic(BaseModel):
    index: int = Field(description="the event's position in the batch that was sent")
    trial_id: str | None
    reason: str = Field(description="why it was not applied; the driver drops it for good")


class EventAck(BaseModel):
    changed: int
    rejected: list[RejectedEventPublic] = Field(default_factory=list)


def _escaped(text: str) -> str:
    return text.replace("\x00", "\\u0000")


_HINTS = {
    "finite_number": "must be a finite number (JSON has no NaN or Infinity); "
    "send a finite value or leave it out",
    "extra_forbidden": "unknown field; remove it",
}


def error_message(err: ErrorDetails) -> str:
    """A validation error's message for a person: what is wrong and what to send instead."""
    return _HINTS.get(err["type"]) or str(err["msg"]).removeprefix("Value error, ")


def check_event(index: int, raw: object) -> TrialEventIn | RejectedEventPublic:
    """``raw``, the ``index``-th event of a batch, checked on its own: the event, or why it
    is refused, naming each field as ``events.{index}.metrics.val/loss_mean``."""
    try:
        return TrialEventIn.model_validate(raw)
    except ValidationError as exc:
        parts = []
        for err in exc.errors():
            where = ".".join(
                ["events", str(index), *(_escaped(str(p)) for p in err["loc"] if p != "[key]")]
            )
            parts.append(f"{where}: {error_message(err)}")
        trial_id = raw.get("trial_id") if isinstance(raw, dict) else None
        return RejectedEventPublic(
            index=index,
            trial_id=_escaped(trial_id)[:80] if isinstance(trial_id, str) else None,
            reason="; ".join(parts),
        )


class WorkerSweep(BaseModel):
    sweep_id: str
    name: str
    generation: int
    spec: dict[str, Any]
    run_trial_ids: list[str]
    trials: list[TrialPublic]


def trial_public(
    t: Trial, *, ui: str | None = None, experiment_id: str | None = None
) -> TrialPublic:
    return TrialPublic(
        trial_id=t.trial_id,
        position=t.position,
        method=t.method,
        params=t.params,
        status=TrialState(t.status),
        attempts=t.attempts,
        metrics=t.metrics,
        mlflow_run_id=t.mlflow_run_id,
        mlflow_run_url=run_url(ui, experiment_id, t.mlflow_run_id),
        error=t.error,
        updated_at=t.updated_at,
    )


def sweep_public(s: Sweep, *, ui: str | None = None, best: Trial | None = None) -> SweepPublic:
    return SweepPublic(
        id=s.id,
        name=s.name,
        status=SweepState(s.status),
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
            parent_run_url=run_url(ui, s.mlflow_experiment_id, s.mlflow_parent_run_id),
            experiment_url=experiment_url(ui, s.mlflow_experiment_id),
        ),
        error=s.error,
        created_at=s.created_at,
        updated_at=s.updated_at,
        launched_at=s.launched_at,
        finished_at=s.finished_at,
    )
