"""Tail metrics against independent computations (numpy, the Rockafellar–Uryasev program,
pandas group-bys)."""

import numpy as np
import pandas as pd
import pytest
import torch

from dualtune.core.metrics.tail import (
    cvar,
    dp_gap,
    feasible_share,
    loss_summary,
    multiplier_stats,
    quantile,
    to_floats,
    violation,
)


def rockafellar_uryasev(losses: np.ndarray, beta: float) -> float:
    """min_t t + E[ℓ − t]₊ / β: piecewise linear and convex in t, so the minimum is at a
    sample value; evaluate every one."""
    t = losses[:, None]
    return float(np.min(t[:, 0] + np.maximum(losses[None, :] - t, 0).mean(axis=1) / beta))


@pytest.mark.parametrize("n", [1, 7, 50, 333, 1000])
@pytest.mark.parametrize("beta", [0.01, 0.05, 0.1, 0.37, 1.0])
def test_cvar_is_the_rockafellar_uryasev_minimum(n: int, beta: float) -> None:
    losses = np.random.default_rng(n).exponential(size=n)
    expected = rockafellar_uryasev(losses, beta)
    assert float(cvar(torch.tensor(losses), beta)) == pytest.approx(expected, rel=1e-9)
    summary = loss_summary(torch.tensor(losses), "train")
    if beta in (0.01, 0.05, 0.1):
        assert float(summary[f"train/cvar_{beta:g}"]) == pytest.approx(expected, rel=1e-9)


def test_cvar_at_one_is_the_mean_and_tends_to_the_max() -> None:
    losses = torch.tensor([3.0, 1.0, 2.0, 10.0])
    assert float(cvar(losses, 1.0)) == pytest.approx(4.0)
    assert float(cvar(losses, 0.01)) == pytest.approx(10.0)


@pytest.mark.parametrize("q", [0.0, 0.5, 0.9, 0.99, 1.0])
def test_quantiles_match_numpy(q: float) -> None:
    losses = np.random.default_rng(0).normal(size=1001)
    assert float(quantile(torch.tensor(losses), q)) == pytest.approx(np.quantile(losses, q))


def test_loss_summary_names_and_values() -> None:
    losses = np.random.default_rng(1).gamma(2.0, size=500)
    got = to_floats(loss_summary(torch.tensor(losses), "val"))
    assert got == pytest.approx(
        {
            "val/loss_mean": losses.mean(),
            "val/loss_max": losses.max(),
            "val/loss_q50": np.quantile(losses, 0.5),
            "val/loss_q90": np.quantile(losses, 0.9),
            "val/loss_q99": np.quantile(losses, 0.99),
            "val/cvar_0.01": rockafellar_uryasev(losses, 0.01),
            "val/cvar_0.05": rockafellar_uryasev(losses, 0.05),
            "val/cvar_0.1": rockafellar_uryasev(losses, 0.1),
        }
    )


def test_violation_and_feasible_share() -> None:
    v = torch.tensor([0.1, 0.3, 0.5, 0.2])
    assert violation(v, 0.25).tolist() == pytest.approx([0.0, 0.05, 0.25, 0.0])
    assert violation(v, 0.25, equality=True).tolist() == pytest.approx([0.15, 0.05, 0.25, 0.05])
    assert float(feasible_share(v, 0.25)) == 0.5
    assert float(feasible_share(v, 0.25, equality=True, tolerance=0.06)) == 0.5


def test_dp_gap_matches_a_pandas_group_by() -> None:
    rng = np.random.default_rng(2)
    groups = rng.integers(0, 4, size=10_000)
    positive = rng.random(10_000) < np.array([0.2, 0.35, 0.5, 0.3])[groups]
    rates = pd.Series(positive).groupby(groups).mean()
    got = float(dp_gap(torch.tensor(positive), torch.tensor(groups), 5))  # group 4 is empty
    assert got == pytest.approx(rates.max() - rates.min(), abs=1e-12, rel=0)  # float64


def test_multiplier_statistics() -> None:
    stats = to_floats(multiplier_stats(torch.tensor([0.0, 0.0, 1.0, 3.0])))
    assert stats == {"lambda_mean": 1.0, "lambda_max": 3.0, "lambda_active_frac": 0.5}


def test_a_million_losses_are_summarised_without_a_python_loop() -> None:
    losses = torch.rand(1_000_000, generator=torch.Generator().manual_seed(0))
    got = to_floats(loss_summary(losses, "train"))
    assert got["train/loss_max"] <= 1.0
    assert got["train/cvar_0.01"] == pytest.approx(0.995, abs=1e-3)  # uniform: mean of top 1%
    assert got["train/loss_q50"] == pytest.approx(0.5, abs=2e-3)
