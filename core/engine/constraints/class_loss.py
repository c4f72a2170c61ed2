"""``class_loss``: g_k = mean loss of class k ≤ ε (or = ε), one per class; only the classes
in a batch are observed."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dualtune.core.catalog.builtin_constraints import ClassLossConstraint
from dualtune.core.engine.constraints.base import (
    Batch,
    ConstraintKind,
    KindContext,
    group_means,
)
from dualtune.core.engine.observation import ConstraintBatch
from dualtune.core.tasks.base import Split, Task


class ClassLoss(ConstraintKind):
    """Per-class mean loss ≤ ε (or = ε)."""

    def __init__(self, num_classes: int, *, equality: bool, tolerance: float) -> None:
        self.num_classes = num_classes
        self.equality = equality
        self._tolerance = tolerance

    @classmethod
    def from_spec(cls, params: ClassLossConstraint, context: KindContext) -> ClassLoss:
        if context.data.num_classes is None:
            raise ValueError("class_loss constraints need a classification task")
        return cls(context.data.num_classes, equality=params.equality, tolerance=params.tolerance)

    @property
    def tolerance(self) -> float:
        return self._tolerance

    def num_constraints(self) -> int:
        return self.num_classes

    def observe(
        self, task: Task, model: nn.Module, output: Tensor, batch: Batch
    ) -> ConstraintBatch:
        losses = task.per_sample_loss(output, batch.y)
        means, present = group_means(losses, batch.y.long(), self.num_classes)
        observed = torch.nonzero(present).flatten()
        return ConstraintBatch(means.index_select(0, observed), observed)

    def evaluate(self, task: Task, model: nn.Module, output: Tensor, split: Split) -> Tensor:
        means, present = group_means(
            task.per_sample_loss(output, split.y), split.y.long(), self.num_classes
        )
        return means[present]
