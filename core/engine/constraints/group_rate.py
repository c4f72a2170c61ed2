"""``group_rate``: h_g = r_g − r, the soft positive rate of group g minus the overall rate,
r = mean σ(τ(p − ½)) as in the statistical-equality code (τ = 8). With ``equality`` the
constraints are h_g = 0; otherwise |h_g| ≤ ε as the two inequalities h_g ≤ ε and −h_g ≤ ε
(2G multipliers). Metrics use the hard rates (share of predictions of class 1), and
``dp_gap`` (max − min group positive rate)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dualtune.core.catalog.builtin_constraints import GroupRateConstraint
from dualtune.core.engine.constraints.base import (
    Batch,
    ConstraintKind,
    KindContext,
    group_means,
)
from dualtune.core.engine.observation import ConstraintBatch
from dualtune.core.metrics import tail
from dualtune.core.tasks.base import Split, Task


class GroupRate(ConstraintKind):
    """Demographic parity: r_g − r = 0 or |r_g − r| ≤ ε for each group g of an attribute."""

    def __init__(
        self,
        attribute: str,
        num_groups: int,
        *,
        equality: bool,
        temperature: float,
        tolerance: float,
    ) -> None:
        self.attribute = attribute
        self.num_groups = num_groups
        self.equality = equality
        self.uses_epsilon = not equality
        self.temperature = temperature
        self._tolerance = tolerance

    @classmethod
    def from_spec(cls, params: GroupRateConstraint, context: KindContext) -> GroupRate:
        names = context.data.group_names.get(params.attribute)
        if names is None:
            raise ValueError(
                f"task {context.config.task.name!r} has no group attribute {params.attribute!r}"
            )
        return cls(
            params.attribute,
            len(names),
            equality=params.equality,
            temperature=params.temperature,
            tolerance=params.tolerance,
        )

    @property
    def tolerance(self) -> float:
        return self._tolerance

    def num_constraints(self) -> int:
        return self.num_groups if self.equality else 2 * self.num_groups

    def _gaps(self, rates_of: Tensor, groups: Tensor) -> tuple[Tensor, Tensor]:
        group_rates, present = group_means(rates_of, groups, self.num_groups)
        return group_rates - rates_of.mean(), present

    def _expand(self, gaps: Tensor) -> Tensor:
        return gaps if self.equality else torch.cat([gaps, -gaps])

    def observe(
        self, task: Task, model: nn.Module, output: Tensor, batch: Batch
    ) -> ConstraintBatch:
        soft = torch.sigmoid(self.temperature * (task.positive_score(output) - 0.5))
        gaps, present = self._gaps(soft, batch.groups[self.attribute])
        observed = torch.nonzero(present).flatten()
        if not self.equality:
            observed = torch.cat([observed, observed + self.num_groups])
        return ConstraintBatch(self._expand(gaps).index_select(0, observed), observed)

    def evaluate(self, task: Task, model: nn.Module, output: Tensor, split: Split) -> Tensor:
        hard = (task.predictions(output) == 1).to(output.dtype)
        gaps, present = self._gaps(hard, split.groups[self.attribute])
        return self._expand(gaps[present])

    def extra_metrics(
        self, task: Task, model: nn.Module, output: Tensor, split: Split, prefix: str
    ) -> dict[str, Tensor]:
        positive = task.predictions(output) == 1
        gap = tail.dp_gap(positive, split.groups[self.attribute], self.num_groups)
        return {f"{prefix}/dp_gap": gap}
