"""The rate kinds, ``group_rate`` and ``equalized_odds``: for each constrained rate and each
group g of the attribute, h_g = r_g − r, the group's rate minus the overall rate.

Rates (``GroupRateConstraint.rate``; ``equalized_odds`` is true_positive and false_positive
together) are means of a decision indicator over a conditioning set:

=================  ===================  ==========================
rate               indicator            over
=================  ===================  ==========================
``positive``       decides class 1      every sample
``true_positive``  decides class 1      the samples labelled 1
``false_positive`` decides class 1      the samples not labelled 1
``error``          decision ≠ label     every sample
=================  ===================  ==========================

(Multiclass tasks: "decision ≠ label" counts any wrong class, as ``s/error_gap`` does, while
its surrogate below is that of class 1 against the rest.)

The hard indicator is the decision the metrics count (``task.predictions == 1``); the soft
one replaces "decides class 1" by s = σ(τ(p − ½)), p the task's ``positive_score`` (as in
the statistical-equality code, τ = 8), and "decision ≠ label" by s for label 0 and 1 − s for
label 1. With ``equality`` the constraints are h = 0; otherwise |h| ≤ ε as the two
inequalities h ≤ ε and −h ≤ ε. The constraint vector is laid out rate block by rate block,
G entries each (then, for |·| ≤ ε, the negated blocks).

**Proxy constraints** (``proxy: true``, the default): a batch's observation carries both the
soft gaps (the primal step descends on them) and the hard ones (``dual_values``: the dual
step ascends on them), so the multipliers settle where the gaps the metrics count meet the
bound, not where the surrogate's do (Cotter, Jiang & Sridharan, "Two-player games for
efficient non-convex constrained optimization", ALT 2019; Cotter et al., JMLR 2019).

**Minibatches**: a constraint is observed on a batch only when its group and the overall
conditioning set both have samples in the batch (a batch without positives observes no
true-positive constraint): an absent group yields neither a NaN nor a false violation, and
its multiplier is left as it is.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dualtune.core.catalog.builtin_constraints import Rate, RateConstraint
from dualtune.core.engine.constraints.base import Batch, ConstraintKind, KindContext
from dualtune.core.engine.observation import ConstraintBatch
from dualtune.core.tasks.base import Split, Task


def rate_gaps(
    decides_positive: Tensor,
    y: Tensor,
    groups: Tensor,
    num_groups: int,
    rate: Rate,
    *,
    wrong: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The gaps r_g − r of one rate (G values) and the mask of the groups where it is
    defined (the group has samples in the conditioning set).

    ``decides_positive`` is the decision indicator, hard (0/1) or soft (in [0, 1]); ``y``
    the labels; ``wrong`` the hard error indicator (decision ≠ label, multiclass included),
    which the ``error`` rate uses in place of its binary form. Vectorised with
    ``index_add`` and vmap-safe: only the indicators may depend on a pack member's
    parameters.
    """
    positive_label = (y == 1).to(decides_positive.dtype)
    if rate == "error" and wrong is not None:
        indicator = wrong
    elif rate == "error":
        # s for label 0, 1 − s for label 1: s + y(1 − 2s)
        indicator = decides_positive + positive_label * (1.0 - 2.0 * decides_positive)
    else:
        indicator = decides_positive
    if rate == "true_positive":
        weight: Tensor | None = positive_label
    elif rate == "false_positive":
        weight = 1.0 - positive_label
    else:
        weight = None
    zeros = torch.zeros(num_groups, dtype=decides_positive.dtype, device=decides_positive.device)
    if weight is None:
        counts = torch.bincount(groups, minlength=num_groups).to(decides_positive.dtype)
        sums = zeros.index_add(0, groups, indicator)
        overall = indicator.mean()
        total = torch.ones((), dtype=decides_positive.dtype, device=decides_positive.device)
    else:
        counts = zeros.index_add(0, groups, weight)
        sums = zeros.index_add(0, groups, indicator * weight)
        total = weight.sum()
        overall = (indicator * weight).sum() / total.clamp_min(1.0)
    present = (counts > 0) & (total > 0)
    return sums / counts.clamp_min(1.0) - overall, present


class GroupRate(ConstraintKind):
    """Rate parity across the groups of an attribute: r_g − r = 0 or |r_g − r| ≤ ε for each
    rate in ``rates`` and each group g (see the module docstring)."""

    batch_estimates = True

    def __init__(
        self,
        attribute: str,
        num_groups: int,
        *,
        rates: tuple[Rate, ...] = ("positive",),
        equality: bool,
        temperature: float,
        tolerance: float,
        proxy: bool = True,
    ) -> None:
        if not rates:
            raise ValueError("a rate constraint needs at least one rate")
        self.attribute = attribute
        self.group_attribute = attribute
        self.num_groups = num_groups
        self.rates = rates
        self.equality = equality
        self.uses_epsilon = not equality
        self.temperature = temperature
        self.proxy = proxy
        self._tolerance = tolerance

    @classmethod
    def from_spec(cls, params: RateConstraint, context: KindContext) -> GroupRate:
        names = context.data.group_names.get(params.attribute)
        if names is None:
            raise ValueError(
                f"task {context.config.task.name!r} has no group attribute {params.attribute!r}"
            )
        return cls(
            params.attribute,
            len(names),
            rates=params.rates,
            equality=params.equality,
            temperature=params.temperature,
            tolerance=params.tolerance,
            proxy=params.proxy,
        )

    @property
    def tolerance(self) -> float:
        return self._tolerance

    def num_constraints(self) -> int:
        blocks = len(self.rates) * self.num_groups
        return blocks if self.equality else 2 * blocks

    def _gaps(
        self, decides_positive: Tensor, y: Tensor, groups: Tensor, wrong: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Every rate's gaps, concatenated block by block, and where they are defined."""
        pairs = [
            rate_gaps(decides_positive, y, groups, self.num_groups, r, wrong=wrong)
            for r in self.rates
        ]
        if len(pairs) == 1:
            return pairs[0]
        return torch.cat([g for g, _ in pairs]), torch.cat([p for _, p in pairs])

    def _expand(self, gaps: Tensor) -> Tensor:
        return gaps if self.equality else torch.cat([gaps, -gaps])

    def soft_decisions(self, task: Task, output: Tensor) -> Tensor:
        """s = σ(τ(p − ½)): the differentiable stand-in for "decides class 1"."""
        return torch.sigmoid(self.temperature * (task.positive_score(output) - 0.5))

    def _hard_gaps(
        self, task: Task, output: Tensor, y: Tensor, groups: Tensor
    ) -> tuple[Tensor, Tensor]:
        """The gaps of the decisions the metrics count (``task.predictions``), with the
        mask of where they are defined."""
        predictions = task.predictions(output)
        decides_positive = (predictions == 1).to(output.dtype)
        wrong = (predictions != y).to(output.dtype) if "error" in self.rates else None
        return self._gaps(decides_positive, y, groups, wrong)

    def observe(
        self, task: Task, model: nn.Module, output: Tensor, batch: Batch
    ) -> ConstraintBatch:
        groups = batch.groups[self.attribute]
        soft, present = self._gaps(self.soft_decisions(task, output), batch.y, groups)
        observed = torch.nonzero(present).flatten()
        if not self.equality:
            observed = torch.cat([observed, observed + present.numel()])
        values = self._expand(soft).index_select(0, observed)
        if not self.proxy:
            return ConstraintBatch(values, observed)
        with torch.no_grad():
            hard, _ = self._hard_gaps(task, output, batch.y, groups)
        return ConstraintBatch(values, observed, self._expand(hard).index_select(0, observed))

    def evaluate(self, task: Task, model: nn.Module, output: Tensor, split: Split) -> Tensor:
        gaps, present = self._hard_gaps(task, output, split.y, split.groups[self.attribute])
        return self._expand(gaps[present])
