"""The group metrics of ARCHITECTURE §3.4 against Fairlearn's own functions (to 1e-9) and a
pandas group-by: on random predictions with imbalanced groups, a group without positive
labels, one without negative labels and a group code absent from the split; and on the
Adult val split with a scikit-learn logistic regression's predictions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import torch
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_difference,
    equalized_odds_difference,
    false_positive_rate,
    selection_rate,
    true_positive_rate,
)
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score

from dualtune.core.catalog.builtin_tasks import AdultParams
from dualtune.core.metrics import tail
from dualtune.core.metrics.group import (
    dp_gap,
    group_gap,
    group_loss_metrics,
    group_metrics,
    mean_by_group,
    rates_by_group,
)
from dualtune.core.metrics.tail import to_floats
from dualtune.core.tasks.adult import Adult

TOL = 1e-9


def error_rate(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(1.0 - accuracy_score(y_true, y_pred))


@dataclass(frozen=True)
class Case:
    y: np.ndarray
    predictions: np.ndarray
    groups: np.ndarray
    num_groups: int
    losses: np.ndarray


def fairlearn_metrics(case: Case) -> dict[str, float]:
    """The §3.4 group metrics as Fairlearn (and pandas, for the loss) compute them. Labels
    and decisions are binarised at class 1 for the rates, as ``group_metrics`` does."""
    y, p, g = case.y == 1, case.predictions == 1, case.groups
    rates = MetricFrame(
        metrics={"tpr": true_positive_rate, "fpr": false_positive_rate},
        y_true=y,
        y_pred=p,
        sensitive_features=g,
    ).difference()
    errors = MetricFrame(
        metrics=error_rate, y_true=case.y, y_pred=case.predictions, sensitive_features=g
    )
    return {
        "s/dp_gap": demographic_parity_difference(y, p, sensitive_features=g),
        "s/tpr_gap": rates["tpr"],
        "s/fpr_gap": rates["fpr"],
        "s/eo_gap": equalized_odds_difference(y, p, sensitive_features=g),
        "s/error_gap": errors.difference(),
        "s/group_loss_max": pd.Series(case.losses).groupby(g).mean().max(),
    }


def ours(case: Case) -> dict[str, float]:
    return to_floats(
        group_metrics(
            torch.from_numpy(case.predictions),
            torch.from_numpy(case.y),
            torch.from_numpy(case.groups),
            case.num_groups,
            torch.from_numpy(case.losses),
            "s",
        )
    )


def random_case(seed: int, num_groups: int, num_classes: int = 2) -> Case:
    """Imbalanced groups (sizes from a Dirichlet) with their own label and decision rates;
    group 0 has no sample with y = 1, the last present group none with y = 0, and the code
    ``num_groups − 2`` (passed in ``num_groups``) never occurs."""
    rng = np.random.default_rng(seed)
    occurring = [c for c in range(num_groups) if c != num_groups - 2]
    weights = rng.dirichlet(np.full(len(occurring), 0.7)) * 0.8 + 0.2 / len(occurring)
    n = int(rng.integers(300, 3000))
    groups = rng.choice(occurring, size=n, p=weights / weights.sum())
    groups[: len(occurring)] = occurring  # every occurring group has a sample
    base = rng.uniform(0.1, 0.9, size=num_groups)[groups]
    y = (rng.random(n) < base).astype(np.int64)
    if num_classes > 2:  # the non-positive labels spread over classes 0, 2, 3, ...
        y = np.where(y == 1, 1, rng.choice([0, *range(2, num_classes)], size=n))
    y[groups == 0] = 0
    y[groups == occurring[-1]] = 1
    agree = rng.random(n) < rng.uniform(0.5, 0.95, size=num_groups)[groups]
    predictions = np.where(agree, y, rng.integers(0, num_classes, size=n)).astype(np.int64)
    losses = rng.exponential(rng.uniform(0.2, 3.0, size=num_groups)[groups])
    return Case(y, predictions, groups.astype(np.int64), num_groups, losses)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("occurring_groups", [2, 3, 4, 5])
def test_group_metrics_equal_fairlearn_on_random_predictions(
    seed: int, occurring_groups: int
) -> None:
    case = random_case(seed, occurring_groups + 1)
    assert len(np.unique(case.groups)) == occurring_groups
    assert ours(case) == pytest.approx(fairlearn_metrics(case), abs=TOL, rel=0)


@pytest.mark.parametrize("seed", range(3))
def test_rates_by_group_equal_fairlearns_by_group(seed: int) -> None:
    case = random_case(seed, 6)
    y, p, g = case.y == 1, case.predictions == 1, case.groups
    frame = MetricFrame(
        metrics={
            "positive": selection_rate,
            "true_positive": true_positive_rate,
            "false_positive": false_positive_rate,
            "error": error_rate,
        },
        y_true=y,
        y_pred=p,
        sensitive_features=g,
    ).by_group
    rates = rates_by_group(torch.from_numpy(p), torch.from_numpy(y), torch.from_numpy(g), 6)
    present = rates.present.numpy()
    assert present.tolist() == [c in frame.index for c in range(6)]
    for name in frame.columns:
        got = getattr(rates, name).numpy()
        assert got.dtype == np.float64
        np.testing.assert_allclose(got[present], frame[name].to_numpy(), atol=TOL, rtol=0)
        assert (got[~present] == 0).all()
    counts = pd.crosstab(g, y).reindex(range(6), fill_value=0)
    assert rates.count.tolist() == counts.sum(axis=1).tolist()
    assert rates.label_positive_count.tolist() == counts[True].tolist()
    assert rates.label_negative_count.tolist() == counts[False].tolist()
    # The groups without positives or negatives are there, with Fairlearn's 0 for the rate.
    assert rates.has_label_positive.tolist() == (counts[True] > 0).tolist()
    assert rates.has_label_negative.tolist() == (counts[False] > 0).tolist()
    assert not rates.has_label_positive[0]
    assert rates.true_positive[0] == 0
    assert not rates.has_label_negative[5]
    assert rates.false_positive[5] == 0


@pytest.mark.parametrize("seed", range(3))
def test_multiclass_rates_are_class_one_against_the_rest(seed: int) -> None:
    """TPR and FPR equal Fairlearn's on the labels binarised at class 1; the error gap is
    the multiclass one (1 − accuracy on the class labels)."""
    case = random_case(seed, 5, num_classes=4)
    assert set(np.unique(case.y)) == {0, 1, 2, 3}
    assert ours(case) == pytest.approx(fairlearn_metrics(case), abs=TOL, rel=0)


def test_group_loss_max_matches_a_pandas_group_by() -> None:
    rng = np.random.default_rng(7)
    groups = rng.choice([0, 1, 3], size=5000, p=[0.9, 0.08, 0.02])  # code 2 is absent
    losses = rng.gamma(2.0, size=5000).astype(np.float32)
    got = to_floats(group_loss_metrics(torch.from_numpy(losses), torch.from_numpy(groups), 4, "v"))
    expected = pd.Series(losses.astype(np.float64)).groupby(groups).mean().max()
    assert got == pytest.approx({"v/group_loss_max": expected}, abs=TOL, rel=0)
    # A large group with a small loss does not outvote a small group with a large one.
    losses = np.where(groups == 3, 10.0, 0.1)
    got = to_floats(group_loss_metrics(torch.from_numpy(losses), torch.from_numpy(groups), 4, "v"))
    assert got == {"v/group_loss_max": 10.0}


@dataclass(frozen=True)
class AdultVal:
    y: np.ndarray
    predictions: np.ndarray
    losses: np.ndarray
    groups: dict[str, np.ndarray]


@pytest.fixture(scope="module")
def adult_val() -> AdultVal:
    """A logistic regression fitted on Adult's train split, predicting its val split."""
    data = Adult(AdultParams()).load()
    model = LogisticRegression(max_iter=1000).fit(data.train.x.numpy(), data.train.y.numpy())
    x, y = data.val.x.numpy(), data.val.y.numpy()
    p_true = model.predict_proba(x)[np.arange(len(y)), y]
    return AdultVal(
        y=y,
        predictions=model.predict(x),
        losses=-np.log(p_true),
        groups={a: codes.numpy() for a, codes in data.val.groups.items()},
    )


@pytest.mark.parametrize(("attribute", "num_groups"), [("sex", 2), ("race", 5)])
def test_group_metrics_equal_fairlearn_on_adult_val(
    adult_val: AdultVal, attribute: str, num_groups: int
) -> None:
    case = Case(
        adult_val.y,
        adult_val.predictions,
        adult_val.groups[attribute],
        num_groups,
        adult_val.losses,
    )
    got, expected = ours(case), fairlearn_metrics(case)
    assert got == pytest.approx(expected, abs=TOL, rel=0)
    assert got["s/dp_gap"] > 0.05  # a real disparity, not a degenerate all-zero case
    assert got["s/eo_gap"] > 0.05


def test_undefined_rates_are_finite_and_follow_fairlearn() -> None:
    # group 0: no y = 1; group 1: mixed; group 2: absent; group 3: no y = 0
    y = torch.tensor([0, 0, 0, 1, 1, 0, 0, 1, 1, 1])
    predictions = torch.tensor([1, 0, 0, 1, 0, 1, 0, 1, 1, 0])
    groups = torch.tensor([0, 0, 0, 1, 1, 1, 1, 3, 3, 3])
    got = to_floats(group_metrics(predictions, y, groups, 4, torch.ones(10), "s"))
    # TPRs 0 (no positives: 0/0 read as 0), 1/2, 2/3; FPRs 1/3, 1/2, 0 (no negatives).
    assert got["s/tpr_gap"] == pytest.approx(2 / 3)
    assert got["s/fpr_gap"] == pytest.approx(1 / 2)
    assert got["s/eo_gap"] == pytest.approx(
        equalized_odds_difference(
            y.numpy(), predictions.numpy(), sensitive_features=groups.numpy()
        )
    )
    # Leaving the undefined rates out instead is one mask away.
    rates = rates_by_group(predictions == 1, y, groups, 4)
    assert float(group_gap(rates.true_positive, rates.has_label_positive)) == pytest.approx(1 / 6)
    # No samples at all, or only one group: every gap is 0, never NaN.
    empty = torch.zeros(0, dtype=torch.int64)
    for metrics in (
        group_metrics(empty, empty, empty, 3, torch.zeros(0), "s"),
        group_metrics(predictions, y, torch.zeros(10, dtype=torch.int64), 3, torch.ones(10), "s"),
    ):
        values = to_floats(metrics)
        assert {k: v for k, v in values.items() if k != "s/group_loss_max"} == dict.fromkeys(
            ("s/dp_gap", "s/tpr_gap", "s/fpr_gap", "s/eo_gap", "s/error_gap"), 0.0
        )
        assert all(v.dtype == torch.float64 and v.shape == () for v in metrics.values())


def test_metric_names_are_those_of_architecture_3_4() -> None:
    labels = torch.tensor([0, 1, 1, 0])
    groups = torch.tensor([0, 0, 1, 1])
    names = group_metrics(labels, labels, groups, 2, torch.ones(4), "val")
    assert list(names) == [
        "val/dp_gap",
        "val/tpr_gap",
        "val/fpr_gap",
        "val/eo_gap",
        "val/error_gap",
        "val/group_loss_max",
    ]
    assert list(group_loss_metrics(torch.ones(4), groups, 2, "train")) == ["train/group_loss_max"]


def test_dp_gap_has_one_definition() -> None:
    """``tail.dp_gap`` is this module's; it and ``group_metrics`` agree bit for bit."""
    case = random_case(11, 4)
    positive = torch.from_numpy(case.predictions == 1)
    groups = torch.from_numpy(case.groups)
    assert tail.dp_gap is dp_gap
    gap = dp_gap(positive, groups, 4)
    assert gap.dtype == torch.float64
    metrics = group_metrics(
        torch.from_numpy(case.predictions),
        torch.from_numpy(case.y),
        groups,
        4,
        torch.from_numpy(case.losses),
        "s",
    )
    assert float(gap) == float(metrics["s/dp_gap"])
    rates, present = tail.group_rates(positive, groups, 4)
    assert torch.equal(rates, mean_by_group(positive, groups, 4)[0])
    assert torch.equal(present, torch.from_numpy(np.isin(np.arange(4), case.groups)))


def test_arguments_are_checked() -> None:
    positive = torch.tensor([True, False, True])
    y = torch.tensor([1, 0, 0])
    with pytest.raises(ValueError, match=r"group codes must lie in 0\.\.1"):
        rates_by_group(positive, y, torch.tensor([0, 1, 2]), 2)
    with pytest.raises(ValueError, match=r"group codes must lie in 0\.\.1"):
        mean_by_group(y, torch.tensor([0, 1, 2]), 2)
    with pytest.raises(ValueError, match="y has 2 values for 3 group codes"):
        rates_by_group(positive, y[:2], torch.tensor([0, 1, 1]), 2)
    with pytest.raises(ValueError, match="positive must be a bool tensor"):
        rates_by_group(positive.double(), y, torch.tensor([0, 1, 1]), 2)
    with pytest.raises(ValueError, match="num_groups must be at least 1"):
        rates_by_group(positive, y, torch.tensor([0, 0, 0]), 0)
    with pytest.raises(ValueError, match="predictions must be class indices"):
        group_metrics(positive.double(), y, torch.tensor([0, 1, 1]), 2, torch.ones(3), "s")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_the_metrics_are_the_cpus() -> None:
    case = random_case(3, 5)
    tensors = [torch.from_numpy(a) for a in (case.predictions, case.y, case.groups, case.losses)]
    cpu = group_metrics(*tensors[:3], 5, tensors[3], "s")
    cuda = group_metrics(*(t.cuda() for t in tensors[:3]), 5, tensors[3].cuda(), "s")
    assert all(v.device.type == "cuda" for v in cuda.values())
    assert to_floats(cuda) == pytest.approx(to_floats(cpu), abs=1e-12, rel=0)
