"""The rate kinds (``group_rate`` with every ``rate``, ``equalized_odds``) and
``bounded_group_loss``: their constraint values are Fairlearn's per-group rates minus its
overall rate, a minibatch without a group (or without its conditioning set) observes no
constraint for it, and under proxy constraints the dual step ascends on the hard gaps while
the primal step descends on the surrogate's."""

from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from fairlearn.metrics import (
    MetricFrame,
    false_positive_rate,
    selection_rate,
    true_positive_rate,
)
from sklearn.metrics import zero_one_loss

from dualtune.core.engine.build import build_constraint_kind
from dualtune.core.engine.constraints import Batch, BoundedGroupLoss, GroupRate
from dualtune.core.engine.dual_optimizers import GradientAscent
from dualtune.core.engine.fit import fit
from dualtune.core.engine.methods import ALM, FL
from dualtune.core.engine.multipliers import Multipliers
from dualtune.core.engine.observation import ConstraintBatch, Observation
from dualtune.core.engine.step import SCHEMES, PrimalDualStep
from dualtune.core.tasks import load_task
from dualtune.core.tasks.base import Split, Task
from tests.core.engine.conftest import make_trial

FAIRLEARN_RATES = {
    "positive": selection_rate,
    "true_positive": true_positive_rate,
    "false_positive": false_positive_rate,
    "error": zero_one_loss,
}


def moons() -> Task:
    return load_task("two_moons", {})


def random_split(seed: int, n: int = 400, groups: int = 3) -> tuple[Split, torch.Tensor]:
    """A split with imbalanced groups and two-class logits for it."""
    rng = np.random.default_rng(seed)
    codes = rng.choice(
        groups, size=n, p=np.linspace(1, 2, groups) / np.linspace(1, 2, groups).sum()
    )
    y = rng.integers(0, 2, size=n)
    logits = torch.tensor(rng.normal(size=(n, 2)) + 0.8 * y[:, None] * np.array([-1, 1]))
    split = Split(torch.zeros(n, 2), torch.tensor(y), {"a": torch.tensor(codes)})
    return split, logits


def kind(
    rates: tuple[Any, ...], *, equality: bool = True, proxy: bool = True, groups: int = 3
) -> GroupRate:
    return GroupRate(
        "a", groups, rates=rates, equality=equality, temperature=8.0, tolerance=0.0, proxy=proxy
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("rate", list(FAIRLEARN_RATES))
def test_each_rates_constraints_are_fairlearns_group_rates_minus_its_overall_rate(
    rate: str, seed: int
) -> None:
    split, logits = random_split(seed)
    predictions = logits.argmax(-1).numpy()
    frame = MetricFrame(
        metrics=FAIRLEARN_RATES[rate],
        y_true=split.y.numpy(),
        y_pred=predictions,
        sensitive_features=split.groups["a"].numpy(),
    )
    expected = frame.by_group.to_numpy() - frame.overall
    for equality in (True, False):
        values = kind((rate,), equality=equality).evaluate(moons(), None, logits, split)  # type: ignore[arg-type]
        want = expected if equality else np.concatenate([expected, -expected])
        np.testing.assert_allclose(values.numpy(), want, atol=1e-12)


def test_equalized_odds_is_the_true_then_the_false_positive_rate_blocks() -> None:
    split, logits = random_split(3)
    predictions = logits.argmax(-1).numpy()
    blocks = []
    for metric in (true_positive_rate, false_positive_rate):
        frame = MetricFrame(
            metrics=metric,
            y_true=split.y.numpy(),
            y_pred=predictions,
            sensitive_features=split.groups["a"].numpy(),
        )
        blocks.append(frame.by_group.to_numpy() - frame.overall)
    eo = kind(("true_positive", "false_positive"))
    assert eo.num_constraints() == 6
    np.testing.assert_allclose(
        eo.evaluate(moons(), None, logits, split).numpy(),  # type: ignore[arg-type]
        np.concatenate(blocks),
        atol=1e-12,
    )
    config = make_trial(
        "fl",
        task={"name": "adult"},
        constraint={"kind": "equalized_odds", "attribute": "sex"},
        grid={"epsilon": 0.01, "dual_lr": 0.1},
    )
    task = load_task("adult", {})
    data = task.load()
    built = build_constraint_kind(config, data, task.make_model(data), task=task)
    assert isinstance(built, GroupRate)
    assert built.rates == ("true_positive", "false_positive")
    assert built.num_constraints() == 8  # |·| ≤ ε: two inequalities per group and rate


def batch_of(split: Split, rows: np.ndarray) -> Batch:
    index = torch.tensor(rows)
    return Batch(
        split.x[index], split.y[index], index, {k: v[index] for k, v in split.groups.items()}
    )


@pytest.mark.parametrize("equality", [True, False])
def test_a_batch_without_a_group_or_its_positives_observes_none_of_its_constraints(
    equality: bool,
) -> None:
    split, logits = random_split(4)
    codes, y = split.groups["a"].numpy(), split.y.numpy()
    # group 2 absent; group 1 present but without a sample labelled 1
    rows = np.flatnonzero((codes == 0) | ((codes == 1) & (y == 0)))
    batch = batch_of(split, rows)
    out = logits[torch.tensor(rows)].requires_grad_()
    for rates, defined in (
        (("positive",), [0, 1]),
        (("true_positive",), [0]),
        (("false_positive",), [0, 1]),
        (("true_positive", "false_positive"), [0, 3, 4]),
    ):
        k = kind(rates, equality=equality)
        observed = k.observe(moons(), None, out, batch)  # type: ignore[arg-type]
        blocks = 3 * len(rates)
        want = defined if equality else [*defined, *(d + blocks for d in defined)]
        assert observed.index is not None
        assert observed.index.tolist() == want
        assert torch.isfinite(observed.values).all()
        assert observed.dual_values is not None
        assert torch.isfinite(observed.dual_values).all()
        # observed on a batch, the gaps are the batch's hard rates minus its overall rate
        full = kind(rates, equality=equality).evaluate(
            moons(), None, out.detach(), Split(batch.x, batch.y, batch.groups)
        )  # type: ignore[arg-type]
        assert observed.dual_values.numel() == full.numel()
    empty = batch_of(split, np.flatnonzero(y == 0))
    observed = kind(("true_positive",)).observe(moons(), None, logits[empty.index], empty)  # type: ignore[arg-type]
    assert observed.index is not None
    assert observed.index.numel() == 0


def test_proxy_constraints_carry_the_hard_gaps_next_to_the_surrogates() -> None:
    split, logits = random_split(5, groups=2)
    batch = batch_of(split, np.arange(split.n))
    out = logits.clone().requires_grad_()
    task = moons()
    proxy = kind(("positive",), groups=2).observe(task, None, out, batch)  # type: ignore[arg-type]
    plain = kind(("positive",), groups=2, proxy=False).observe(task, None, out, batch)  # type: ignore[arg-type]
    assert plain.dual_values is None
    assert torch.equal(proxy.values, plain.values)  # the primal side is the surrogate either way
    assert proxy.values.requires_grad
    assert proxy.dual_values is not None
    assert not proxy.dual_values.requires_grad
    hard = kind(("positive",), groups=2).evaluate(task, None, logits, split)  # type: ignore[arg-type]
    assert torch.equal(proxy.dual_values, hard)
    assert not torch.allclose(proxy.values.detach(), hard)  # σ(8(p − ½)) is not the decision


class _Toy(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.theta = torch.nn.Parameter(torch.tensor(0.5))


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("method", ["fl", "alm"])
def test_the_dual_step_ascends_on_the_hard_values_and_the_primal_on_the_surrogate(
    scheme: str, method: str
) -> None:
    """g̃(θ) = (θ, −θ) drives the primal step; the hard values (0.3, −0.2) the dual one."""
    toy = _Toy()
    hard = torch.tensor([0.3, -0.2], dtype=torch.float64)
    eps = 0.1

    def observe() -> Observation:
        soft = torch.stack([toy.theta, -toy.theta]).double()
        return Observation(
            torch.zeros((), dtype=torch.float64),
            torch.zeros((), dtype=torch.float64),
            ConstraintBatch(soft, None, hard),
        )

    rho = 2.0
    m = FL(epsilon=eps) if method == "fl" else ALM(rho=rho, epsilon=eps)
    multipliers = Multipliers(2, dtype=torch.float64)
    step = PrimalDualStep(
        m,
        torch.optim.SGD(toy.parameters(), lr=1.0),
        multipliers,
        GradientAscent(lr=0.5),
        scheme,  # type: ignore[arg-type]
    )
    step(observe)
    scale = 1.0 if method == "fl" else rho
    expected = torch.clamp(0.5 * scale * (hard - eps), min=0.0)
    assert torch.allclose(multipliers.value, expected)

    # The primal gradient is that of the surrogate's Lagrangian: with λ from before the
    # step (simultaneous, primal first: 0) or after it (dual first); extragradient's is taken
    # at the extrapolated point (θ_½, λ_½ = the expected λ) and applied from θ_0 = 0.5.
    def gradient(theta: float, lam: torch.Tensor) -> float:
        d = torch.tensor([theta - eps, -theta - eps], dtype=torch.float64)
        slope = lam if method == "fl" else torch.clamp(lam + rho * d, min=0.0)
        return float(slope[0] - slope[1])

    zero = torch.zeros(2, dtype=torch.float64)
    if scheme == "extragradient":
        grad = gradient(0.5 - gradient(0.5, zero), expected)
    else:
        grad = gradient(0.5, expected if scheme == "alternating_dual_first" else zero)
    assert float(toy.theta.detach()) == pytest.approx(0.5 - grad)


def test_bounded_group_loss_is_each_groups_mean_loss() -> None:
    split, logits = random_split(6, groups=4)
    task = moons()
    losses = task.per_sample_loss(logits, split.y).numpy()
    codes = split.groups["a"].numpy()
    want = pd.Series(losses).groupby(codes).mean().to_numpy()
    bgl = BoundedGroupLoss("a", 4)
    np.testing.assert_allclose(bgl.evaluate(task, None, logits, split).numpy(), want, rtol=1e-12)  # type: ignore[arg-type]
    rows = np.flatnonzero(codes != 2)
    observed = bgl.observe(task, None, logits[torch.tensor(rows)], batch_of(split, rows))  # type: ignore[arg-type]
    assert observed.index is not None
    assert observed.index.tolist() == [0, 1, 3]
    assert observed.dual_values is None  # losses are differentiable: nothing to proxy


def test_a_trial_reports_the_group_metrics_of_the_constraints_attribute() -> None:
    """Adult's first attribute is sex; a constraint on race reports race's gaps."""
    train = {"epochs": 1, "batch_size": 8192, "optimizer": {"name": "adam", "lr": 0.01}}
    for attribute in ("race", "sex"):
        result = fit(
            make_trial(
                "fl",
                task={"name": "adult"},
                constraint={"kind": "bounded_group_loss", "attribute": attribute},
                grid={"epsilon": 0.5, "dual_lr": 0.1},
                train=train,
            )
        )
        codes = result.per_sample[f"val_group_{attribute}"]
        assert result.final["val/group_loss_max"] == pytest.approx(
            pd.Series(result.per_sample["val_loss"]).groupby(codes).mean().max(), rel=1e-6
        )
