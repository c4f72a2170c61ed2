"""Dual optimism is ALM in disguise (Ramirez et al. 2025), on the nonconvex equality toy.

min x0⁴ − 3x0² + x1²  s.t.  h(x) = x0 + x1³ − 1 = 0, in float64. Dual-first νPI with ν = 0
and η·K_P = c must reproduce primal-first ALM-GDA with penalty c, iterate by iterate. The
two runs share only the engine's step; the initial multiplier of ALM is matched as in the
paper's derivation: μ₀ = η_μ h(x₀) (νPI's first step is η_μ h₀ + c h₀ from μ̃₀ = 0).
"""

import torch

from dualtune.core.engine.dual_optimizers import GradientAscent, NuPI
from dualtune.core.engine.methods import ALM, FL
from dualtune.core.engine.multipliers import Multipliers
from dualtune.core.engine.observation import ConstraintBatch, Observation
from dualtune.core.engine.step import PrimalDualStep

F64 = torch.float64
X0 = [0.5, 0.5]
LR_X, LR_MU, C = 0.01, 0.5, 2.0


def objective(x: torch.Tensor) -> torch.Tensor:
    return x[0] ** 4 - 3 * x[0] ** 2 + x[1] ** 2


def h(x: torch.Tensor) -> torch.Tensor:
    return (x[0] + x[1] ** 3 - 1).reshape(1)


def observe_at(x: torch.Tensor) -> Observation:
    f = objective(x)
    return Observation(f, f, ConstraintBatch(h(x)))


def run(kind: str, steps: int = 2000, omega: float = C) -> torch.Tensor:
    x = torch.tensor(X0, dtype=F64, requires_grad=True)
    primal = torch.optim.SGD([x], lr=LR_X)
    lam = Multipliers(1, equality=True, dtype=F64)
    if kind == "nupi":
        step = PrimalDualStep(
            FL(equality=True),
            primal,
            lam,
            NuPI(LR_MU, 1, kp=omega / LR_MU, ki=1.0, nu=0.0, init="zeros", dtype=F64),
            "alternating_dual_first",
        )
    else:
        with torch.no_grad():
            lam.value.copy_(LR_MU * h(x))
        step = PrimalDualStep(
            ALM(rho=C, equality=True),
            primal,
            lam,
            GradientAscent(LR_MU / C),
            "alternating_primal_first",
        )
    trajectory = []
    for _ in range(steps):
        step(lambda: observe_at(x))
        trajectory.append(x.detach().clone())
    return torch.stack(trajectory)


def test_optimistic_nupi_reproduces_alm_gda_iterates() -> None:
    nupi, alm = run("nupi"), run("alm")
    assert torch.max(torch.abs(nupi - alm)).item() < 1e-10
    # Both reach the constrained minimiser x = (1, 0).
    assert torch.allclose(alm[-1], torch.tensor([1.0, 0.0], dtype=F64), atol=1e-6)


def test_a_different_optimism_gives_a_different_trajectory() -> None:
    assert torch.max(torch.abs(run("nupi", 200, omega=0.5 * C) - run("alm", 200))).item() > 1e-4
