"""The papers' checkable claims on the engine, each against an independent truth.

* RFL fixed point (Feasible Learning, two-moons, full batch): λ_i → α[ℓ_i − ε]₊.
* Hard-margin SVM on Iris (νPI paper): per-sample multipliers → sklearn SVC(C=1e8)'s dual
  coefficients; νPI with K_P > 0 damps the oscillation that plain ascent shows.
"""

import numpy as np
import pytest
from sklearn.svm import SVC

from dualtune.core.engine.trainer import Trainer
from tests.core.engine.conftest import make_trial


@pytest.mark.slow
def test_rfl_multipliers_reach_their_fixed_point_alpha_times_excess_loss() -> None:
    alpha, epsilon = 2.0, 0.05
    config = make_trial(
        "rfl",
        # η/α = 0.5: the dual contracts fast enough to follow the slowly moving losses.
        grid={"epsilon": epsilon, "alpha": alpha, "dual_lr": 1.0},
        train={
            "epochs": 800,
            "batch_size": 512,
            "eval_every": 800,
            # Full batch, small steps: the primal settles (Adam's constant steps do not).
            "optimizer": {"name": "sgd", "lr": 3e-4, "momentum": 0.9},
        },
    )
    trainer = Trainer(config)
    for _ in range(config.train.epochs):
        trainer.train_epoch()
    trainer.evaluate()
    per_sample = trainer.per_sample()
    target = alpha * np.clip(per_sample["train_loss"] - epsilon, 0, None)
    lam = per_sample["multiplier"]
    assert (target > 0).sum() > 10  # many constraints are active: the check has teeth
    assert np.max(np.abs(lam - target)) < 1e-3 * max(1.0, target.max())


def svm_truth(trainer: Trainer) -> np.ndarray:
    x = trainer.data.train.x.cpu().numpy().astype(np.float64)
    y = trainer.data.train.y.cpu().numpy()
    svc = SVC(kernel="linear", C=1e8, tol=1e-10).fit(x, y)
    alpha = np.zeros(len(y))
    alpha[svc.support_] = np.abs(svc.dual_coef_[0])
    return alpha


def run_svm(kp: float, epochs: int) -> tuple[np.ndarray, np.ndarray, list[float]]:
    config = make_trial(
        "fl",
        task={"name": "iris_svm"},
        grid={"epsilon": 0.0, "dual_lr": 0.05, **({"kp": kp} if kp else {})},
        dual={"optimizer": {"name": "nupi"}} if kp else None,
        train={
            "epochs": epochs,
            "batch_size": 1000,
            "eval_every": epochs,
            "optimizer": {"name": "sgd", "lr": 0.05},
        },
    )
    trainer = Trainer(config)
    truth = svm_truth(trainer)
    distance = []
    for _ in range(epochs):
        trainer.train_epoch()
        distance.append(float(np.linalg.norm(trainer.multipliers.value.cpu().numpy() - truth)))
    return trainer.multipliers.value.cpu().numpy(), truth, distance


@pytest.mark.slow
def test_svm_multipliers_converge_to_sklearn_dual_coefficients() -> None:
    lam, truth, _ = run_svm(kp=1.0, epochs=1500)
    support = truth > 1e-6
    assert support.sum() == 4  # setosa vs versicolor on four features: four support vectors
    assert set(np.flatnonzero(lam > 1e-3 * truth.max())) == set(np.flatnonzero(support))
    assert np.allclose(lam[support], truth[support], rtol=0.05)


def oscillation(distance: list[float]) -> float:
    """Total variation of ‖λ − λ*‖ beyond its monotone part: 0 for a monotone decrease."""
    d = np.asarray(distance)
    return float(np.abs(np.diff(d)).sum() - abs(d[-1] - d[0]))


@pytest.mark.slow
def test_nupi_damps_the_multiplier_oscillation_of_gradient_ascent() -> None:
    _, _, ga = run_svm(kp=0.0, epochs=1500)
    _, _, pi = run_svm(kp=1.0, epochs=1500)
    # Measured on this problem: ≈0.47 for ascent, ≈0.02 for νPI (kp = 1).
    assert oscillation(ga) > 0.1
    assert oscillation(pi) < 0.2 * oscillation(ga)
    assert pi[-1] < 0.01
