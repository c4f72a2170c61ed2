"""Peer check against Cooper (``cooper-optim``): the same Feasible Learning problem, stepped
by Cooper's IndexedMultiplier + AlternatingDualPrimalOptimizer with an SGD dual and by our
engine, gives the same multipliers and parameters after 50 mini-batch steps."""

import copy

import cooper
import pytest
import torch
from sklearn.datasets import make_moons
from torch import nn
from torch.nn import functional as F

from dualtune.core.engine.dual_optimizers import GradientAscent
from dualtune.core.engine.methods import FL
from dualtune.core.engine.multipliers import Multipliers
from dualtune.core.engine.observation import ConstraintBatch, Observation
from dualtune.core.engine.step import PrimalDualStep

EPSILON, DUAL_LR, PRIMAL_LR, STEPS, BATCH = 0.3, 0.05, 0.1, 50, 32


class FeasibleLearning(cooper.ConstrainedMinimizationProblem):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.constraint = cooper.Constraint(
            constraint_type=cooper.ConstraintType.INEQUALITY,
            multiplier=cooper.multipliers.IndexedMultiplier(num_constraints=n),
        )

    def compute_cmp_state(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor
    ) -> cooper.CMPState:
        losses = F.cross_entropy(model(x), y, reduction="none")
        state = cooper.ConstraintState(violation=losses - EPSILON, constraint_features=idx)
        return cooper.CMPState(loss=None, observed_constraints={self.constraint: state})


@pytest.fixture
def problem() -> tuple[torch.Tensor, torch.Tensor, nn.Module, list[torch.Tensor]]:
    X, y = make_moons(256, noise=0.1, random_state=0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 2))
    g = torch.Generator().manual_seed(1)
    order = torch.cat([torch.randperm(256, generator=g) for _ in range(7)])
    batches = [order[i * BATCH : (i + 1) * BATCH] for i in range(STEPS)]
    return torch.tensor(X, dtype=torch.float32), torch.tensor(y), model, batches


def test_engine_matches_cooper_after_50_steps(
    problem: tuple[torch.Tensor, torch.Tensor, nn.Module, list[torch.Tensor]],
) -> None:
    X, y, model, batches = problem
    theirs, ours = copy.deepcopy(model), copy.deepcopy(model)

    cmp = FeasibleLearning(X.shape[0])
    optimizer = cooper.optim.AlternatingDualPrimalOptimizer(
        cmp=cmp,
        primal_optimizers=torch.optim.SGD(theirs.parameters(), lr=PRIMAL_LR),
        dual_optimizers=torch.optim.SGD(
            cmp.dual_parameters(), lr=DUAL_LR, maximize=True, foreach=False
        ),
    )
    for idx in batches:
        optimizer.roll(
            compute_cmp_state_kwargs={"model": theirs, "x": X[idx], "y": y[idx], "idx": idx}
        )

    lam = Multipliers(X.shape[0])
    step = PrimalDualStep(
        FL(epsilon=EPSILON),
        torch.optim.SGD(ours.parameters(), lr=PRIMAL_LR),
        lam,
        GradientAscent(DUAL_LR),
    )
    for idx in batches:

        def observe(idx: torch.Tensor = idx) -> Observation:
            losses = F.cross_entropy(ours(X[idx]), y[idx], reduction="none")
            return Observation(losses.new_zeros(()), losses.mean(), ConstraintBatch(losses, idx))

        step(observe)

    cooper_lambda = cmp.constraint.multiplier.weight.detach().flatten()
    assert (cooper_lambda > 0).sum() > 20  # the check is not vacuous
    assert torch.allclose(lam.value, cooper_lambda, atol=1e-6, rtol=0)
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6, rtol=0)
