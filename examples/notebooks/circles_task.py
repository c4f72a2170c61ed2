"""A task of your own for ``plugin_task.ipynb``: sklearn's two concentric circles, an MLP.

The notebook describes it with a ``dualtune.TaskInfo`` (``builder="circles_task:Circles"``)
and registers it in-process. Trials import this module by that name, so it must be
importable where they run: local Ray's workers get the notebook's ``sys.path``.
"""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field
from sklearn.datasets import make_circles
from torch import nn

import dualtune


class CirclesParams(dualtune.TaskParams):
    """What a spec's ``task.params`` may set (validated before anything runs)."""

    n_train: Annotated[int, Field(ge=8, le=100_000)] = 256
    n_val: Annotated[int, Field(ge=8, le=100_000)] = 128
    noise: Annotated[float, Field(ge=0.0, le=1.0)] = 0.1
    hidden: Annotated[int, Field(ge=1, le=1024)] = 32
    data_seed: Annotated[int, Field(ge=0)] = 0


class Circles(dualtune.Task):
    """Inner circle against outer circle; the groups are the half-planes x₀ < 0 and x₀ ≥ 0."""

    problem = "classification"
    params: CirclesParams

    def load(self) -> dualtune.Dataset:
        p = self.params
        x, y = make_circles(
            p.n_train + p.n_val, noise=p.noise, factor=0.5, random_state=p.data_seed
        )
        x_t = torch.as_tensor(x, dtype=torch.float32)
        y_t = torch.as_tensor(y, dtype=torch.int64)
        side = (x_t[:, 0] >= 0).to(torch.int64)
        n = p.n_train
        return dualtune.Dataset(
            train=dualtune.Split(x_t[:n], y_t[:n], {"side": side[:n]}),
            val=dualtune.Split(x_t[n:], y_t[n:], {"side": side[n:]}),
            num_classes=2,
            group_names={"side": ("left", "right")},
        )

    def make_model(self, data: dualtune.Dataset) -> nn.Module:
        h = self.params.hidden
        return nn.Sequential(
            nn.Linear(2, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, 2)
        )
