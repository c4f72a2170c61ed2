"""What the service and the spec see of this plugin: the task's and the constraint kind's
parameters and descriptions. No torch here (the service imports this module); the builders
are named by import path and loaded only where trials run.

Registered by this distribution's entry points (pyproject.toml)::

    [project.entry-points."dualtune.tasks"]
    german_credit = "dualtune_credit.catalog:GERMAN_CREDIT"

    [project.entry-points."dualtune.constraints"]
    group_fnr = "dualtune_credit.catalog:GROUP_FNR"
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import Field

from dualtune import ConstraintKindInfo, ConstraintParams, TaskInfo, TaskParams


class GermanCreditParams(TaskParams):
    """``task.params`` of ``german_credit``; unknown keys are rejected (``TaskParams``)."""

    model: Literal["logistic", "mlp"] = "logistic"
    hidden: Annotated[list[Annotated[int, Field(ge=1)]], Field(max_length=16)] = Field(
        default_factory=lambda: [32]
    )
    """MLP widths (``model: mlp`` only)."""
    val_fraction: Annotated[float, Field(ge=0.05, le=0.5)] = 0.3
    """Share of the 1,000 applicants held out as val (stratified by the label)."""
    data_seed: Annotated[int, Field(ge=0)] = 0
    drop_protected: bool = False
    """Leave the sex (``personal_status_and_sex``) and age columns out of the features (the
    groups stay)."""


GERMAN_CREDIT = TaskInfo(
    name="german_credit",
    summary="UCI Statlog German credit (1,000 applicants, good vs bad credit, 70/30 "
    "stratified split), one-hot + standardised features; logistic regression or MLP",
    problem="classification",
    params=GermanCreditParams,
    builder="dualtune_credit.task:GermanCredit",
    group_attributes=("sex", "age"),
)


class GroupFnrParams(ConstraintParams):
    """``constraint:`` of kind ``group_fnr``: FNR_g ≤ ε for each group of ``attribute``."""

    kind: Literal["group_fnr"]
    attribute: str
    """A group attribute of the task (``german_credit``: ``sex`` or ``age``)."""
    temperature: Annotated[float, Field(gt=0)] = 8.0
    """τ of the smooth miss rate 1 − σ(τ(p₁ − ½)) the primal step descends on."""

    def problems(
        self,
        task: TaskInfo,
        task_params: Mapping[str, Any],
        epsilon: tuple[float, ...] | None,
    ) -> list[tuple[str, str]]:
        """A false-negative rate lies in [0, 1]: a bound outside it is a mistake (below 0
        nothing is feasible, at 1 or above everything is)."""
        del task, task_params
        outside = [e for e in epsilon or () if not 0.0 <= e < 1.0]
        if outside:
            return [
                (
                    "grid.epsilon",
                    f"group_fnr bounds a rate: ε must be in [0, 1), got {outside}",
                )
            ]
        return []


GROUP_FNR = ConstraintKindInfo(
    name="group_fnr",
    summary="per-group false-negative rate FNR_g ≤ ε (the share of a group's positives "
    "predicted negative), with a smooth miss rate in the primal step",
    multipliers="one per group",
    params=GroupFnrParams,
    builder="dualtune_credit.constraint:GroupFalseNegativeRate",
    needs_classification=True,
    needs_group_attribute=True,
    extra_metrics=("fnr_max",),
)
