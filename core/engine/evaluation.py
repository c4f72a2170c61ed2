"""Evaluation of a trained model on a split: the metrics of ARCHITECTURE §3.4.

Everything is computed on the training device from whole-split tensors (one forward pass
in chunks, then vectorised statistics) and converted to floats once, in one sync.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from dualtune.core.engine.constraints import ConstraintKind
from dualtune.core.engine.forward import forward_split
from dualtune.core.metrics import group as group_metrics
from dualtune.core.metrics import tail
from dualtune.core.spec.metric_names import EPOCHS_RUN
from dualtune.core.tasks.base import Dataset, Split, Task


@dataclass(frozen=True)
class SplitEvaluation:
    metrics: dict[str, Tensor]
    losses: Tensor
    """Per-sample losses ℓ_i on the split."""
    constraint_values: Tensor
    """All constraint values g_j of the kind on the split."""


def evaluate_split(
    task: Task,
    model: nn.Module,
    kind: ConstraintKind,
    split: Split,
    *,
    prefix: str,
    epsilon: float,
    group: tuple[str, int] | None = None,
) -> SplitEvaluation:
    """The split's metrics; ``group`` (attribute, number of groups) adds the §3.4 group
    metrics for that attribute."""
    output = forward_split(model, split.x, task.eval_chunk)
    with torch.no_grad():
        losses = task.per_sample_loss(output, split.y)
        values = kind.evaluate(task, model, output, split)
        metrics = tail.loss_summary(losses, prefix)
        metrics[f"{prefix}/feasible_frac"] = tail.feasible_share(
            values, epsilon, equality=kind.equality, tolerance=kind.tolerance
        )
        predictions = task.predictions(output) if task.problem == "classification" else None
        if predictions is not None:
            metrics[f"{prefix}/accuracy"] = (predictions == split.y).float().mean()
        if group is not None:
            codes = split.groups[group[0]]
            if predictions is not None:
                metrics.update(
                    group_metrics.group_metrics(
                        predictions, split.y, codes, group[1], losses, prefix
                    )
                )
            else:
                metrics.update(group_metrics.group_loss_metrics(losses, codes, group[1], prefix))
        metrics.update(task.extra_metrics(model, output, split, prefix))
        metrics.update(kind.extra_metrics(task, model, output, split, prefix))
    return SplitEvaluation(metrics, losses, values)


def metrics_group(kind: ConstraintKind, data: Dataset) -> tuple[str, int] | None:
    """The attribute the group metrics are reported for, with its number of groups: the
    constraint's (``ConstraintKind.group_attribute``), else the task's first; ``None`` for a
    task without group attributes."""
    attribute = kind.group_attribute
    if attribute is None or attribute not in data.group_names:
        attribute = next(iter(data.group_names), None)
    if attribute is None:
        return None
    return attribute, len(data.group_names[attribute])


@dataclass(frozen=True)
class TrialEvaluation:
    metrics: dict[str, float]
    """ARCHITECTURE §3.4 metrics on train and val, the dual and constraint summaries."""
    splits: dict[str, SplitEvaluation]


def evaluate_trial(
    task: Task,
    model: nn.Module,
    kind: ConstraintKind,
    data: Dataset,
    multipliers: Tensor,
    *,
    epsilon: float,
) -> TrialEvaluation:
    """Every metric of ARCHITECTURE §3.4 on train and val for one trial's model and
    multipliers (the group metrics for ``metrics_group``'s attribute), converted to floats
    in one sync."""
    metrics: dict[str, Tensor] = {}
    splits: dict[str, SplitEvaluation] = {}
    group = metrics_group(kind, data)
    for name in ("train", "val"):
        ev = evaluate_split(
            task, model, kind, getattr(data, name), prefix=name, epsilon=epsilon, group=group
        )
        splits[name] = ev
        metrics.update(ev.metrics)
    metrics.update({f"dual/{k}": v for k, v in tail.multiplier_stats(multipliers).items()})
    violation = tail.violation(splits["train"].constraint_values, epsilon, equality=kind.equality)
    empty = violation.new_zeros(())
    metrics["constraint/violation_max"] = violation.max() if violation.numel() else empty
    metrics["constraint/violation_mean"] = violation.mean() if violation.numel() else empty
    return TrialEvaluation(tail.to_floats(metrics), splits)


def per_sample_arrays(
    data: Dataset, splits: dict[str, SplitEvaluation], multipliers: Tensor | None
) -> dict[str, np.ndarray]:
    """Per-sample losses, labels and group codes of both splits (``TrialResult.per_sample``)
    and, for per-sample constraints, the multipliers."""
    out: dict[str, np.ndarray] = {}
    for name in ("train", "val"):
        split = getattr(data, name)
        out[f"{name}_loss"] = splits[name].losses.detach().cpu().numpy()
        # A target with more than one value per sample (an image) is no label: NaN.
        labels = split.y.detach().cpu().numpy()
        out[f"{name}_label"] = labels if labels.ndim == 1 else np.full(split.n, np.nan)
        for attribute, codes in split.groups.items():
            out[f"{name}_group_{attribute}"] = codes.detach().cpu().numpy()
    if multipliers is not None:
        out["multiplier"] = multipliers.detach().cpu().numpy()
    return out


def epoch_timing(seconds: float, epochs: int, n: int, *, epoch: int) -> dict[str, float]:
    """``time/epoch_s`` and ``time/samples_per_s`` over the epochs since the last
    evaluation, and ``time/epochs``: the ``epoch`` trained to."""
    per_epoch = seconds / max(epochs, 1)
    return {
        "time/epoch_s": per_epoch,
        "time/samples_per_s": n / per_epoch if per_epoch > 0 else 0.0,
        EPOCHS_RUN: float(epoch),
    }
