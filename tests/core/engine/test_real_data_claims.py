"""The papers' headline claims on real data, at budgets CI can afford (minutes on 2 cores).

Each test asserts what holds at its budget; where a claim does not hold here, the comment
gives the measured numbers, and ``docs/results.md`` (``make reproduce``) has the larger runs.

* S5 (Feasible Learning): FL and RFL lower the train CVaR₀.₁ and the largest train loss
  against ERM on Fashion-MNIST.
* S6 (statistical equality constraints): one equality constraint per group on Adult reaches a
  train dp_gap ≤ 0.01 with accuracy within 3 points of ERM, with the default surrogate and
  proxy constraints; equalized odds on Adult (eo_gap ≤ 0.02) and demographic parity over
  COMPAS's four race groups (dp_gap ≤ 0.02) under alm, and under fl with the extragradient
  scheme.
* S7 (SAL): on orthogonality constraints SAL ends far less violated than a penalty weak
  enough to keep ERM's accuracy, and more accurate than a penalty strong enough to be
  feasible.
"""

from typing import Any

import pytest

from dualtune.core.engine.fit import fit
from tests.core.engine.conftest import make_trial
from tests.core.tasks.fixtures import require_fashion_mnist

pytestmark = pytest.mark.slow

FASHION = {"name": "fashion_mnist", "params": {"n_train": 10_000, "n_val": 2_000, "hidden": [256]}}
ADAM = {"name": "adam", "lr": 1e-3}


def final(method: str, **kwargs: Any) -> dict[str, float]:
    return fit(make_trial(method, **kwargs)).final


def test_s5_feasible_learning_lowers_the_loss_tail_against_erm() -> None:
    require_fashion_mnist()
    train = {"epochs": 10, "batch_size": 128, "optimizer": ADAM}
    erm = final("erm", task=FASHION, train=train)
    grid = {"epsilon": 0.2, "dual_lr": 1e-3}
    fl = final("fl", task=FASHION, train=train, grid=grid)
    rfl = final("rfl", task=FASHION, train=train, grid={**grid, "alpha": 1.0})
    # Measured on this budget: ERM CVaR₀.₁ 1.49, max 9.87, mean 0.211; FL 1.27, 4.37, 0.262;
    # RFL 1.30, 5.41, 0.275. The mean is ~25 % above ERM's here (FL stops pushing samples
    # already below ε), so "mean within a few per cent" does not hold at this budget;
    # docs/results.md has the full-data runs.
    for constrained in (fl, rfl):
        assert constrained["train/cvar_0.1"] < 0.95 * erm["train/cvar_0.1"]
        assert constrained["train/loss_max"] < 0.8 * erm["train/loss_max"]
        assert constrained["train/feasible_frac"] > 0.5


FULL_BATCH = {  # as in the paper: one step per epoch
    "epochs": 500,
    "eval_every": 500,
    "batch_size": 50_000,
    "optimizer": {"name": "adam", "lr": 0.01},
}
ADULT = {"name": "adult", "params": {"model": "logistic"}}


@pytest.mark.parametrize(
    ("method", "grid"), [("fl", {"dual_lr": 0.1}), ("alm", {"rho": 1.0, "dual_lr": 0.1})]
)
def test_s6_demographic_parity_equality_constraints_on_adult(
    method: str, grid: dict[str, float]
) -> None:
    """With the defaults (τ = 8, proxy constraints) the hard gap closes. Without proxy
    constraints the multipliers ascend on the soft rates, and the hard gap the metric counts
    stalls at ≈ 0.016 (measured, 500 and 2 000 full-batch steps)."""
    constraint = {"kind": "group_rate", "attribute": "sex", "equality": True}
    erm = final("erm", task=ADULT, train=FULL_BATCH, constraint=constraint)
    constrained = final(method, task=ADULT, train=FULL_BATCH, constraint=constraint, grid=grid)
    assert erm["train/dp_gap"] > 0.15  # the unconstrained model is far from parity
    # measured: fl and alm 0.0002 at val accuracy 0.830 (ERM 0.853)
    assert constrained["train/dp_gap"] <= 0.01
    assert constrained["val/accuracy"] >= erm["val/accuracy"] - 0.03


def test_equalized_odds_on_adult() -> None:
    """GDA (fl) on these equalities oscillates (no damping: measured train eo_gap 0.14 at
    dual_lr 0.1, 0.05 at 0.01 after 500 steps); ALM's ρ/2‖h‖² damps it."""
    constraint = {"kind": "equalized_odds", "attribute": "sex", "equality": True}
    erm = final("erm", task=ADULT, train=FULL_BATCH, constraint=constraint)
    alm = final(
        "alm",
        task=ADULT,
        train=FULL_BATCH,
        constraint=constraint,
        grid={"rho": 10.0, "dual_lr": 0.01},
    )
    assert erm["train/eo_gap"] > 0.08
    assert alm["train/eo_gap"] <= 0.02  # measured 0.003 at val accuracy 0.836 (ERM 0.853)
    assert alm["val/accuracy"] >= erm["val/accuracy"] - 0.03


def compas_race_parity(method: str, **kwargs: Any) -> dict[str, float]:
    """One equality constraint per race group on COMPAS (logistic, full batch)."""
    return final(
        method,
        task={"name": "compas", "params": {"model": "logistic"}},
        train=FULL_BATCH,
        constraint={"kind": "group_rate", "attribute": "race", "equality": True},
        **kwargs,
    )


def test_demographic_parity_across_four_race_groups_on_compas() -> None:
    """With ρ = 1 and dual_lr 0.1 the hard gap swings between 0.01 and 0.16 from one
    evaluation to the next (Adam moves the boundary by a fixed step while λ is small); a
    larger penalty with a smaller dual step settles it."""
    erm = compas_race_parity("erm")
    alm = compas_race_parity("alm", grid={"rho": 50.0, "dual_lr": 0.01})
    assert erm["train/dp_gap"] > 0.2
    assert alm["train/dp_gap"] <= 0.02
    assert alm["val/accuracy"] >= erm["val/accuracy"] - 0.03


def test_extragradient_settles_fl_across_compas_race_groups() -> None:
    """Plain GDA (``fl``, alternating) on these equalities cycles: at dual_lr 0.01 the train
    dp_gap swings between 0.10 and 0.46 over 500 full-batch steps and ends at 0.32 (0.035 at
    dual_lr 0.005). The extragradient scheme takes each step from a look-ahead point, which
    damps the cycle: measured 0.016, flat over the last 200 steps, at val accuracy 0.676
    (ERM 0.680)."""
    erm = compas_race_parity("erm")
    fl = compas_race_parity("fl", grid={"dual_lr": 0.01}, dual={"scheme": "extragradient"})
    assert fl["train/dp_gap"] <= 0.02
    assert fl["val/accuracy"] >= erm["val/accuracy"] - 0.03


def test_s7_sal_against_fixed_penalties_on_orthogonality() -> None:
    require_fashion_mnist()
    train = {"epochs": 10, "batch_size": 128, "optimizer": ADAM}
    constraint = {"kind": "orthogonality"}
    weak, strong = (
        final(
            "penalty",
            task=FASHION,
            train=train,
            constraint=constraint,
            grid={"epsilon": 1.0, "penalty": c},
        )
        for c in (0.01, 0.1)
    )
    sal = final(
        "sal",
        task=FASHION,
        train=train,
        constraint=constraint,
        grid={"epsilon": 1.0, "rho": 0.01, "rho_growth": 1.05, "rho_max": 10.0},
    )
    # Measured: weak penalty violation 7.25, val accuracy 84.8 %; strong penalty 0, 82.4 %;
    # SAL 0.016, 84.1 %. SAL is not dominated by either; against the weak penalty its
    # accuracy is 0.7 points lower (2 000 val images: about one standard error), so "no lower
    # accuracy" holds only within noise.
    assert sal["constraint/violation_max"] < 0.01 * weak["constraint/violation_max"]
    assert sal["val/accuracy"] > strong["val/accuracy"]
