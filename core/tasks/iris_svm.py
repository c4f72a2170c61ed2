"""The hard-margin linear SVM on two Iris classes, as a constrained problem.

min ½‖w‖² subject to 1 − y_i (wᵀx_i + b) ≤ 0 for every training sample, y ∈ {−1, +1}. With
``sample_loss`` constraints at ε = 0 the per-sample multipliers are the SVM's dual
coefficients α_i (the Lagrangians coincide), which sklearn's SVC reports.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from dualtune.core.catalog.builtin_tasks import IrisSvmParams
from dualtune.core.tasks.base import Dataset, Split, Task, cached_by_params
from dualtune.core.tasks.models import as_tensor

CLASSES = ("setosa", "versicolor", "virginica")


@cached_by_params
def _load(params: IrisSvmParams) -> Dataset:
    # Imported here: sklearn takes a second or more to import, and a driver that only
    # plans a sweep over this task never loads its data.
    from sklearn.datasets import load_iris
    from sklearn.model_selection import train_test_split

    x, y = load_iris(return_X_y=True)
    first, second = (CLASSES.index(c) for c in params.classes)
    keep = (y == first) | (y == second)
    x = x[keep][:, list(params.features)]
    labels = np.where(y[keep] == first, -1.0, 1.0)
    if params.val_fraction > 0:
        x_train, x_val, y_train, y_val = train_test_split(
            x,
            labels,
            test_size=params.val_fraction,
            stratify=labels,
            random_state=params.data_seed,
        )
    else:
        # No held-out data by default: the SVM is a convex toy, val repeats train.
        x_train, x_val, y_train, y_val = x, x, labels, labels
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    return Dataset(
        Split(as_tensor((x_train - mean) / std, torch.float32), as_tensor(y_train, torch.float32)),
        Split(as_tensor((x_val - mean) / std, torch.float32), as_tensor(y_val, torch.float32)),
        num_classes=2,
    )


class IrisSvm(Task):
    problem = "classification"
    params: IrisSvmParams

    def load(self) -> Dataset:
        return _load(self.params)

    def make_model(self, data: Dataset) -> nn.Module:
        return nn.Linear(data.train.x.shape[1], 1)

    def _margin(self, output: Tensor, y: Tensor) -> Tensor:
        return y * output.reshape(y.shape)

    def per_sample_loss(self, output: Tensor, y: Tensor) -> Tensor:
        """The hinge loss max(0, 1 − y f(x))."""
        return (1 - self._margin(output, y)).clamp_min(0)

    def sample_constraint(self, output: Tensor, y: Tensor) -> Tensor:
        """The margin constraint g_i = 1 − y_i f(x_i) (≤ 0 when the margin is met)."""
        return 1 - self._margin(output, y)

    def objective(self, model: nn.Module) -> Tensor:
        """½‖w‖² (the bias is not regularised)."""
        weight = model.weight
        assert isinstance(weight, Tensor)
        return 0.5 * weight.pow(2).sum()

    def predictions(self, output: Tensor) -> Tensor:
        return torch.where(output.reshape(-1) >= 0, 1.0, -1.0).to(output.dtype)

    def positive_score(self, output: Tensor) -> Tensor:
        return torch.sigmoid(output.reshape(-1))
