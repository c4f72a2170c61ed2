"""Convex ground truth: min ‖x‖² s.t. Ax ≤ b (or Cx = d) against cvxpy's KKT solution.

As Cooper's convergence suite: A random with singular values in [1.5, 2.5]; the engine's
``fl`` (GDA) and ``alm`` (method of multipliers, at several ρ, with and without its ρ
schedule) must reach cvxpy's x* and λ* within 1e-4 under every scheme. A fixed point does
not see the dual step's scale, so ALM's iterates are also checked against the textbook
updates written out in numpy (which fails with the ρ scaling or the update order changed).
"""

from collections.abc import Callable

import cvxpy as cp
import numpy as np
import pytest
import torch

from dualtune.core.engine.dual_optimizers import GradientAscent
from dualtune.core.engine.methods import ALM, FL, Method
from dualtune.core.engine.multipliers import Multipliers
from dualtune.core.engine.observation import ConstraintBatch, Observation
from dualtune.core.engine.step import SCHEMES, PrimalDualStep

F64 = torch.float64
N, M = 10, 5


def well_conditioned(m: int, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.standard_normal((m, m)))
    v, _ = np.linalg.qr(rng.standard_normal((n, n)))
    s = rng.uniform(1.5, 2.5, size=m)
    return (u * s) @ v[:m]


def cvxpy_solution(A: np.ndarray, b: np.ndarray, equality: bool) -> tuple[np.ndarray, np.ndarray]:
    x = cp.Variable(A.shape[1])
    constraint = A @ x == b if equality else A @ x <= b
    cp.Problem(cp.Minimize(cp.sum_squares(x)), [constraint]).solve(solver=cp.CLARABEL)
    assert x.value is not None
    return np.asarray(x.value), np.asarray(constraint.dual_value)


def engine_solution(
    method: Method,
    A: np.ndarray,
    b: np.ndarray,
    *,
    steps: int,
    lr: float,
    dual_lr: float,
    scheme: str,
) -> tuple[np.ndarray, np.ndarray]:
    At, bt = torch.tensor(A, dtype=F64), torch.tensor(b, dtype=F64)
    x = torch.zeros(A.shape[1], dtype=F64, requires_grad=True)
    lam = Multipliers(A.shape[0], equality=method.equality, dtype=F64)
    step = PrimalDualStep(
        method, torch.optim.SGD([x], lr=lr), lam, GradientAscent(dual_lr), scheme
    )  # type: ignore[arg-type]
    observe: Callable[[], Observation] = lambda: Observation(  # noqa: E731
        x.pow(2).sum(), x.pow(2).sum(), ConstraintBatch(At @ x - bt)
    )
    for _ in range(steps):
        step(observe)
    return x.detach().numpy(), lam.value.numpy()


ALM_CASES = [
    *((3.0, 0.2, 1.0, scheme) for scheme in SCHEMES),
    *(
        (rho, dual_lr, growth, scheme)
        for rho, dual_lr, growth in ((0.3, 1.0, 1.0), (0.3, 1.0, 1.02))
        for scheme in ("alternating_dual_first", "alternating_primal_first")
    ),
]
"""ρ = 3 under every scheme; a small ρ, fixed and growing, under both alternating orders."""


@pytest.mark.parametrize("equality", [False, True], ids=["Ax<=b", "Cx=d"])
@pytest.mark.parametrize(("rho", "dual_lr", "growth", "scheme"), ALM_CASES)
def test_alm_reaches_cvxpy_solution_at_every_penalty_and_scheme(
    equality: bool, rho: float, dual_lr: float, growth: float, scheme: str
) -> None:
    A = well_conditioned(M, N, 0)
    b = -np.random.default_rng(100).uniform(0.5, 1.5, size=M)
    x_star, lam_star = cvxpy_solution(A, b, equality)
    alm = ALM(rho=rho, rho_growth=growth, rho_max=3.0, size=M, equality=equality)
    x, lam = engine_solution(alm, A, b, steps=3000, lr=0.03, dual_lr=dual_lr, scheme=scheme)
    assert np.max(np.abs(x - x_star)) < 1e-4
    assert np.max(np.abs(lam - lam_star)) < 1e-4
    if growth > 1:
        assert float(alm.schedule.rho.max()) > rho  # the schedule did grow ρ


def textbook_alm(
    A: np.ndarray, b: np.ndarray, rho: float, lr: float, dual_lr: float, steps: int
) -> tuple[np.ndarray, np.ndarray]:
    """ALM-GDA on min ‖x‖² s.t. Ax ≤ b, dual first, from the formulas: λ ← [λ + η ρ d]₊ with
    d = Ax − b, then x ← x − lr (2x + Aᵀ[λ + ρ d]₊) (the gradient of
    ‖x‖² + (1/(2ρ))Σ([λ + ρ d]₊² − λ²))."""
    x, lam = np.zeros(A.shape[1]), np.zeros(A.shape[0])
    for _ in range(steps):
        d = A @ x - b
        lam = np.maximum(lam + dual_lr * rho * d, 0.0)
        x = x - lr * (2 * x + A.T @ np.maximum(lam + rho * d, 0.0))
    return x, lam


def test_alm_iterates_are_the_textbook_updates() -> None:
    A = well_conditioned(M, N, 3)
    b = -np.random.default_rng(3).uniform(0.5, 1.5, size=M)
    steps, rho, lr, dual_lr = 40, 3.0, 0.03, 0.2
    ours = engine_solution(
        ALM(rho=rho), A, b, steps=steps, lr=lr, dual_lr=dual_lr, scheme="alternating_dual_first"
    )
    reference = textbook_alm(A, b, rho, lr, dual_lr, steps)
    for got, want in zip(ours, reference, strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert not np.allclose(reference[1], textbook_alm(A, b, 1.0, lr, dual_lr, steps)[1])


@pytest.mark.parametrize("equality", [False, True], ids=["Ax<=b", "Cx=d"])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(
    ("method", "dual_lr", "scheme"),
    [
        ("fl", 0.2, "simultaneous"),
        ("fl", 0.2, "alternating_dual_first"),
        ("fl", 0.2, "alternating_primal_first"),
        ("fl", 0.2, "extragradient"),
    ],
)
def test_reaches_cvxpy_solution(
    equality: bool, seed: int, method: str, dual_lr: float, scheme: str
) -> None:
    A = well_conditioned(M, N, seed)
    rng = np.random.default_rng(100 + seed)
    # Negative right-hand sides make x = 0 infeasible, so constraints are active.
    b = -rng.uniform(0.5, 1.5, size=M)
    x_star, lam_star = cvxpy_solution(A, b, equality)
    algorithm = FL(equality=equality)
    x, lam = engine_solution(algorithm, A, b, steps=3000, lr=0.03, dual_lr=dual_lr, scheme=scheme)
    assert np.max(np.abs(x - x_star)) < 1e-4
    assert np.max(np.abs(lam - lam_star)) < 1e-4


def test_inequality_problem_has_inactive_constraints_too() -> None:
    """A mixed instance (some b_j > 0 slack) checks that projection keeps λ_j = 0 exactly."""
    A = well_conditioned(M, N, 7)
    b = np.array([-1.0, 3.0, -0.7, 4.0, -1.2])
    x_star, lam_star = cvxpy_solution(A, b, equality=False)
    assert np.sum(lam_star < 1e-8) >= 1
    x, lam = engine_solution(
        FL(), A, b, steps=3000, lr=0.03, dual_lr=0.2, scheme="alternating_dual_first"
    )
    assert np.max(np.abs(x - x_star)) < 1e-4
    assert np.max(np.abs(lam - lam_star)) < 1e-4
    assert np.all(lam[lam_star < 1e-8] == 0.0)
