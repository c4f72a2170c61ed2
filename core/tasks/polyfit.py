"""1-D noisy polynomial regression with an over-parameterised model (the FL toy).

x ~ U[−1, 1]; targets y = f(x) + noise·N(0, 1) on train and the noise-free f(x) on val, so
val measures how well the fit recovers f. f(x) = x³ − 0.5x. The model is a linear map of
the Legendre features P_1..P_d of x (degree 15 by default, more than 30 points can pin).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from dualtune.core.catalog.builtin_tasks import PolyfitParams
from dualtune.core.tasks.base import Dataset, Split, Task, cached_by_params
from dualtune.core.tasks.models import LegendreFeatures, as_tensor


def truth(x: np.ndarray) -> np.ndarray:
    return x**3 - 0.5 * x


@cached_by_params
def _load(params: PolyfitParams) -> Dataset:
    rng = np.random.default_rng(params.data_seed)
    x_train = rng.uniform(-1, 1, params.n_train)
    y_train = truth(x_train) + params.noise * rng.standard_normal(params.n_train)
    x_val = rng.uniform(-1, 1, params.n_val)
    return Dataset(
        Split(as_tensor(x_train[:, None], torch.float32), as_tensor(y_train, torch.float32)),
        Split(as_tensor(x_val[:, None], torch.float32), as_tensor(truth(x_val), torch.float32)),
        num_classes=None,
    )


class Polyfit(Task):
    problem = "regression"
    params: PolyfitParams

    def load(self) -> Dataset:
        return _load(self.params)

    def make_model(self, data: Dataset) -> nn.Module:
        return nn.Sequential(
            LegendreFeatures(self.params.degree), nn.Linear(self.params.degree, 1)
        )
