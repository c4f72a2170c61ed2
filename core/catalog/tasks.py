"""The task catalog: names, parameter schemas and capabilities, without torch.

Each task's builder (data loader + model) lives in ``core.tasks.<module>`` and is imported
only when a trial runs; this module holds what the spec validates against.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

PositiveInt = Annotated[int, Field(ge=1)]
Hidden = Annotated[list[PositiveInt], Field(max_length=16)]


class TaskParams(BaseModel):
    """Base of every task's parameters: unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class TwoMoonsParams(TaskParams):
    n_train: PositiveInt = 512
    n_val: PositiveInt = 128
    noise: Annotated[float, Field(ge=0.0, le=1.0)] = 0.1
    hidden: Hidden = Field(default_factory=lambda: [70, 70])
    data_seed: Annotated[int, Field(ge=0)] = 0


class DigitsParams(TaskParams):
    hidden: Hidden = Field(default_factory=lambda: [64])
    val_fraction: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.2
    data_seed: Annotated[int, Field(ge=0)] = 0


class IrisSvmParams(TaskParams):
    classes: tuple[
        Literal["setosa", "versicolor", "virginica"], Literal["setosa", "versicolor", "virginica"]
    ] = ("setosa", "versicolor")
    features: Annotated[
        list[Annotated[int, Field(ge=0, le=3)]], Field(min_length=1, max_length=4)
    ] = Field(default_factory=lambda: [0, 1, 2, 3])
    """Iris feature columns. All four by default: setosa vs versicolor then has four support
    vectors exactly on the margin and a unique dual. With the sepal pair (0, 1), four points
    lie on the margin with only three support vectors (Iris is rounded to 0.1 cm), so the
    dual coefficients are not unique and no method can be checked against SVC's."""
    val_fraction: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    data_seed: Annotated[int, Field(ge=0)] = 0


class PolyfitParams(TaskParams):
    n_train: PositiveInt = 30
    n_val: PositiveInt = 200
    noise: Annotated[float, Field(ge=0.0)] = 0.1
    degree: Annotated[int, Field(ge=1, le=64)] = 15
    data_seed: Annotated[int, Field(ge=0)] = 0


@dataclass(frozen=True)
class TaskInfo:
    name: str
    summary: str
    problem: Literal["classification", "regression"]
    params: type[TaskParams]
    builder: str
    """``module:Class`` of the torch-side task, imported lazily."""
    group_attributes: tuple[str, ...] = ()
    has_objective: bool = False
    """The task defines its own objective for ``sample_loss`` (else the objective is 0)."""
    constraint_kinds: tuple[str, ...] | None = None
    """The constraint kinds the task supports; ``None``: every generic kind (the kinds whose
    ``ConstraintKindInfo.generic`` is true). A task that supports a task-specific kind
    (``pinn_residual``, ``layer_descent``) lists every kind it supports."""
    extra_metrics: tuple[str, ...] = ()
    """Split metrics the task reports beyond §3.4 (e.g. ``rel_l2``), as ``<split>/<name>``."""


TASKS: dict[str, TaskInfo] = {
    t.name: t
    for t in (
        TaskInfo(
            "two_moons",
            "sklearn make_moons (512 train / 128 val, noise 0.1), MLP 70-70 as in the FL code",
            "classification",
            TwoMoonsParams,
            "core.tasks.two_moons:TwoMoons",
            group_attributes=("side",),
        ),
        TaskInfo(
            "digits",
            "sklearn digits (1,797 8×8 images, 10 classes), MLP",
            "classification",
            DigitsParams,
            "core.tasks.digits:Digits",
        ),
        TaskInfo(
            "iris_svm",
            "two Iris classes, linear model, objective ½‖w‖², per-sample margin constraints "
            "1 − y_i f(x_i) ≤ 0: a hard-margin SVM",
            "classification",
            IrisSvmParams,
            "core.tasks.iris_svm:IrisSvm",
            has_objective=True,
        ),
        TaskInfo(
            "polyfit",
            "1-D noisy polynomial regression with an over-parameterised polynomial model "
            "(the Feasible Learning toy)",
            "regression",
            PolyfitParams,
            "core.tasks.polyfit:Polyfit",
        ),
    )
}
