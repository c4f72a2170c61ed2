"""The ``group_fnr`` constraint kind: FNR_g(θ) ≤ ε for each group g of an attribute.

FNR_g is the share of group g's positives (good credit) that the model predicts negative:
a lender that rejects good applicants of one group more often than ε. Training (the primal
step and the multipliers) sees a smooth miss rate, 1 − σ(τ(p₁ − ½)) averaged over the
group's positives in the batch (``observe``), as the built-in ``group_rate`` kind smooths
positive rates; the metrics count hard predictions (``evaluate``: ``feasible_frac``,
``constraint/*``, and the kind's own ``fnr_max``).

Packing: a pack runs ``observe`` under ``torch.func.vmap`` over its members' parameters, so
nothing may take a shape from a member's output. Here every shape comes from the batch's
labels and group codes, which the members share (same batch order): the per-group sums are
a matrix product of the miss rates with a (batch, group) mask built from those, and the
observed groups (those with positives in the batch) are ``torch.nonzero`` of the mask's
column sums.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from dualtune import Batch, ConstraintBatch, ConstraintKind, KindContext, Split, Task
from dualtune_credit.catalog import GroupFnrParams


def positives_by_group(y: Tensor, groups: Tensor, num_groups: int, dtype: torch.dtype) -> Tensor:
    """(n, G) mask: row i has a 1 in its group's column when sample i is a positive."""
    return F.one_hot(groups, num_groups).to(dtype) * (y == 1).to(dtype).unsqueeze(1)


class GroupFalseNegativeRate(ConstraintKind):
    """FNR_g ≤ ε, one constraint (and one multiplier) per group of ``attribute``."""

    def __init__(self, attribute: str, num_groups: int, *, temperature: float) -> None:
        if num_groups < 1:
            raise ValueError(f"group_fnr needs at least one group, got {num_groups}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.attribute = attribute
        self.num_groups = num_groups
        self.temperature = float(temperature)

    @classmethod
    def from_spec(cls, params: GroupFnrParams, context: KindContext) -> GroupFalseNegativeRate:
        names = context.data.group_names.get(params.attribute)
        if names is None:
            raise ValueError(
                f"task {context.config.task.name!r} has no group attribute {params.attribute!r}"
            )
        return cls(params.attribute, len(names), temperature=params.temperature)

    def num_constraints(self) -> int:
        return self.num_groups

    def observe(
        self, task: Task, model: nn.Module, output: Tensor, batch: Batch
    ) -> ConstraintBatch:
        miss = 1.0 - torch.sigmoid(self.temperature * (task.positive_score(output) - 0.5))
        mask = positives_by_group(
            batch.y, batch.groups[self.attribute], self.num_groups, miss.dtype
        )
        counts = mask.sum(dim=0)
        observed = torch.nonzero(counts > 0).flatten()
        rates = (miss @ mask) / counts.clamp_min(1.0)
        return ConstraintBatch(rates.index_select(-1, observed), observed)

    def group_rates(self, task: Task, output: Tensor, split: Split) -> Tensor:
        """The hard FNR of every group with positives in ``split`` (in group order)."""
        missed = (task.predictions(output) != 1).to(output.dtype)
        mask = positives_by_group(
            split.y, split.groups[self.attribute], self.num_groups, output.dtype
        )
        counts = mask.sum(dim=0)
        return ((missed @ mask) / counts.clamp_min(1.0))[counts > 0]

    def evaluate(self, task: Task, model: nn.Module, output: Tensor, split: Split) -> Tensor:
        return self.group_rates(task, output, split)

    def extra_metrics(
        self, task: Task, model: nn.Module, output: Tensor, split: Split, prefix: str
    ) -> dict[str, Tensor]:
        """``<split>/fnr_max``: the largest group FNR, the number the bound ε is about."""
        rates = self.group_rates(task, output, split)
        return {f"{prefix}/fnr_max": rates.max() if rates.numel() else output.new_zeros(())}
