"""A constraint kind as a plugin writes one: its spec section, its catalog entry and its
builder in one module, registered in-process by the tests (``register_constraint_kind``).

``group_mean_loss``: w·(mean loss of group g) ≤ ε for each group g of an attribute, one
multiplier per group (Fairlearn's bounded group loss, scaled by ``weight``). The per-group
sums are a matrix product of the losses with a (batch, group) one-hot mask of the batch's
group codes, so the builder is vmap-safe: every shape comes from the batch, which the
members of a pack share.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Literal

import torch
from pydantic import Field
from torch import Tensor, nn
from torch.nn import functional as F

from dualtune import (
    Batch,
    ConstraintBatch,
    ConstraintKind,
    ConstraintKindInfo,
    ConstraintParams,
    KindContext,
    Split,
    Task,
)

NAME = "group_mean_loss"
UNPACKABLE_NAME = "group_mean_loss_unpacked"


class GroupMeanLossFields(ConstraintParams):
    attribute: str
    weight: Annotated[float, Field(gt=0)] = 1.0
    """w in w·mean loss ≤ ε."""


class GroupMeanLossParams(GroupMeanLossFields):
    kind: Literal["group_mean_loss"]


class UnpackableGroupMeanLossParams(GroupMeanLossFields):
    kind: Literal["group_mean_loss_unpacked"]


class GroupMeanLoss(ConstraintKind):
    """w·(mean loss of group g) ≤ ε, one constraint per group of ``attribute``."""

    def __init__(self, attribute: str, num_groups: int, *, weight: float) -> None:
        if num_groups < 1:
            raise ValueError(f"group_mean_loss needs at least one group, got {num_groups}")
        self.attribute = attribute
        self.num_groups = num_groups
        self.weight = weight

    @classmethod
    def from_spec(cls, params: GroupMeanLossFields, context: KindContext) -> GroupMeanLoss:
        names = context.data.group_names[params.attribute]
        return cls(params.attribute, len(names), weight=params.weight)

    def num_constraints(self) -> int:
        return self.num_groups

    def _group_means(self, losses: Tensor, groups: Tensor) -> tuple[Tensor, Tensor]:
        mask = F.one_hot(groups, self.num_groups).to(losses.dtype)
        counts = mask.sum(dim=0)
        return self.weight * (losses @ mask) / counts.clamp_min(1.0), counts > 0

    def observe(
        self, task: Task, model: nn.Module, output: Tensor, batch: Batch
    ) -> ConstraintBatch:
        losses = task.per_sample_loss(output, batch.y)
        means, present = self._group_means(losses, batch.groups[self.attribute])
        observed = torch.nonzero(present).flatten()
        return ConstraintBatch(means.index_select(-1, observed), observed)

    def evaluate(self, task: Task, model: nn.Module, output: Tensor, split: Split) -> Tensor:
        losses = task.per_sample_loss(output, split.y)
        means, present = self._group_means(losses, split.groups[self.attribute])
        return means[present]

    def extra_metrics(
        self, task: Task, model: nn.Module, output: Tensor, split: Split, prefix: str
    ) -> dict[str, Tensor]:
        means = self.evaluate(task, model, output, split)
        return {f"{prefix}/group_loss_gap": means.max() - means.min()}


INFO = ConstraintKindInfo(
    NAME,
    "w·(per-group mean loss) ≤ ε",
    "one per group",
    GroupMeanLossParams,
    f"{__name__}:GroupMeanLoss",
    needs_group_attribute=True,
    extra_metrics=("group_loss_gap",),
)

UNPACKABLE = dataclasses.replace(
    INFO, name=UNPACKABLE_NAME, params=UnpackableGroupMeanLossParams, packable=False
)
"""The same kind, declared not vmap-safe: its trials must never pack."""
