"""Constraints on the weights, one per weight matrix (parameters with ≥ 2 dims):

* ``weight_norm``   g_l = ‖W_l‖²_F.
* ``orthogonality`` g_l = ‖W_l W_lᵀ − I‖_F with W_l reshaped to (out, −1) and the Gram of
                    its smaller side, so a non-square layer can be feasible at ε = 0.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dualtune.core.catalog.constraints import ConstraintParams
from dualtune.core.engine.constraints.base import Batch, ConstraintKind, KindContext
from dualtune.core.engine.observation import ConstraintBatch
from dualtune.core.tasks.base import Split, Task


def weight_matrices(model: nn.Module) -> list[Tensor]:
    """The parameters with two or more dimensions (linear and conv weights), in order."""
    return [p for p in model.parameters() if p.ndim >= 2]


class WeightNorm(ConstraintKind):
    """‖W_l‖²_F ≤ ε for each weight matrix."""

    def __init__(self, model: nn.Module) -> None:
        self._m = len(weight_matrices(model))

    @classmethod
    def from_spec(cls, params: ConstraintParams, context: KindContext) -> WeightNorm:
        del params
        return cls(context.model)

    def num_constraints(self) -> int:
        return self._m

    def _values(self, model: nn.Module) -> Tensor:
        return torch.stack([w.pow(2).sum() for w in weight_matrices(model)])

    def observe(
        self, task: Task, model: nn.Module, output: Tensor, batch: Batch
    ) -> ConstraintBatch:
        return ConstraintBatch(self._values(model))

    def evaluate(self, task: Task, model: nn.Module, output: Tensor, split: Split) -> Tensor:
        return self._values(model)


def gram_defect(weight: Tensor) -> Tensor:
    """‖G − I‖_F with G the Gram matrix of the smaller side of W reshaped to (out, −1)."""
    w = weight.reshape(weight.shape[0], -1)
    gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
    eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    defect: Tensor = torch.linalg.matrix_norm(gram - eye)
    return defect


class Orthogonality(WeightNorm):
    """‖W_l W_lᵀ − I‖_F ≤ ε for each weight matrix (Gram of the smaller side)."""

    def _values(self, model: nn.Module) -> Tensor:
        return torch.stack([gram_defect(w) for w in weight_matrices(model)])
