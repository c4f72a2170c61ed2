"""Methods: primal losses and dual errors as the update rules in their docstrings say."""

import math

import pytest
import torch
import torch.nn.functional as F

from dualtune.core.engine.methods import (
    ALM,
    CSERM,
    ERM,
    FL,
    RFL,
    SAL,
    Penalty,
    augmented_terms,
    stack_methods,
)
from dualtune.core.engine.observation import ConstraintBatch, Observation

F64 = torch.float64


def observation(values: list[float], objective: float = 0.5, erm: float = 2.0) -> Observation:
    return Observation(
        torch.tensor(objective, dtype=F64),
        torch.tensor(erm, dtype=F64),
        ConstraintBatch(torch.tensor(values, dtype=F64)),
    )


def test_erm_minimises_the_mean_loss_only() -> None:
    """ERM's loss on a model's observation is the mean of per-sample cross-entropies computed
    on their own, its gradient is autograd's of ``F.cross_entropy(reduction="mean")``, and
    neither moves when the objective, the constraint values or the multipliers change."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3).to(F64)
    x = torch.randn(8, 4, dtype=F64)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 2, 0])
    params = list(model.parameters())
    # The reference: per-sample losses by hand (log-softmax at the label), and torch's mean.
    logits = model(x)
    by_hand = -(logits - logits.logsumexp(dim=1, keepdim=True)).gather(1, y[:, None])[:, 0]
    reference = torch.autograd.grad(F.cross_entropy(model(x), y, reduction="mean"), params)

    def erm_loss_and_gradient(
        objective_scale: float, constraint_shift: float, lam: torch.Tensor | None
    ) -> tuple[float, list[torch.Tensor]]:
        out = model(x)
        losses = F.cross_entropy(out, y, reduction="none")
        obs = Observation(
            objective_scale * out.pow(2).sum(),  # an objective with its own gradient
            losses.mean(),
            ConstraintBatch(losses.pow(2) + constraint_shift),  # constraints unlike ℓ
        )
        loss = ERM(epsilon=0.1).primal_loss(obs, lam)
        return loss.item(), list(torch.autograd.grad(loss, params))

    value, gradient = erm_loss_and_gradient(1.0, 0.0, None)
    assert value == pytest.approx(by_hand.mean().item(), rel=1e-12)
    for g, r in zip(gradient, reference, strict=True):
        assert torch.allclose(g, r, rtol=1e-12, atol=1e-14)
    for scale, shift, lam in [
        (0.0, 0.0, None),
        (5.0, 3.0, None),
        (1.0, -2.0, torch.full((8,), 7.0, dtype=F64)),
    ]:
        other_value, other_gradient = erm_loss_and_gradient(scale, shift, lam)
        assert other_value == value
        for g, r in zip(other_gradient, gradient, strict=True):
            assert torch.equal(g, r)


def test_penalty_sums_positive_violations_or_absolute_equality_defects() -> None:
    obs = observation([0.3, -1.0, 0.8])
    ineq = Penalty(penalty=2.0, epsilon=0.5).primal_loss(obs, None).item()
    assert ineq == pytest.approx(0.5 + 2.0 * 0.3)
    eq = Penalty(penalty=2.0, epsilon=0.5, equality=True).primal_loss(obs, None).item()
    assert eq == pytest.approx(0.5 + 2.0 * (0.2 + 1.5 + 0.3))


def test_cserm_is_the_mean_clamped_square() -> None:
    obs = observation([0.3, -1.0, 0.8], objective=0.0)
    assert CSERM(epsilon=0.5).primal_loss(obs, None).item() == pytest.approx(0.3**2 / 3)


def test_fl_lagrangian_is_a_sum_over_constraints() -> None:
    obs = observation([0.3, 0.9], objective=0.0)
    lam = torch.tensor([2.0, 1.0], dtype=F64)
    assert FL(epsilon=0.5).primal_loss(obs, lam).item() == pytest.approx(2 * -0.2 + 1 * 0.4)


def test_rfl_dual_error_decays_by_lambda_over_alpha() -> None:
    d = torch.tensor([0.4, -0.1], dtype=F64)
    lam = torch.tensor([1.0, 3.0], dtype=F64)
    e = RFL(alpha=2.0).dual_error(d, lam)
    assert e is not None
    assert e.tolist() == pytest.approx([0.4 - 0.5, -0.1 - 1.5])


def test_alm_dual_error_is_rho_scaled() -> None:
    e = ALM(rho=3.0).dual_error(torch.tensor([0.5], dtype=F64), torch.zeros(1, dtype=F64))
    assert e is not None
    assert e.item() == pytest.approx(1.5)


@pytest.mark.parametrize("rho", [0.0, 1e-300, 0.5, 10.0])
def test_augmented_terms_match_nocedal_wright_and_never_nan(rho: float) -> None:
    d = torch.tensor([-2.0, -0.1, 0.0, 0.7], dtype=F64, requires_grad=True)
    lam = torch.tensor([0.5, 0.0, 1.0, 0.3], dtype=F64)
    total = augmented_terms(d, lam, rho, equality=False)
    total.backward()
    assert d.grad is not None
    assert torch.isfinite(total)
    assert torch.all(torch.isfinite(d.grad))
    # ∂ψ/∂d = [λ + ρd]₊ for inequalities.
    assert torch.allclose(d.grad, (lam + rho * d.detach()).clamp_min(0))
    if rho > 1e-6:
        ref = sum(
            ((max(li + rho * di, 0.0) ** 2) - li * li) / (2 * rho)
            for di, li in zip(d.tolist(), lam.tolist(), strict=True)
        )
        assert total.item() == pytest.approx(ref)


def test_alm_at_rho_zero_is_the_plain_lagrangian() -> None:
    obs = observation([0.3, 0.9], objective=0.0)
    lam = torch.tensor([2.0, 1.0], dtype=F64)
    alm = ALM(rho=0.0, epsilon=0.5).primal_loss(obs, lam).item()
    assert alm == pytest.approx(FL(epsilon=0.5).primal_loss(obs, lam).item())
    assert not math.isnan(alm)


def test_sal_grows_a_constraints_rho_when_its_violation_is_above_its_running_average() -> None:
    sal = SAL(rho=1.0, rho_growth=2.0, rho_max=5.0, size=3)
    lam = torch.zeros(2, dtype=F64)
    first, second = torch.tensor([0, 1]), torch.tensor([1, 2])
    # The first observation of a constraint is accepted: λ moves by ρ(g − ε).
    error = sal.dual_error(torch.tensor([0.4, 0.3], dtype=F64), lam, first)
    assert error is not None
    assert error.tolist() == pytest.approx([0.4, 0.3])
    assert sal.schedule.smoothed.tolist() == pytest.approx([0.4, 0.3, 0.0])
    # Constraint 1 is now worse than its average (0.8 > 0.3): its ρ grows and λ stays;
    # constraint 2 is seen for the first time: accepted, whatever the others do.
    error = sal.dual_error(torch.tensor([0.8, 0.9], dtype=F64), lam, second)
    assert error is not None
    assert error.tolist() == pytest.approx([0.0, 0.9])
    assert sal.rho.tolist() == [1.0, 2.0, 1.0]
    assert sal.schedule.smoothed.tolist() == pytest.approx([0.4, 0.9 * 0.3 + 0.1 * 0.8, 0.9])
    for _ in range(3):
        sal.dual_error(torch.tensor([5.0], dtype=F64), lam[:1], torch.tensor([1]))
    assert sal.rho.tolist() == [1.0, 5.0, 1.0]  # capped at rho_max
    # Below its running average again: accepted with the grown ρ.
    error = sal.dual_error(torch.tensor([0.1], dtype=F64), lam[:1], torch.tensor([1]))
    assert error is not None
    assert error.tolist() == pytest.approx([0.5])  # ρ = 5 times the defect
    # A satisfied constraint (v = 0 ≤ its average) is accepted: its λ moves down.
    error = sal.dual_error(torch.tensor([-0.2], dtype=F64), lam[:1], torch.tensor([0]))
    assert error is not None
    assert error.tolist() == pytest.approx([-0.2])


def test_sal_state_round_trip() -> None:
    sal = SAL(rho=1.0, rho_growth=2.0, rho_max=5.0, size=2)
    sal.dual_error(torch.tensor([1.0, 0.5], dtype=F64), torch.zeros(2, dtype=F64))
    sal.dual_error(torch.tensor([2.0, 0.1], dtype=F64), torch.zeros(2, dtype=F64))
    other = SAL(rho=1.0, rho_growth=2.0, rho_max=5.0, size=2)
    other.load_state_dict(sal.state_dict())
    assert other.rho.tolist() == [2.0, 1.0]
    assert other.schedule.smoothed.tolist() == pytest.approx([1.1, 0.46])
    assert other.schedule.seen.tolist() == [True, True]
    with pytest.raises(ValueError, match="shape"):
        SAL(rho=1.0, rho_growth=2.0, rho_max=5.0, size=3).load_state_dict(sal.state_dict())


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Penalty(penalty=-1.0), "penalty coefficient"),
        (lambda: RFL(alpha=0.0), "alpha must be > 0"),
        (lambda: ALM(rho=-1.0), "rho must be"),
        (lambda: SAL(rho=1.0, rho_growth=0.5, rho_max=2.0), "rho_growth"),
        (lambda: SAL(rho=3.0, rho_growth=1.5, rho_max=2.0), "rho_max"),
        (lambda: SAL(rho=0.0, rho_growth=1.5, rho_max=2.0), "rho must be a finite number > 0"),
    ],
)
def test_constructors_reject_bad_hyperparameters(make: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()  # type: ignore[operator]


@pytest.mark.parametrize(
    "method",
    [
        FL(epsilon=0.5),
        RFL(alpha=2.0, epsilon=0.5),
        ALM(rho=0.7, epsilon=0.5),
        ALM(rho=0.7, epsilon=0.5, equality=True),
        ALM(rho=0.0, epsilon=0.5),
    ],
    ids=["fl", "rfl", "alm", "alm-equality", "alm-rho0"],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_primal_terms_are_primal_loss_and_its_autograd_gradient_bit_for_bit(
    method: FL, dtype: torch.dtype
) -> None:
    g = torch.Generator().manual_seed(1)
    values = (torch.rand(257, generator=g, dtype=dtype) * 2).requires_grad_()
    lam = torch.rand(257, generator=g, dtype=dtype) * 3
    lam[::7] = 0.0  # with values < ε: the flat branch of ψ
    objective = torch.tensor(0.25, dtype=dtype)
    loss = method.primal_loss(Observation(objective, objective, ConstraintBatch(values)), lam)
    (gradient,) = torch.autograd.grad(loss, values)
    terms = method.primal_terms(objective, method.defect(values.detach()), lam)
    assert terms is not None
    assert torch.equal(terms.loss, loss.detach())
    assert torch.equal(terms.weights, gradient)
    if isinstance(method, ALM) and not method.equality and method.rho > 0:
        assert bool((gradient == 0).any())  # both branches of ψ are exercised
        assert bool((gradient != 0).any())


def test_packed_and_uncloseable_methods_leave_the_step_to_autograd() -> None:
    d, lam, zero = torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2)
    packed = stack_methods([ALM(rho=0.5), ALM(rho=1.0)], dtype=torch.float32)
    assert packed.primal_terms(zero, d, lam) is None
    sal = SAL(rho=1.0, rho_growth=2.0, rho_max=8.0)
    assert sal.primal_terms(zero[0], d[0], lam[0]) is None


def test_alm_grows_the_penalty_of_a_constraint_whose_violation_does_not_decrease() -> None:
    alm = ALM(rho=1.0, rho_growth=2.0, rho_max=8.0, size=2)
    lam = torch.zeros(2, dtype=F64)
    first = alm.dual_error(torch.tensor([0.5, 0.5], dtype=F64), lam)  # first look: accepted
    assert first is not None
    assert first.tolist() == pytest.approx([0.5, 0.5])
    # Constraint 0 is above its running average: its ρ grows (after this step's update).
    second = alm.dual_error(torch.tensor([0.8, 0.1], dtype=F64), lam)
    assert second is not None
    assert second.tolist() == pytest.approx([0.8, 0.1])
    assert alm.schedule.rho.tolist() == [2.0, 1.0]
    third = alm.dual_error(torch.tensor([0.1, 0.1], dtype=F64), lam)
    assert third is not None
    assert third.tolist() == pytest.approx([0.2, 0.1])  # each constraint's own ρ_j · d_j
    assert not alm.stateless_dual  # a schedule: no extragradient
    assert ALM(rho=1.0).stateless_dual
