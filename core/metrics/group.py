"""Group metrics of hard decisions (ARCHITECTURE §3.4): per-group rates and their gaps.

A gap is max − min of a per-group rate over the groups that have samples in the split;
``eo_gap`` is the larger of ``tpr_gap`` and ``fpr_gap``. The definitions are Fairlearn's
(``demographic_parity_difference``, ``equalized_odds_difference``,
``MetricFrame(...).difference()``) and agree with it to 1e-9 (tests/core/metrics/test_group.py).

The positive label is y = 1 and a positive decision is predicting class 1. With more than
two classes that makes the true- and false-positive rates those of class 1 against the rest
(Fairlearn's on the labels ``y == 1``), while ``error`` stays the multiclass error rate.

Rules where a rate has no samples, all Fairlearn's where Fairlearn gives a number:

* a group code with no samples in the split is left out of every gap (Fairlearn only sees
  the groups that occur); its rates read 0 and ``GroupRates.present`` is false;
* a group with samples but none with y = 1 has true-positive rate 0, and one with none with
  y ≠ 1 false-positive rate 0: sklearn's ``confusion_matrix(normalize="true")`` replaces
  0/0 by 0 and Fairlearn's rates inherit it. Such a group takes part in ``tpr_gap`` (or
  ``fpr_gap``) with that 0; ``has_label_positive`` / ``has_label_negative`` say which rates
  are defined, for callers that want to leave those groups out (``group_gap(rates, mask)``);
* a split with no samples at all has every gap and ``group_loss_max`` 0 (Fairlearn raises).

Everything is counted in integers (one bincount over group × label × decision × correct)
and divided in float64, on the tensors' device, without a host synchronisation; functions
return 0-d float64 tensors so the caller converts many at once (``tail.to_floats``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class GroupRates:
    """Per-group rates (float64) and the sizes of their denominators (int64), each a tensor
    of shape ``(num_groups,)``. A rate whose denominator is empty is 0."""

    count: Tensor
    """Samples in the group: the denominator of ``positive`` and ``error``."""
    label_positive_count: Tensor
    """Samples with y = 1: the denominator of ``true_positive``."""
    label_negative_count: Tensor
    """Samples with y ≠ 1: the denominator of ``false_positive``."""
    positive: Tensor
    """P(ŷ = 1 | group): the positive (selection) rate."""
    true_positive: Tensor
    """P(ŷ = 1 | group, y = 1)."""
    false_positive: Tensor
    """P(ŷ = 1 | group, y ≠ 1)."""
    error: Tensor
    """P(prediction wrong | group)."""

    @property
    def present(self) -> Tensor:
        """Groups with samples in the split: the groups every gap is over."""
        return self.count > 0

    @property
    def has_label_positive(self) -> Tensor:
        """Groups whose true-positive rate is defined (some sample has y = 1)."""
        return self.label_positive_count > 0

    @property
    def has_label_negative(self) -> Tensor:
        """Groups whose false-positive rate is defined (some sample has y ≠ 1)."""
        return self.label_negative_count > 0


def _flat(values: Tensor, n: int, name: str) -> Tensor:
    flat = values.detach().reshape(-1)
    if flat.numel() != n:
        raise ValueError(f"{name} has {flat.numel()} values for {n} group codes")
    return flat


def _bincount(
    codes: Tensor, num_groups: int, cells: int = 1, weights: Tensor | None = None
) -> Tensor:
    """Counts (or weight sums) of ``codes`` in 0..cells·num_groups−1."""
    counts = torch.bincount(codes, weights=weights, minlength=cells * num_groups)
    if counts.numel() != cells * num_groups:  # bincount grows its output to the largest code
        raise ValueError(f"group codes must lie in 0..{num_groups - 1} (num_groups {num_groups})")
    return counts


def _ratio(numerator: Tensor, denominator: Tensor) -> Tensor:
    return numerator.to(torch.float64) / denominator.clamp_min(1).to(torch.float64)


def rates_by_group(
    positive: Tensor,
    y: Tensor,
    groups: Tensor,
    num_groups: int,
    *,
    correct: Tensor | None = None,
) -> GroupRates:
    """Positive, true-positive, false-positive and error rate of each group.

    ``positive`` is the hard decision (bool: predicted class 1), ``y`` the labels (positive
    label 1), ``groups`` the int64 group codes 0..``num_groups``−1. ``correct`` (bool) says
    which predictions are right; by default ``positive == (y == 1)``, the binary decision's
    correctness. Multiclass callers pass ``predictions == y`` for the multiclass error rate.
    """
    if num_groups < 1:
        raise ValueError(f"num_groups must be at least 1, got {num_groups}")
    codes = groups.detach().reshape(-1)
    n = codes.numel()
    positive = _flat(positive, n, "positive")
    label = _flat(y, n, "y") == 1
    if positive.dtype != torch.bool:
        raise ValueError(f"positive must be a bool tensor of hard decisions, got {positive.dtype}")
    if correct is None:
        correct = positive == label
    else:
        correct = _flat(correct, n, "correct")
        if correct.dtype != torch.bool:
            raise ValueError(f"correct must be a bool tensor, got {correct.dtype}")
    cell = codes * 8 + label.long() * 4 + positive.long() * 2 + correct.long()
    # counts[g, label, decision, correct]
    counts = _bincount(cell, num_groups, cells=8).view(num_groups, 2, 2, 2)
    count = counts.sum(dim=(1, 2, 3))
    by_label = counts.sum(dim=3)  # [g, label, decision]
    label_count = by_label.sum(dim=2)
    decided_positive = by_label[:, :, 1]
    return GroupRates(
        count=count,
        label_positive_count=label_count[:, 1],
        label_negative_count=label_count[:, 0],
        positive=_ratio(decided_positive.sum(dim=1), count),
        true_positive=_ratio(decided_positive[:, 1], label_count[:, 1]),
        false_positive=_ratio(decided_positive[:, 0], label_count[:, 0]),
        error=_ratio(counts[..., 0].sum(dim=(1, 2)), count),
    )


def mean_by_group(values: Tensor, groups: Tensor, num_groups: int) -> tuple[Tensor, Tensor]:
    """Mean of ``values`` in each group (float64; 0 for a group without samples) and the
    mask of groups that have samples."""
    codes = groups.detach().reshape(-1)
    weights = _flat(values, codes.numel(), "values").to(torch.float64)
    # bincount of no codes gives float32 zeros whatever the weights' dtype
    sums = _bincount(codes, num_groups, weights=weights).to(torch.float64)
    counts = _bincount(codes, num_groups)
    return sums / counts.clamp_min(1), counts > 0


def group_gap(rates: Tensor, mask: Tensor) -> Tensor:
    """max − min of ``rates`` over the groups in ``mask``; 0 when the mask is empty."""
    high = torch.where(mask, rates, -torch.inf).amax()
    low = torch.where(mask, rates, torch.inf).amin()
    return torch.where(mask.any(), high - low, 0.0)


def group_max(values: Tensor, mask: Tensor) -> Tensor:
    """Largest of ``values`` over the groups in ``mask``; 0 when the mask is empty."""
    high = torch.where(mask, values, -torch.inf).amax()
    return torch.where(mask.any(), high, 0.0)


def dp_gap(positive: Tensor, groups: Tensor, num_groups: int) -> Tensor:
    """Demographic-parity gap: max − min positive rate over the groups with samples
    (Fairlearn's ``demographic_parity_difference``)."""
    rates, present = mean_by_group(positive, groups, num_groups)
    return group_gap(rates, present)


def group_loss_metrics(
    losses: Tensor, groups: Tensor, num_groups: int, prefix: str
) -> dict[str, Tensor]:
    """``{prefix}/group_loss_max``: the largest mean per-sample loss of a group with samples
    (the quantity Fairlearn's ``BoundedGroupLoss`` bounds). What a regression task reports."""
    means, present = mean_by_group(losses, groups, num_groups)
    return {f"{prefix}/group_loss_max": group_max(means, present)}


def group_metrics(
    predictions: Tensor,
    y: Tensor,
    groups: Tensor,
    num_groups: int,
    losses: Tensor,
    prefix: str,
) -> dict[str, Tensor]:
    """``{prefix}/dp_gap, tpr_gap, fpr_gap, eo_gap, error_gap, group_loss_max`` of a
    classification split, from the predicted class indices and the per-sample losses."""
    if predictions.is_floating_point():
        raise ValueError(f"predictions must be class indices, got {predictions.dtype}")
    rates = rates_by_group(predictions == 1, y, groups, num_groups, correct=predictions == y)
    present = rates.present
    tpr_gap = group_gap(rates.true_positive, present)
    fpr_gap = group_gap(rates.false_positive, present)
    return {
        f"{prefix}/dp_gap": group_gap(rates.positive, present),
        f"{prefix}/tpr_gap": tpr_gap,
        f"{prefix}/fpr_gap": fpr_gap,
        f"{prefix}/eo_gap": torch.maximum(tpr_gap, fpr_gap),
        f"{prefix}/error_gap": group_gap(rates.error, present),
        **group_loss_metrics(losses, groups, num_groups, prefix),
    }
