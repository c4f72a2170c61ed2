"""``SweepSpec``: the sweep a user submits (ARCHITECTURE §3.1)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ModelWrapValidatorHandler, model_validator

from dualtune.core.catalog import (
    CONSTRAINT_KINDS,
    METHODS,
    TASKS,
    ConstraintKindInfo,
    method_applies,
    methods_for,
)
from dualtune.core.spec.errors import field_errors
from dualtune.core.spec.expansion import count_trials, method_points, trial_id
from dualtune.core.spec.hostile import hostile_values
from dualtune.core.spec.metric_names import metric_names_for
from dualtune.core.spec.sections import (
    NAME_LENGTH,
    Constraint,
    Dual,
    EarlyStopping,
    Grid,
    Limits,
    Logging,
    Resources,
    Runtime,
    Selection,
    TaskRef,
    Train,
    unregistered_tasks_allowed,
)
from dualtune.core.spec.trial import TrialConfig

MAX_PACK = 10_000
"""Members of one pack: one vmapped model per member, so far fewer fit any device."""
Pack = Literal["auto", "off"] | Annotated[int, Field(ge=1, le=MAX_PACK)]

_TRIAL_CAP: ContextVar[tuple[int, str] | None] = ContextVar("trial_cap", default=None)


@contextmanager
def trial_cap(cap: int, source: str) -> Iterator[None]:
    """Within this block a spec expanding to more than ``cap`` trials is refused (on
    ``grid``, naming ``source``, the cap's setting), on top of its own
    ``limits.max_trials``: a server's cap, checked by arithmetic before any expansion."""
    token = _TRIAL_CAP.set((cap, source))
    try:
        yield
    finally:
        _TRIAL_CAP.reset(token)


def _too_many_trials(n: int, limit: int) -> str | None:
    """Why ``n`` trials are too many (the spec's limit, the server's cap), else None."""
    cap = _TRIAL_CAP.get()
    over_cap = cap is not None and n > cap[0]
    if n <= limit and not over_cap:
        return None
    over = [f"limits.max_trials = {limit}"] if n > limit else []
    if cap is not None and over_cap:
        over.append(f"this server's cap of {cap[0]} trials ({cap[1]})")
    fix = "shrink the grid" + (" or raise limits.max_trials" if not over_cap else "")
    return f"grid expands to {n} trials, more than {' and '.join(over)}; {fix}"


def _metric_problems(
    section: str, metric: str | None, subject_to: Iterable[str], valid_metrics: tuple[str, ...]
) -> list[tuple[str, str]]:
    """Unknown metric names in a section that ranks trials (``selection``,
    ``early_stopping``), each on its own field."""
    items: list[tuple[str, str]] = []
    named = [(f"{section}.metric", metric)] if metric is not None else []
    named += [(f"{section}.subject_to.{name}", name) for name in subject_to]
    for field, name in named:
        if name not in valid_metrics:
            items.append(
                (field, f"unknown metric {name!r}; valid metrics: {', '.join(valid_metrics)}")
            )
    return items


def _selection_problems(
    selection: Selection, valid_metrics: tuple[str, ...]
) -> list[tuple[str, str]]:
    return _metric_problems("selection", selection.metric, selection.subject_to, valid_metrics)


def _grace_problems(stopping: EarlyStopping, train: Train) -> list[tuple[str, str]]:
    if stopping.grace_epochs < train.epochs:
        return []
    return [
        (
            "early_stopping.grace_epochs",
            f"the first rung ({stopping.grace_epochs} epochs) is not below train.epochs "
            f"({train.epochs}), so no trial could be stopped: lower grace_epochs or drop "
            "early_stopping",
        )
    ]


class SweepSpec(BaseModel):
    """A sweep: task, constraint, methods and grid, plus training and sweep settings."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: Annotated[str, Field(min_length=1, max_length=100)]
    task: TaskRef
    constraint: Constraint
    methods: Annotated[
        list[Annotated[str, Field(max_length=NAME_LENGTH)]], Field(min_length=1, max_length=100)
    ]
    grid: Grid = Grid()
    train: Train = Train()
    dual: Dual = Dual()
    resources: Resources = Resources()
    pack: Pack = "auto"
    selection: Selection = Selection()
    early_stopping: EarlyStopping | None = None
    limits: Limits = Limits()
    logging: Logging = Logging()
    runtime: Runtime = Runtime()

    @model_validator(mode="wrap")
    @classmethod
    def _plugin_tasks_with_runtime_pip(
        cls, data: object, handler: ModelWrapValidatorHandler[SweepSpec]
    ) -> SweepSpec:
        # NUL, NaN, ±Infinity and integers past 64 bits are refused wherever they sit (the
        # task's free parameters too), before any section reads them.
        hostile = hostile_values(data)
        if hostile:
            raise field_errors(hostile)
        # A task or constraint kind this process does not know is accepted when runtime.pip
        # installs it where the sweep runs: the driver checks it there, before any trial.
        runtime = data.get("runtime") if isinstance(data, dict) else None
        pip = runtime.get("pip") if isinstance(runtime, dict) else None
        with unregistered_tasks_allowed(bool(pip)):
            return handler(data)

    @model_validator(mode="after")
    def _consistent(self) -> SweepSpec:
        items: list[tuple[str, str]] = []
        kind = CONSTRAINT_KINDS.get(self.constraint.kind)  # None: runtime.pip's, unchecked
        if self.task.registered and kind is not None:
            items += self._task_problems(kind)
        items += self._method_problems()
        items += self._dual_problems()
        if self.dual.optimizer.name == "ga":
            for key in ("kp", "nu"):
                if getattr(self.grid, key) is not None:
                    items.append(
                        (
                            f"grid.{key}",
                            f"{key} is a νPI gain; set dual.optimizer: {{name: nupi}} to sweep it",
                        )
                    )
        # The driver checks the metrics of a plugin it installs: against the plugin task's
        # problem type, the plugin kind's metrics.
        if kind is not None:
            if self.task.registered:
                task = TASKS[self.task.name]
                valid_metrics = metric_names_for(
                    task.problem,
                    kind.name,
                    task.extra_metrics,
                    groups=bool(task.group_attributes),
                )
            else:
                valid_metrics = metric_names_for("classification", kind.name, groups=True)
            items += _selection_problems(self.selection, valid_metrics)
            if self.early_stopping is not None:
                stopping = self.early_stopping
                items += _metric_problems(
                    "early_stopping", stopping.metric, stopping.subject_to or {}, valid_metrics
                )
        if self.early_stopping is not None:
            items += _grace_problems(self.early_stopping, self.train)
        if not items:
            too_many = _too_many_trials(count_trials(self), self.limits.max_trials)
            if too_many:
                items.append(("grid", too_many))
        if items:
            raise field_errors(items)
        return self

    def _task_problems(self, kind: ConstraintKindInfo) -> list[tuple[str, str]]:
        """What does not fit the (registered) task: constraint kind, attribute."""
        items: list[tuple[str, str]] = []
        task = TASKS[self.task.name]
        if kind.needs_classification and task.problem != "classification":
            items.append(
                (
                    "constraint.kind",
                    f"{kind.name} needs a classification task; "
                    f"{task.name!r} is a {task.problem} task",
                )
            )
        supported = (
            task.constraint_kinds
            or tuple(k for k, info in CONSTRAINT_KINDS.items() if info.generic)
        ) + task.extra_constraint_kinds
        if kind.name not in supported:
            items.append(
                (
                    "constraint.kind",
                    f"task {task.name!r} does not support constraint kind {kind.name!r}; "
                    f"kinds for {task.name}: {', '.join(supported)}",
                )
            )
        else:
            items += self.constraint.problems(task, self.task.params, self.grid.epsilon)
        if kind.needs_group_attribute:
            attribute = getattr(self.constraint, "attribute", None)
            if not task.group_attributes:
                with_groups = [t.name for t in TASKS.values() if t.group_attributes]
                items.append(
                    (
                        "constraint.attribute",
                        f"task {task.name!r} has no group "
                        f"attributes; tasks with groups: {', '.join(with_groups) or 'none'}",
                    )
                )
            elif attribute not in task.group_attributes:
                items.append(
                    (
                        "constraint.attribute",
                        f"unknown attribute {attribute!r}; "
                        f"valid attributes: {', '.join(task.group_attributes)}",
                    )
                )
        return items

    def _dual_problems(self) -> list[tuple[str, str]]:
        """Dual settings that do not fit the constraint or the methods."""
        items: list[tuple[str, str]] = []
        if self.dual.restart and getattr(self.constraint, "equality", False):
            items.append(
                (
                    "dual.restart",
                    "dual restarts reset the multipliers of satisfied inequality constraints; "
                    "an equality constraint is never strictly satisfied: drop dual.restart "
                    "or set constraint.equality: false",
                )
            )
        if self.dual.optimizer.name == "nupi":
            for method in ("alm", "sal"):
                if method in self.methods:
                    items.append(
                        (
                            "dual.optimizer",
                            f"νPI drives the multipliers of fl and rfl; {method}'s multiplier "
                            "step is its own (the method of multipliers' ρ-scaled ascent"
                            + (", on an acceptance test" if method == "sal" else "")
                            + f"): use dual.optimizer: {{name: ga}} or run {method} in "
                            "another sweep",
                        )
                    )
        if "sal" in self.methods and any(r <= 0 for r in (self.grid.rho or ())):
            items.append(
                (
                    "grid.rho",
                    "sal needs ρ > 0: its multiplier step is ρ(g − ε), so ρ = 0 would never "
                    "move the multipliers",
                )
            )
        if (
            self.dual.scheme == "extragradient"
            and "alm" in self.methods
            and any(g > 1 for g in (self.grid.rho_growth or ()))
        ):
            items.append(
                (
                    "dual.scheme",
                    "alm with rho_growth > 1 grows its penalties on a schedule, which "
                    "extragradient's extrapolation would advance twice per step: use "
                    "rho_growth: 1 or another scheme",
                )
            )
        if self.dual.scheme == "extragradient" and "sal" in self.methods:
            items.append(
                (
                    "dual.scheme",
                    "sal updates its multipliers by an acceptance test, not a gradient step, "
                    "so it has no extragradient form; use another scheme or drop sal",
                )
            )
        return items

    def _method_problems(self) -> list[tuple[str, str]]:
        items: list[tuple[str, str]] = []
        if len(set(self.methods)) != len(self.methods):
            items.append(("methods", "each method may appear once"))
        for i, method in enumerate(self.methods):
            info = METHODS.get(method)
            if info is None:
                items.append(
                    (
                        f"methods.{i}",
                        f"unknown method {method!r}; valid methods: {', '.join(METHODS)}",
                    )
                )
            elif self.constraint.kind in CONSTRAINT_KINDS and not method_applies(
                method, self.constraint.kind
            ):
                fitting = methods_for(self.constraint.kind)
                items.append(
                    (
                        f"methods.{i}",
                        f"method {method!r} does not apply to constraint "
                        f"kind {self.constraint.kind!r}; methods for "
                        f"{self.constraint.kind}: {', '.join(fitting)}",
                    )
                )
        return items

    def count_trials(self) -> int:
        """How many trials ``trials()`` makes, by arithmetic: instant for any grid."""
        return count_trials(self)

    def trials(self) -> list[TrialConfig]:
        """The method-aware expansion: for each method (in spec order), the product of the
        grid keys it reads, without duplicates, in a stable order with stable ids."""
        shared = self.model_dump(
            mode="json",
            include={
                "name",
                "task",
                "constraint",
                "train",
                "dual",
                "resources",
                "limits",
                "logging",
            },
        )
        out: list[TrialConfig] = []
        grid_epsilon = self.grid.epsilon
        with unregistered_tasks_allowed(bool(self.runtime.pip)):
            self._expand(shared, grid_epsilon, out)
        return out

    def _expand(
        self,
        shared: dict[str, object],
        grid_epsilon: tuple[float, ...] | None,
        out: list[TrialConfig],
    ) -> None:
        for method in self.methods:
            reads_epsilon = "epsilon" in METHODS[method].grid_keys
            metric_epsilon = (
                min(grid_epsilon)
                if grid_epsilon and not reads_epsilon and self.constraint.uses_epsilon
                else None
            )
            for params in method_points(self, method):
                out.append(
                    TrialConfig.model_validate(
                        {
                            **shared,
                            "method": method,
                            "params": params,
                            "trial_id": trial_id(method, params),
                            "index": len(out),
                            "metric_epsilon": metric_epsilon,
                        }
                    )
                )
