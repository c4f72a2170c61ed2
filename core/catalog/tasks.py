"""What a task is to the catalog: its parameters' base class and its torch-free description.

A task's description (``TaskInfo``) is what the spec validates against and the service's
``GET /catalog`` serves; the torch-side ``Task`` it names (``builder``) is imported only where
trials run. Tasks register through the ``dualtune.tasks`` entry point group
(``dualtune.core.catalog.registry``); the built-in ones are in ``builtin_tasks``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict


class TaskParams(BaseModel):
    """Base of every task's parameters: unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


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
    ``ConstraintKindInfo.generic`` is true), plugins' included. A tuple lists exactly the
    kinds it supports (``convection``: ``pinn_residual`` only)."""
    extra_constraint_kinds: tuple[str, ...] = ()
    """Task-specific kinds (``generic`` false) the task supports on top of the generic ones
    (``digits``: ``layer_descent``, which needs its residual MLP)."""
    extra_metrics: tuple[str, ...] = ()
    """Split metrics the task reports beyond §3.4 (e.g. ``rel_l2``), as ``<split>/<name>``."""
