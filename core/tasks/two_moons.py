"""Two moons (sklearn ``make_moons``), the Feasible Learning toy: MLP 70-70 by default."""

from __future__ import annotations

import torch
from torch import nn

from dualtune.core.catalog.builtin_tasks import TwoMoonsParams
from dualtune.core.tasks.base import Dataset, Split, Task, cached_by_params
from dualtune.core.tasks.models import as_tensor, mlp


@cached_by_params
def _load(params: TwoMoonsParams) -> Dataset:
    # Imported here: sklearn takes a second or more to import, and a driver that only
    # plans a sweep over this task never loads its data.
    from sklearn.datasets import make_moons

    x, y = make_moons(
        params.n_train + params.n_val, noise=params.noise, random_state=params.data_seed
    )
    n = params.n_train
    # A group attribute for `group_rate` constraints: the side of the plane a point lies on
    # (x₀ < 0.5 or not). The sides' positive rates differ a lot (the lower moon lies mostly on
    # the right), so demographic parity across them is a real constraint.
    side = (x[:, 0] >= 0.5).astype("int64")
    return Dataset(
        Split(
            as_tensor(x[:n], torch.float32),
            as_tensor(y[:n], torch.int64),
            {"side": as_tensor(side[:n], torch.int64)},
        ),
        Split(
            as_tensor(x[n:], torch.float32),
            as_tensor(y[n:], torch.int64),
            {"side": as_tensor(side[n:], torch.int64)},
        ),
        num_classes=2,
        group_names={"side": ("left", "right")},
    )


class TwoMoons(Task):
    problem = "classification"
    params: TwoMoonsParams

    def load(self) -> Dataset:
        return _load(self.params)

    def make_model(self, data: Dataset) -> nn.Module:
        return mlp(2, list(self.params.hidden), 2)
