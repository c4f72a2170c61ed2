"""Small model builders shared by the tasks."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn


def mlp(
    in_features: int,
    hidden: list[int],
    out_features: int,
    activation: type[nn.Module] = nn.ReLU,
) -> nn.Sequential:
    """Linear + ``activation`` blocks of the given widths, then a linear readout (PyTorch
    init)."""
    layers: list[nn.Module] = []
    width = in_features
    for h in hidden:
        layers += [nn.Linear(width, h), activation()]
        width = h
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


class LegendreFeatures(nn.Module):
    """x ∈ [−1, 1] ↦ (P_1(x), …, P_d(x)) by Bonnet's recursion
    (n+1)P_{n+1} = (2n+1) x P_n − n P_{n−1}."""

    def __init__(self, degree: int) -> None:
        super().__init__()
        if degree < 1:
            raise ValueError(f"degree must be ≥ 1, got {degree}")
        self.degree = degree

    def forward(self, x: Tensor) -> Tensor:
        x = x.reshape(-1)
        previous, current = torch.ones_like(x), x
        columns = [current]
        for n in range(1, self.degree):
            previous, current = current, ((2 * n + 1) * x * current - n * previous) / (n + 1)
            columns.append(current)
        return torch.stack(columns, dim=1)


def as_tensor(array: np.ndarray, dtype: torch.dtype) -> Tensor:
    return torch.as_tensor(np.ascontiguousarray(array), dtype=dtype)
