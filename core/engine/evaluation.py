"""Evaluation of a trained model on a split: the metrics of ARCHITECTURE §3.4.

Everything is computed on the training device from whole-split tensors (one forward pass
in chunks, then vectorised statistics) and converted to floats once, in one sync.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from core.engine.constraints import ConstraintKind, GroupRate
from core.engine.forward import forward_split
from core.metrics import tail
from core.tasks.base import Split, Task


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
) -> SplitEvaluation:
    output = forward_split(model, split.x, task.eval_chunk)
    with torch.no_grad():
        losses = task.per_sample_loss(output, split.y)
        values = kind.evaluate(task, model, output, split)
        metrics = tail.loss_summary(losses, prefix)
        metrics[f"{prefix}/feasible_frac"] = tail.feasible_share(
            values, epsilon, equality=kind.equality, tolerance=kind.tolerance
        )
        if task.problem == "classification":
            metrics[f"{prefix}/accuracy"] = (task.predictions(output) == split.y).float().mean()
        if isinstance(kind, GroupRate):
            positive = task.predictions(output) == 1
            metrics[f"{prefix}/dp_gap"] = tail.dp_gap(
                positive, split.groups[kind.attribute], kind.num_groups
            )
        metrics.update(task.extra_metrics(model, output, split, prefix))
        metrics.update(kind.extra_metrics(task, model, output, split, prefix))
    return SplitEvaluation(metrics, losses, values)
