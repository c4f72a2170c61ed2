"""The sections of a sweep spec (ARCHITECTURE §3.1). Every model forbids unknown keys.

The ``constraint:`` section is each kind's own ``ConstraintParams``, looked up in the
constraint-kind registry; the built-in kinds' sections live with their descriptions
(``core.catalog.builtin_constraints``), re-exported by ``core.spec``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_validator,
)

from dualtune.core.catalog import (
    CONSTRAINT_KINDS,
    GRID_KEYS,
    TASKS,
    ConstraintParams,
    plugin_errors,
)
from dualtune.core.spec.errors import UNKNOWN_FIELD, error_items, field_errors

PositiveFloat = Annotated[float, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]

# Upper bounds: each is far beyond any real sweep, so that a typo (or a hostile 10**20) is
# refused by name here instead of reaching a loop, a column or a scheduler.
MAX_EPOCHS = 100_000
"""Epochs of one trial (every epoch is a Tune report and MLflow step)."""
MAX_BATCH_SIZE = 100_000_000
"""Larger than any dataset a trial holds in memory; "the whole set" fits below it."""
MAX_TRIALS_LIMIT = 10_000_000
"""``limits.max_trials`` and ``max_failures``: counts of trials, which no sweep reaches."""
MAX_GRID_VALUES = 1_000
"""Values on one grid axis: more is a random search, not a grid."""
MAX_SEED = 2**32 - 1
"""numpy and scikit-learn take seeds below 2**32."""
MAX_CPUS, MAX_GPUS = 1_024, 64
"""Per trial: a request beyond any node that Ray would leave pending forever."""
NAME_LENGTH = 200
"""Task, metric and method names: identifiers, not documents."""


class Section(BaseModel):
    # NaN and ±Infinity (which Python's JSON parser accepts) mean nothing in a spec.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


_UNREGISTERED_TASKS_ALLOWED: ContextVar[bool] = ContextVar(
    "unregistered_tasks_allowed", default=False
)


@contextmanager
def unregistered_tasks_allowed(allowed: bool = True) -> Iterator[None]:
    """Within this block a ``TaskRef`` may name a task this process does not know (its
    parameters pass unchecked), and a constraint section a kind it does not know
    (``UnregisteredConstraint``): a spec whose ``runtime.pip`` installs the plugin that
    provides them, which the sweep's driver validates where the plugin is installed."""
    token = _UNREGISTERED_TASKS_ALLOWED.set(allowed)
    try:
        yield
    finally:
        _UNREGISTERED_TASKS_ALLOWED.reset(token)


def _shown(value: object, limit: int = 80) -> str:
    """``repr(value)``, cut: an error message quotes what was sent, not megabytes of it."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _unknown_task_message(name: str) -> str:
    message = f"unknown task {_shown(name)}; valid tasks: {', '.join(sorted(TASKS))}"
    broken = [e.name for e in plugin_errors()]
    if broken:
        message += (
            f" ({len(broken)} plugin(s) failed to load: {', '.join(broken)}; "
            "`dualtune catalog` says why)"
        )
    return message


class TaskRef(Section):
    """A catalog task and its parameters (validated by the task's own schema)."""

    name: Annotated[str, Field(max_length=NAME_LENGTH)]
    params: dict[str, Any] = Field(default_factory=dict)

    @property
    def registered(self) -> bool:
        """Whether this process knows the task (a ``runtime.pip`` plugin may be elsewhere)."""
        return self.name in TASKS

    @model_validator(mode="before")
    @classmethod
    def _known_task_with_valid_params(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            return data
        name = data["name"]
        if name not in TASKS:
            if _UNREGISTERED_TASKS_ALLOWED.get():
                if not isinstance(data.get("params", {}), dict):
                    raise field_errors([("params", "must be a mapping of task parameters")])
                return data
            raise field_errors([("name", _unknown_task_message(name))])
        params = data.get("params") or {}
        if not isinstance(params, dict):
            raise field_errors([("params", "must be a mapping of task parameters")])
        try:
            validated = TASKS[name].params.model_validate(params)
        except ValidationError as exc:
            valid = ", ".join(TASKS[name].params.model_fields)
            items = []
            for err in exc.errors():
                where = ".".join(str(p) for p in err["loc"])
                msg = str(err["msg"])
                if err["type"] == "extra_forbidden":
                    msg = f"unknown parameter of task {name!r}; valid parameters: {valid}"
                items.append((f"params.{where}", msg))
            raise field_errors(items) from None
        return {**data, "params": validated.model_dump(mode="json")}


def _unknown_kind_message(kind: object) -> str:
    message = f"unknown constraint kind {kind!r}; valid kinds: {', '.join(CONSTRAINT_KINDS)}"
    broken = [e.name for e in CONSTRAINT_KINDS.errors]
    if broken:
        message += (
            f" ({len(broken)} plugin(s) failed to load: {', '.join(broken)}; "
            "`dualtune catalog` says why)"
        )
    return message


class UnregisteredConstraint(ConstraintParams):
    """The section of a constraint kind this process does not know, accepted only where
    unregistered plugins are (``unregistered_tasks_allowed``, a spec with ``runtime.pip``):
    its fields pass unchecked, its methods and metrics too; the sweep's driver validates
    them where the plugin is installed. ε is taken as swept (``uses_epsilon``)."""

    model_config = ConfigDict(extra="allow", frozen=True)


def _registered_constraint(data: Any) -> Any:
    """The ``constraint:`` section validated by its kind's own ``ConstraintParams`` (the
    registry's), so a plugin kind's section is checked like a built-in one's."""
    if isinstance(data, ConstraintParams):
        info = CONSTRAINT_KINDS.get(data.kind)
        if info is not None and isinstance(data, info.params):
            return data
        data = data.model_dump()
    if not isinstance(data, Mapping):
        raise field_errors(
            [("", f"must be a mapping with a kind; valid kinds: {', '.join(CONSTRAINT_KINDS)}")]
        )
    if "kind" not in data:
        raise field_errors(
            [("kind", f"Field required; valid kinds: {', '.join(CONSTRAINT_KINDS)}")]
        )
    kind = data["kind"]
    info = CONSTRAINT_KINDS.get(kind) if isinstance(kind, str) else None
    if info is None:
        if isinstance(kind, str) and kind and _UNREGISTERED_TASKS_ALLOWED.get():
            return UnregisteredConstraint.model_validate(data)
        raise field_errors([("kind", _unknown_kind_message(kind))])
    try:
        return info.params.model_validate(data)
    except ValidationError as exc:
        valid = ", ".join(info.params.model_fields)
        raise field_errors(
            [
                (field, f"unknown field of constraint kind {kind!r}; valid fields: {valid}")
                if message == UNKNOWN_FIELD
                else (field, message)
                for field, message in error_items(exc)
            ]
        ) from None


Constraint = Annotated[SerializeAsAny[ConstraintParams], BeforeValidator(_registered_constraint)]
"""A ``constraint:`` section of any registered kind, validated by the kind's own params
class (or an ``UnregisteredConstraint``, see there); ``model_dump`` keeps the kind's
fields."""

GridValues = tuple[float, ...]


class Grid(Section):
    """Values per grid key; a scalar is a one-value list. Keys: ``core.catalog.GRID_KEYS``."""

    epsilon: GridValues | None = None
    alpha: GridValues | None = None
    dual_lr: GridValues | None = None
    rho: GridValues | None = None
    rho_growth: GridValues | None = None
    rho_max: GridValues | None = None
    penalty: GridValues | None = None
    kp: GridValues | None = None
    nu: GridValues | None = None
    lr: GridValues | None = None
    seed: tuple[int, ...] | None = None

    @model_validator(mode="before")
    @classmethod
    def _check_keys_and_values(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        items: list[tuple[str, str]] = []
        out: dict[str, Any] = {}
        for key, raw in data.items():
            info = GRID_KEYS.get(str(key))
            if info is None:
                items.append((str(key), f"unknown grid key; valid keys: {', '.join(GRID_KEYS)}"))
                continue
            if raw is None:
                continue  # an unset key, as a dumped spec writes it
            values = raw if isinstance(raw, list | tuple) else [raw]
            if not values:
                items.append((key, "needs at least one value"))
                continue
            if len(values) > MAX_GRID_VALUES:
                items.append(
                    (
                        key,
                        f"{len(values)} values; a grid axis takes at most {MAX_GRID_VALUES}",
                    )
                )
                continue
            clean: list[float | int] = []
            for v in values:
                if isinstance(v, bool) or not isinstance(v, int | float):
                    items.append((key, f"values must be numbers, got {_shown(v)}"))
                    break
                if isinstance(v, int) and not -(2**63) <= v < 2**63:
                    items.append((key, "values must lie between -2**63 and 2**63-1"))
                    break
                if info.integer and not float(v).is_integer():
                    items.append((key, f"values must be integers, got {v!r}"))
                    break
                if v != v or v in (float("inf"), float("-inf")):
                    items.append((key, f"values must be finite, got {v!r}"))
                    break
                if info.integer and v > MAX_SEED:
                    items.append((key, f"values must be ≤ {MAX_SEED} (2**32-1), got {v!r}"))
                    break
                if info.minimum is not None and (
                    v < info.minimum or (info.exclusive_minimum and v == info.minimum)
                ):
                    op = ">" if info.exclusive_minimum else "≥"
                    items.append((key, f"values must be {op} {info.minimum:g}, got {v!r}"))
                    break
                clean.append(int(v) if info.integer else float(v))
            else:
                if len(set(clean)) != len(clean):
                    items.append((key, f"duplicate values in {list(values)!r}"))
                out[key] = tuple(clean)
        if items:
            raise field_errors(items)
        return out

    def present(self) -> dict[str, tuple[float | int, ...]]:
        """The keys the grid sets, in the order of the catalog."""
        values = self.model_dump(exclude_none=True)
        return {k: tuple(values[k]) for k in GRID_KEYS if k in values}


class PrimalOptimizer(Section):
    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: PositiveFloat = 1e-3
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.0
    weight_decay: NonNegativeFloat = 0.0


class Train(Section):
    epochs: Annotated[int, Field(ge=1, le=MAX_EPOCHS)] = 20
    batch_size: Annotated[int, Field(ge=1, le=MAX_BATCH_SIZE)] = 256
    optimizer: PrimalOptimizer = PrimalOptimizer()
    device: Annotated[str, Field(max_length=20)] = "auto"
    eval_every: Annotated[int, Field(ge=1, le=MAX_EPOCHS)] = 1

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
            raise ValueError(f"unknown device {value!r}; use auto, cpu, cuda or cuda:N")
        return value


class GradientAscentConfig(Section):
    name: Literal["ga"]


class NuPIConfig(Section):
    name: Literal["nupi"]
    kp: float = 0.0
    ki: PositiveFloat = 1.0
    nu: Annotated[float, Field(ge=0, lt=1)] = 0.0
    init: Literal["sgd", "zeros"] = "sgd"


DualOptimizerConfig = Annotated[GradientAscentConfig | NuPIConfig, Field(discriminator="name")]


Scheme = Literal[
    "alternating_dual_first", "alternating_primal_first", "simultaneous", "extragradient"
]
"""The update orders of a primal-dual step (``core.engine.step`` says what each does)."""


class Dual(Section):
    scheme: Scheme = "alternating_dual_first"
    optimizer: DualOptimizerConfig = GradientAscentConfig(name="ga")
    init: NonNegativeFloat = 0.0
    restart: bool = False
    """Dual restarts: a multiplier whose (inequality) constraint the step observes strictly
    satisfied is set to 0, so that it does not keep pushing the primal step after the
    constraint is met (Cooper's ``dual_restarts``)."""


class Resources(Section):
    cpu: Annotated[float, Field(gt=0, le=MAX_CPUS)] = 1.0
    gpu: Annotated[float, Field(ge=0, le=MAX_GPUS)] = 0.0

    @field_validator("gpu")
    @classmethod
    def _whole_gpus_above_one(cls, value: float) -> float:
        if value > 1 and not value.is_integer():
            raise ValueError(f"a trial may take a fraction of one GPU or whole GPUs, not {value}")
        return value


class Bound(Section):
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _one_side_at_least(self) -> Bound:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max})")
        return self


MetricName = Annotated[str, Field(max_length=NAME_LENGTH)]


class Selection(Section):
    metric: MetricName = "val/loss_mean"
    mode: Literal["min", "max"] = "min"
    subject_to: Annotated[dict[MetricName, Bound], Field(max_length=100)] = Field(
        default_factory=dict
    )


MAX_REDUCTION_FACTOR = 1_000.0
"""Successive halving keeps the top 1/rf at each rung: past this, one rung stops all."""


class EarlyStopping(Section):
    """Feasibility-aware successive halving (ARCHITECTURE §3.1): at rungs grace·rf^k
    epochs (below ``train.epochs``) a trial goes on only if it ranks in the top 1/rf of the
    trials that reached the rung, those meeting every ``subject_to`` bound first (the
    others by least total violation), then by ``metric``/``mode``.

    ``metric``, ``mode`` and ``subject_to`` default to the sweep's ``selection``
    (``rule(selection)`` resolves them), so that by default a trial is stopped by the
    same standard the report later picks the best one by.
    """

    metric: MetricName | None = None
    mode: Literal["min", "max"] | None = None
    grace_epochs: Annotated[int, Field(ge=1, le=MAX_EPOCHS)] = 1
    reduction_factor: Annotated[float, Field(gt=1.0, le=MAX_REDUCTION_FACTOR)] = 3.0
    subject_to: Annotated[dict[MetricName, Bound], Field(max_length=100)] | None = None

    def rule(self, selection: Selection) -> Selection:
        """The ranking at a rung: this section's metric, mode and bounds where given, the
        selection's where not."""
        return Selection(
            metric=self.metric if self.metric is not None else selection.metric,
            mode=self.mode if self.mode is not None else selection.mode,
            subject_to=self.subject_to if self.subject_to is not None else selection.subject_to,
        )


MAX_CHECKPOINT_EVERY_S = 86_400.0


class Limits(Section):
    """How many trials a sweep may have, how often a unit is retried after its process dies,
    and how often a unit checkpoints.

    ``checkpoint_every_s``: a unit saves a checkpoint at an evaluation when at least this
    many seconds have passed since its start or its previous checkpoint, and always at its
    end; 0 saves one at every evaluation. A unit whose process dies resumes from its last
    checkpoint and trains the evaluations since again, to the same numbers (exact resume),
    so the period bounds the work a crash loses against the cost of saving every member's
    state (model, optimizers, multipliers) at each evaluation.
    """

    max_trials: Annotated[int, Field(ge=1, le=MAX_TRIALS_LIMIT)] = 1000
    max_failures: Annotated[int, Field(ge=0, le=MAX_TRIALS_LIMIT)] = 2
    checkpoint_every_s: Annotated[float, Field(ge=0.0, le=MAX_CHECKPOINT_EVERY_S)] = 10.0


PlotPolicy = Literal["all", "best", "none"]
"""Which trials get their figures drawn: every trial, each method's best trial by the
selection (default: the figures people open), or none. The sweep's own figures are always
drawn."""


class Logging(Section):
    per_sample_every: Annotated[int, Field(ge=1, le=MAX_EPOCHS)] = 5
    plots: PlotPolicy = "best"


WORKER_TOKEN_ENV = "DUALTUNE_WORKER_TOKEN"
"""The variable that carries a driver's per-sweep token from the launcher to the worker."""
RESERVED_ENV_VARS = frozenset({WORKER_TOKEN_ENV, "MLFLOW_TRACKING_URI"})
"""Variables the launchers set for every driver; a spec's ``runtime.env_vars`` may not."""

EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=256)]
Requirement = Annotated[str, Field(min_length=1, max_length=1000, pattern=r"^[^\s]")]


class Runtime(Section):
    """What the sweep's job needs beyond the worker image: Ray's ``runtime_env`` for the
    driver and every trial (the ``ray`` launcher); the ``local`` launcher applies
    ``env_vars`` only. A task or constraint from a plugin that the service does not have is
    accepted when ``pip`` is given: the driver validates it first."""

    pip: Annotated[list[Requirement], Field(max_length=100)] = Field(default_factory=list)
    """pip requirements (``my-tasks==1.2``, a wheel URL the cluster reaches, ...)."""
    env_vars: dict[EnvName, Annotated[str, Field(max_length=65536)]] = Field(default_factory=dict)

    @field_validator("env_vars")
    @classmethod
    def _not_dualtunes_own(cls, value: dict[str, str]) -> dict[str, str]:
        reserved = sorted(RESERVED_ENV_VARS & set(value))
        if reserved:
            raise ValueError(
                f"{', '.join(reserved)} {'is' if len(reserved) == 1 else 'are'} set by dualtune "
                "for the driver; remove it"
            )
        return value
