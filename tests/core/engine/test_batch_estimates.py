"""ALM and SAL on constraints observed as minibatch estimates (``batch_estimates``): the
penalty's slope comes from the estimate of earlier batches, so minibatch training settles
at the constrained optimum, where the batch's own estimate in the slope biases it (the
squared penalty also shrinks the estimate's variance); which trials get the estimate."""

import pytest
import torch

from dualtune.core.engine.build import build_constraint_kind, build_method
from dualtune.core.engine.dual_optimizers import GradientAscent
from dualtune.core.engine.methods import ALM, SAL, stack_methods
from dualtune.core.engine.multipliers import Multipliers
from dualtune.core.engine.observation import ConstraintBatch, Observation
from dualtune.core.engine.step import PrimalDualStep
from dualtune.core.tasks import load_task
from tests.core.engine.conftest import make_trial

THETA0 = torch.tensor([1.0, 1.0], dtype=torch.float64)
MEAN = torch.tensor([1.0, 0.0], dtype=torch.float64)
SPREAD = 4.0
"""a_i = (1, SPREAD·z_i): E[a] = (1, 0), the second coordinate is noise only."""
BATCH = 16


def optimum(epsilon: float) -> torch.Tensor:
    """argmin ½‖θ − θ₀‖² s.t. E[a]ᵀθ ≤ ε: θ₀ projected onto the half-space (closed form)."""
    excess = max(float(MEAN @ THETA0) - epsilon, 0.0)
    return THETA0 - excess / float(MEAN @ MEAN) * MEAN


def train(method: ALM | SAL, dual_lr: float, steps: int = 6000) -> torch.Tensor:
    """Minibatch primal-dual steps on E[a]ᵀθ ≤ ε observed as the batch mean of a_iᵀθ;
    returns θ averaged over the second half."""
    generator = torch.Generator().manual_seed(0)
    theta = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    step = PrimalDualStep(
        method,
        torch.optim.SGD([theta], lr=0.02),
        Multipliers(1, dtype=torch.float64),
        GradientAscent(lr=dual_lr),
    )
    total = torch.zeros(2, dtype=torch.float64)
    for t in range(steps):
        z = torch.randn(BATCH, generator=generator, dtype=torch.float64)
        a = torch.stack([torch.ones(BATCH, dtype=torch.float64), SPREAD * z], dim=1)

        def observe(a: torch.Tensor = a) -> Observation:
            objective = 0.5 * (theta - THETA0).pow(2).sum()
            estimate = (a @ theta).mean().reshape(1)
            return Observation(objective, objective, ConstraintBatch(estimate))

        step(observe)
        if t >= steps // 2:
            total += theta.detach()
    return total / (steps - steps // 2)


def test_minibatch_alm_reaches_the_constrained_optimum_with_the_estimated_slope() -> None:
    """θ* = (0, 1) (closed form). With the batch's own estimate in the slope the fixed point
    solves θ − θ₀ + λE[a] + ρ·Cov(a_B)θ = 0, which shrinks the noisy coordinate to
    1/(1 + ρ·SPREAD²/BATCH) = 0.5; with the earlier batches' estimate it stays near 1 (what
    is left is the estimate's lag and the dual-first λ_{t+1}, which has seen the batch)."""
    target = optimum(0.0)
    estimated = train(ALM(rho=1.0, epsilon=0.0, batch_estimates=True), dual_lr=0.05)
    own_batch = train(ALM(rho=1.0, epsilon=0.0, batch_estimates=False), dual_lr=0.05)
    assert torch.allclose(estimated, target, atol=0.1), estimated
    assert float(own_batch[1]) < 0.6, own_batch  # the bias the estimate removes


def test_sals_penalty_slope_is_read_from_the_estimate_too() -> None:
    """SAL's primal loss has ALM's terms at each constraint's ρ_j: its value is ψ(d) and its
    gradient in d is [λ + ρ·d̄]₊ once an estimate d̄ exists."""
    method = SAL(rho=2.0, rho_growth=1.0, rho_max=2.0, size=2, batch_estimates=True)
    lam = torch.tensor([0.5, 0.0], dtype=torch.float64)
    for first, then in (([0.3, -0.2], [0.1, 0.4]), ([-0.4, 0.1], [0.2, 0.2])):
        method = SAL(rho=2.0, rho_growth=1.0, rho_max=2.0, size=2, batch_estimates=True)
        d0 = torch.tensor(first, dtype=torch.float64)
        obs0 = Observation(torch.zeros((), dtype=torch.float64), d0, ConstraintBatch(d0))
        method.primal_loss(obs0, lam)  # records the first batch
        d1 = torch.tensor(then, dtype=torch.float64, requires_grad=True)
        obs1 = Observation(torch.zeros((), dtype=torch.float64), d1, ConstraintBatch(d1))
        loss = method.primal_loss(obs1, lam)
        loss.backward()  # type: ignore[no-untyped-call]
        assert d1.grad is not None
        expected = torch.clamp(lam + 2.0 * torch.tensor(first, dtype=torch.float64), min=0.0)
        assert torch.allclose(d1.grad, expected)
        own = SAL(rho=2.0, rho_growth=1.0, rho_max=2.0, size=2)
        assert float(loss.detach()) == pytest.approx(float(own.primal_loss(obs1, lam).detach()))


def test_the_estimate_is_the_earlier_batches_and_a_first_observation_its_own() -> None:
    method = ALM(rho=2.0, size=3, batch_estimates=True)
    assert method.estimate is not None
    first = method.estimate.coefficient(
        torch.tensor([0, 2]), torch.tensor([0.5, -1.0], dtype=torch.float64)
    )
    assert first.tolist() == [0.5, -1.0]
    second = method.estimate.coefficient(
        torch.tensor([2, 1]), torch.tensor([3.0, 0.25], dtype=torch.float64)
    )
    assert second.tolist() == [-1.0, 0.25]  # entry 2's history; entry 1 is new
    assert method.estimate.defect_mean.tolist() == pytest.approx([0.5, 0.25, 0.9 * -1 + 0.3])


def test_the_estimate_is_part_of_the_state_and_of_a_packs_members_state() -> None:
    one = ALM(rho=2.0, size=2, batch_estimates=True)
    assert one.estimate is not None
    one.estimate.coefficient(None, torch.tensor([0.1, 0.2], dtype=torch.float64))
    other = ALM(rho=2.0, size=2, batch_estimates=True)
    other.load_state_dict(one.state_dict())
    assert other.estimate is not None
    assert torch.equal(other.estimate.defect_mean, one.estimate.defect_mean)
    assert other.estimate.defect_seen.all()

    pack = stack_methods([one, ALM(rho=3.0, size=2, batch_estimates=True)], dtype=torch.float64)
    assert isinstance(pack, ALM)
    assert pack.estimate is not None
    assert pack.estimate is not one.estimate
    assert pack.estimate.defect_mean.shape == (2, 2)
    member = pack.member_state_dict(0)
    assert torch.equal(member["defect_mean"], one.estimate.defect_mean)

    # a checkpoint written before the estimate existed loads with an empty one
    older = {k: v for k, v in one.state_dict().items() if not k.startswith("defect_")}
    other.load_state_dict(older)
    assert not other.estimate.defect_seen.any()


@pytest.mark.parametrize(
    ("constraint", "batch_size", "expected"),
    [
        ({"kind": "group_rate", "attribute": "side"}, 64, True),
        ({"kind": "equalized_odds", "attribute": "side"}, 64, True),
        ({"kind": "bounded_group_loss", "attribute": "side"}, 64, True),
        ({"kind": "group_rate", "attribute": "side"}, 100_000, False),  # full batch
        ({"kind": "sample_loss"}, 64, False),  # each value is one sample's own
    ],
)
def test_alm_reads_an_estimated_slope_where_batches_estimate_population_constraints(
    constraint: dict[str, object], batch_size: int, expected: bool
) -> None:
    config = make_trial(
        "alm",
        grid={"epsilon": 0.01, "rho": 1.0, "dual_lr": 0.01},
        constraint=constraint,
        train={"epochs": 1, "batch_size": batch_size},
    )
    task = load_task(config.task.name, config.task.params)
    data = task.load()
    kind = build_constraint_kind(config, data, task.make_model(data), task=task)
    method = build_method(config, kind, n_train=len(data.train.y))
    assert (method.estimate is not None) is expected  # type: ignore[attr-defined]
