"""``bounded_group_loss``: g_g = the mean loss of group g ≤ ε, one per group of the attribute
(Fairlearn's ``BoundedGroupLoss``; Agarwal, Dudík & Wu, "Fair regression", ICML 2019). The
losses are differentiable, so there is no surrogate and no proxy; a group absent from a
batch is not observed on it."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dualtune.core.catalog.builtin_constraints import BoundedGroupLossConstraint
from dualtune.core.engine.constraints.base import (
    Batch,
    ConstraintKind,
    KindContext,
    group_means,
)
from dualtune.core.engine.observation import ConstraintBatch
from dualtune.core.tasks.base import Split, Task


class BoundedGroupLoss(ConstraintKind):
    """Each group's mean per-sample loss ≤ ε."""

    batch_estimates = True

    def __init__(self, attribute: str, num_groups: int) -> None:
        self.attribute = attribute
        self.group_attribute = attribute
        self.num_groups = num_groups

    @classmethod
    def from_spec(
        cls, params: BoundedGroupLossConstraint, context: KindContext
    ) -> BoundedGroupLoss:
        names = context.data.group_names.get(params.attribute)
        if names is None:
            raise ValueError(
                f"task {context.config.task.name!r} has no group attribute {params.attribute!r}"
            )
        return cls(params.attribute, len(names))

    def num_constraints(self) -> int:
        return self.num_groups

    def observe(
        self, task: Task, model: nn.Module, output: Tensor, batch: Batch
    ) -> ConstraintBatch:
        losses = task.per_sample_loss(output, batch.y)
        means, present = group_means(losses, batch.groups[self.attribute], self.num_groups)
        observed = torch.nonzero(present).flatten()
        return ConstraintBatch(means.index_select(0, observed), observed)

    def evaluate(self, task: Task, model: nn.Module, output: Tensor, split: Split) -> Tensor:
        means, present = group_means(
            task.per_sample_loss(output, split.y), split.groups[self.attribute], self.num_groups
        )
        return means[present]
