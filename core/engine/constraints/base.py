"""What a constraint kind is to the engine: ``ConstraintKind``, built from the spec's
``constraint:`` section (``from_spec``), turns a model's outputs into constraint values
g_j(θ). It says how many constraints (and multipliers) it has, what it observes on a
training batch (differentiable, with the multiplier indices it touches), what the full
constraint vector is on a data split (for metrics), and what the objective is next to it.
The engine does the rest: multipliers, methods, dual optimizers, schemes, packing, resume
and the ``constraint/*``, ``dual/*`` metrics.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from dualtune.core.engine.observation import ConstraintBatch
from dualtune.core.tasks.base import Dataset, Split, Task

if TYPE_CHECKING:
    from dualtune.core.spec import TrialConfig


@dataclass(frozen=True)
class Batch:
    x: Tensor
    y: Tensor
    index: Tensor
    """Sample indices into the training split."""
    groups: dict[str, Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class KindContext:
    """What a kind may read when it is built for a trial."""

    config: TrialConfig
    task: Task
    data: Dataset
    """The trial's data, on the training device."""
    model: nn.Module
    """The trial's freshly initialised model (in a pack: the members' shared initial one)."""
    epsilon: float
    """The trial's ε (``config.value("epsilon")``); a kind that folds ε into its
    constraints (``ConstraintKindInfo.epsilon_in_kind``) reads it here."""


class ConstraintKind(ABC):
    """How a constraint kind evaluates. A subclass is named by its catalog entry
    (``ConstraintKindInfo.builder``) and built per trial with ``from_spec``.

    Packed trials (``ConstraintKindInfo.packable``) run ``observe`` and ``objective`` under
    ``torch.func.vmap`` over the members' parameters: read the model only through calls
    to it and its parameters, and let what depends on the batch alone (``index``) not
    depend on them.
    """

    equality: bool = False
    """Constraints h = ε (multipliers unprojected) rather than g ≤ ε."""
    uses_epsilon: bool = True
    """The methods compare g with the trial's ε; false: with 0 (a fixed target, or ε folded
    into g)."""
    batch_estimates: bool = False
    """Each constraint's value on a batch is that batch's estimate of a population quantity
    (a group's rate, a group's mean loss) rather than a quantity of its own samples (a
    sample's loss): ALM's and SAL's penalty slopes then come from a running estimate
    (``core.engine.penalties.DefectEstimate``) when batches are smaller than the split."""
    group_attribute: str | None = None
    """The group attribute the kind constrains: the §3.4 group metrics (``dp_gap``,
    ``eo_gap``, …) are reported for it, else for the task's first attribute. The engine
    sets it from the spec's ``attribute`` for kinds that need one
    (``ConstraintKindInfo.needs_group_attribute``) when the builder leaves it unset."""

    @classmethod
    @abstractmethod
    def from_spec(cls, params: Any, context: KindContext) -> ConstraintKind:
        """The kind for one trial, from its ``constraint:`` section.

        ``params`` is an instance of the kind's ``ConstraintKindInfo.params`` (a
        ``ConstraintParams`` subclass, validated with the spec): annotate it with that class.
        """

    @abstractmethod
    def num_constraints(self) -> int: ...

    @abstractmethod
    def observe(
        self, task: Task, model: nn.Module, output: Tensor, batch: Batch
    ) -> ConstraintBatch:
        """The constraints observed on a training batch (differentiable)."""

    @abstractmethod
    def evaluate(self, task: Task, model: nn.Module, output: Tensor, split: Split) -> Tensor:
        """All constraint values on a whole split (for metrics; no gradients needed)."""

    def values_are_losses(self, task: Task) -> bool:
        """Whether ``observe`` on a batch gives the batch's per-sample losses
        (``task.per_sample_loss``) as its values, at the batch's indices: the trainers,
        which compute those losses anyway, then use them instead of computing them again
        (``sample_loss`` with the task's own ``sample_constraint`` left as the loss). False
        unless a kind says so."""
        del task
        return False

    def extra_metrics(
        self, task: Task, model: nn.Module, output: Tensor, split: Split, prefix: str
    ) -> dict[str, Tensor]:
        """Metrics beyond ARCHITECTURE §3.4, named ``<prefix>/<name>``; each name must be
        listed in the catalog's ``ConstraintKindInfo.extra_metrics``. Called without
        gradients."""
        del task, model, output, split, prefix
        return {}

    def objective(self, task: Task, model: nn.Module, losses: Tensor) -> Tensor:
        """What constrained methods minimise next to the constraints: the mean loss."""
        del task, model
        return losses.mean()

    @property
    def tolerance(self) -> float:
        """How close an equality must be to count as satisfied in the metrics."""
        return 0.0


def group_means(values: Tensor, groups: Tensor, num_groups: int) -> tuple[Tensor, Tensor]:
    """Per-group means of ``values`` and the mask of groups with at least one sample."""
    counts = torch.bincount(groups, minlength=num_groups).to(values.dtype)
    sums = torch.zeros(num_groups, dtype=values.dtype, device=values.device)
    sums = sums.index_add(0, groups, values)
    present = counts > 0
    return sums / counts.clamp_min(1.0), present
