"""sklearn's digits: 1,797 8×8 images of 10 classes (pixels / 16), stratified split, an MLP
or a residual MLP with a readout after every block (``model: resmlp``)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from dualtune.core.catalog.builtin_tasks import DigitsParams
from dualtune.core.tasks.base import Dataset, Split, Task, cached_by_params
from dualtune.core.tasks.models import as_tensor, mlp
from dualtune.core.tasks.readout_models import ReadoutMLP


@cached_by_params
def _load(params: DigitsParams) -> Dataset:
    # Imported here: sklearn takes a second or more to import, and a driver that only
    # plans a sweep over this task never loads its data.
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_train, x_val, y_train, y_val = train_test_split(
        x / 16.0, y, test_size=params.val_fraction, stratify=y, random_state=params.data_seed
    )
    return Dataset(
        Split(as_tensor(x_train, torch.float32), as_tensor(y_train, torch.int64)),
        Split(as_tensor(x_val, torch.float32), as_tensor(y_val, torch.int64)),
        num_classes=10,
    )


class Digits(Task):
    problem = "classification"
    params: DigitsParams

    def load(self) -> Dataset:
        return _load(self.params)

    def make_model(self, data: Dataset) -> nn.Module:
        if self.params.model == "resmlp":
            return ReadoutMLP(64, self.params.width, self.params.blocks, 10)
        return mlp(64, list(self.params.hidden), 10)

    def images(self, x: Tensor) -> np.ndarray:
        """The 8×8 images: ``x`` holds their pixels row by row, already scaled to [0, 1]."""
        pixels: np.ndarray = x.detach().cpu().numpy().reshape(-1, 8, 8)
        return pixels.clip(0.0, 1.0)
