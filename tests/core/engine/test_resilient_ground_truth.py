"""Resilient FL against cvxpy's slack problem, under every update scheme.

RFL relaxes g(x) ≤ ε to g(x) ≤ ε + u with a slack u ≥ 0 that costs (α/2)‖u‖²:

    min_{x, u}  ‖x‖² + (α/2)‖u‖²   s.t.  Ax − b ≤ ε + u,  u ≥ 0.

Its KKT conditions give u* = λ*/α (the slack's stationarity α u − λ = 0 where u > 0, and
λ = 0 where the relaxed constraint is slack), which is why the engine's RFL eliminates u
and ascends on e = g − ε − λ/α. cvxpy solves the problem with the slack kept as a variable,
so the engine's x, λ and its implied slack λ/α are checked against an independent solution.
A as in test_convex_ground_truth.py: singular values in [1.5, 2.5].
"""

import cvxpy as cp
import numpy as np
import pytest
import torch

from dualtune.core.engine.dual_optimizers import GradientAscent
from dualtune.core.engine.methods import RFL
from dualtune.core.engine.multipliers import Multipliers
from dualtune.core.engine.observation import ConstraintBatch, Observation
from dualtune.core.engine.step import SCHEMES, PrimalDualStep
from dualtune.core.spec.sections import Scheme
from tests.core.engine.test_convex_ground_truth import well_conditioned

F64 = torch.float64
N, M = 10, 5
TOLERANCE = 1e-4


def cvxpy_slack_solution(
    A: np.ndarray, b: np.ndarray, *, epsilon: float, alpha: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x*, u* and λ* (the relaxed constraint's multiplier) of the slack problem."""
    x = cp.Variable(A.shape[1])
    u = cp.Variable(A.shape[0])
    relaxed = A @ x - b <= epsilon + u
    problem = cp.Problem(
        cp.Minimize(cp.sum_squares(x) + (alpha / 2) * cp.sum_squares(u)), [relaxed, u >= 0]
    )
    # Tight tolerances: at the default ones an interior-point solver leaves a loose
    # constraint's slack near √(gap/α) ≈ 1e-5 instead of 0.
    problem.solve(solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
    assert problem.status == cp.OPTIMAL
    assert x.value is not None
    assert u.value is not None
    return np.asarray(x.value), np.asarray(u.value), np.asarray(relaxed.dual_value)


def rfl_solution(
    A: np.ndarray,
    b: np.ndarray,
    *,
    epsilon: float,
    alpha: float,
    scheme: Scheme,
    steps: int,
    lr: float = 0.03,
    dual_lr: float = 0.2,
) -> tuple[np.ndarray, np.ndarray]:
    """x and λ after ``steps`` of the engine's RFL step on min ‖x‖² s.t. Ax − b ≤ ε."""
    At, bt = torch.tensor(A, dtype=F64), torch.tensor(b, dtype=F64)
    x = torch.zeros(A.shape[1], dtype=F64, requires_grad=True)
    lam = Multipliers(A.shape[0], dtype=F64)
    step = PrimalDualStep(
        RFL(alpha=alpha, epsilon=epsilon),
        torch.optim.SGD([x], lr=lr),
        lam,
        GradientAscent(dual_lr),
        scheme,
    )

    def observe() -> Observation:
        objective = x.pow(2).sum()
        return Observation(objective, objective, ConstraintBatch(At @ x - bt))

    for _ in range(steps):
        step(observe)
    return x.detach().numpy(), lam.value.numpy()


def problem(seed: int) -> tuple[np.ndarray, np.ndarray]:
    A = well_conditioned(M, N, seed)
    rng = np.random.default_rng(100 + seed)
    # Negative right-hand sides make x = 0 infeasible (the constraints are active, so the
    # slack is used); the last entry is loose, so one multiplier is 0 at the solution.
    b = -rng.uniform(0.5, 1.5, size=M)
    b[-1] = 4.0
    return A, b


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize(
    ("alpha", "epsilon", "seed"), [(0.5, 0.0, 0), (2.0, 0.1, 1), (10.0, 0.0, 2)]
)
def test_rfl_reaches_the_slack_problem_solution(
    scheme: Scheme, alpha: float, epsilon: float, seed: int
) -> None:
    A, b = problem(seed)
    x_star, u_star, lam_star = cvxpy_slack_solution(A, b, epsilon=epsilon, alpha=alpha)
    # The instance is one where resilience matters: slack is used and one constraint is loose.
    assert np.max(u_star) > 0.05
    assert lam_star[-1] < 1e-8
    assert np.max(np.abs(u_star - lam_star / alpha)) < 1e-6  # cvxpy's own KKT, u* = λ*/α

    x, lam = rfl_solution(A, b, epsilon=epsilon, alpha=alpha, scheme=scheme, steps=1000)
    assert np.max(np.abs(x - x_star)) < TOLERANCE
    assert np.max(np.abs(lam - lam_star)) < TOLERANCE
    assert np.max(np.abs(lam / alpha - u_star)) < TOLERANCE  # the eliminated slack
    assert lam[-1] == 0.0  # the loose constraint's multiplier is projected to 0 exactly


def test_rfl_is_not_fl_on_this_problem() -> None:
    """The slack problem's solution differs from the hard-constrained one by more than the
    tolerance, so the check above would catch an RFL that lost its −λ/α term."""
    A, b = problem(0)
    x_rfl, _, lam_rfl = cvxpy_slack_solution(A, b, epsilon=0.0, alpha=0.5)
    x = cp.Variable(N)
    hard = A @ x <= b
    cp.Problem(cp.Minimize(cp.sum_squares(x)), [hard]).solve(solver=cp.CLARABEL)
    assert np.max(np.abs(x_rfl - np.asarray(x.value))) > 100 * TOLERANCE
    assert np.max(np.abs(lam_rfl - np.asarray(hard.dual_value))) > 100 * TOLERANCE
