"""The update schemes against textbook truths and Cooper: extragradient converges on the
bilinear saddle where simultaneous gradient descent-ascent spirals out, and steps exactly as
Cooper's ``ExtrapolationConstrainedOptimizer`` with ``ExtraSGD``; dual restarts zero the
multipliers of satisfied constraints; a step's re-evaluation leaves BatchNorm's running
statistics as one forward pass left them."""

import copy
import functools
import math

import cooper
import pytest
import torch
from sklearn.datasets import make_moons
from torch import Tensor, nn
from torch.nn import functional as F

from dualtune.core.engine.dual_optimizers import GradientAscent
from dualtune.core.engine.forward import running_statistics_kept
from dualtune.core.engine.methods import FL, RFL, Method
from dualtune.core.engine.multipliers import Multipliers
from dualtune.core.engine.observation import ConstraintBatch, Observation
from dualtune.core.engine.step import SCHEMES, PrimalDualStep

F64 = torch.float64


# -- the bilinear saddle: min_x max_μ μ·x, i.e. min 0 s.t. x = 0, with its saddle at 0 ----------
def bilinear_norms(scheme: str, steps: int, lr: float = 0.1) -> tuple[float, float]:
    """‖(x, μ)‖ at the start and after ``steps`` steps of ``scheme`` from (1, 1)."""
    x = torch.ones(1, dtype=F64, requires_grad=True)
    mu = Multipliers(1, equality=True, init=1.0, dtype=F64)
    step = PrimalDualStep(
        FL(equality=True),
        torch.optim.SGD([x], lr=lr),
        mu,
        GradientAscent(lr),
        scheme,  # type: ignore[arg-type]
    )

    def observe() -> Observation:
        return Observation(x.new_zeros(()), x.new_zeros(()), ConstraintBatch(x))

    start = math.hypot(float(x.detach()), float(mu.value))
    for _ in range(steps):
        step(observe)
    return start, math.hypot(float(x.detach()), float(mu.value))


def test_extragradient_converges_on_the_bilinear_saddle_where_gda_does_not() -> None:
    start, simultaneous = bilinear_norms("simultaneous", 2000)
    _, alternating = bilinear_norms("alternating_dual_first", 2000)
    _, extragradient = bilinear_norms("extragradient", 2000)
    # Simultaneous GDA multiplies the norm by √(1 + η²) every step: it spirals out.
    assert simultaneous == pytest.approx(start * (1 + 0.1**2) ** (2000 / 2), rel=1e-9)
    # Alternating GDA cycles on a bounded orbit: it neither converges nor diverges.
    assert 0.5 * start < alternating < 2 * start
    # Extragradient contracts by √(1 − η² + η⁴) per step towards the saddle (0, 0).
    assert extragradient == pytest.approx(start * (1 - 0.1**2 + 0.1**4) ** (2000 / 2), rel=1e-6)
    assert extragradient < 1e-2 * start


# -- step for step against Cooper's extragradient ------------------------------------------------
EPSILON, DUAL_LR, PRIMAL_LR, STEPS, BATCH = 0.3, 0.05, 0.1, 30, 32


class FeasibleLearning(cooper.ConstrainedMinimizationProblem):
    """Per-sample losses ≤ ε with a dense multiplier per sample, plus the mean loss as
    objective (so the primal step differentiates a Lagrangian, not only the constraints)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.constraint = cooper.Constraint(
            constraint_type=cooper.ConstraintType.INEQUALITY,
            multiplier=cooper.multipliers.DenseMultiplier(num_constraints=n),
        )

    def compute_cmp_state(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> cooper.CMPState:
        losses = F.cross_entropy(model(x), y, reduction="none")
        state = cooper.ConstraintState(violation=losses - EPSILON)
        return cooper.CMPState(loss=losses.mean(), observed_constraints={self.constraint: state})


def test_extragradient_steps_as_coopers_extrasgd() -> None:
    X, y = make_moons(BATCH, noise=0.1, random_state=0)
    X_t, y_t = torch.tensor(X, dtype=torch.float32), torch.tensor(y)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 2))
    theirs, ours = copy.deepcopy(model), copy.deepcopy(model)

    cmp = FeasibleLearning(BATCH)
    optimizer = cooper.optim.ExtrapolationConstrainedOptimizer(
        cmp=cmp,
        primal_optimizers=cooper.optim.ExtraSGD(theirs.parameters(), lr=PRIMAL_LR),
        dual_optimizers=cooper.optim.ExtraSGD(cmp.dual_parameters(), lr=DUAL_LR, maximize=True),
    )
    lam = Multipliers(BATCH)
    step = PrimalDualStep(
        FL(epsilon=EPSILON),
        torch.optim.SGD(ours.parameters(), lr=PRIMAL_LR),
        lam,
        GradientAscent(DUAL_LR),
        "extragradient",
    )

    def observe() -> Observation:
        losses = F.cross_entropy(ours(X_t), y_t, reduction="none")
        return Observation(losses.mean(), losses.mean(), ConstraintBatch(losses))

    for t in range(STEPS):
        optimizer.roll(compute_cmp_state_kwargs={"model": theirs, "x": X_t, "y": y_t})
        step(observe)
        cooper_lambda = cmp.constraint.multiplier.weight.detach().flatten()
        assert torch.allclose(lam.value, cooper_lambda, atol=1e-6, rtol=0), t
        for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
            assert torch.allclose(a, b, atol=1e-6, rtol=0), t
    assert 0 < int((lam.value > 0).sum()) < BATCH  # active and inactive constraints both


# -- dual restarts -------------------------------------------------------------------------------
def one_dual_step(method: Method, values: list[float], lam: list[float], restart: bool) -> Tensor:
    x = torch.zeros(1, requires_grad=True)
    table = Multipliers(len(values))
    table.value.copy_(torch.tensor(lam))
    step = PrimalDualStep(
        method, torch.optim.SGD([x], lr=0.1), table, GradientAscent(0.5), restart=restart
    )
    g = torch.tensor(values) + 0 * x  # constraint values that carry a gradient

    def observe() -> Observation:
        return Observation(x.sum() * 0, x.sum() * 0, ConstraintBatch(g))

    step(observe)
    return table.value


@pytest.mark.parametrize("method", [FL(epsilon=0.2), RFL(alpha=2.0, epsilon=0.2)])
def test_a_restart_zeroes_the_multipliers_of_satisfied_constraints(method: Method) -> None:
    # g − ε: violated, exactly met, strictly satisfied by a little, and by a lot.
    values, lam = [0.5, 0.2, 0.19, -1.0], [1.0, 1.0, 1.0, 1.0]
    plain = one_dual_step(method, values, lam, restart=False)
    restarted = one_dual_step(method, values, lam, restart=True)
    assert bool((plain > 0).all())  # without restarts a satisfied constraint's λ decays slowly
    assert restarted[:2].tolist() == plain[:2].tolist()
    assert restarted[2:].tolist() == [0.0, 0.0]


def test_restarts_are_refused_for_equality_constraints() -> None:
    with pytest.raises(ValueError, match="inequality"):
        PrimalDualStep(
            FL(equality=True),
            torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1),
            Multipliers(1, equality=True),
            GradientAscent(0.1),
            restart=True,
        )


# -- BatchNorm's statistics move once per batch under every scheme ----------------------------
@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_step_moves_the_running_statistics_once(scheme: str) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    x, y = torch.randn(16, 3), torch.randint(0, 2, (16,))
    with torch.no_grad():  # one training-mode forward pass: what a step should leave
        reference = copy.deepcopy(model)
        reference(x)
    step = PrimalDualStep(
        FL(epsilon=0.1),
        torch.optim.SGD(model.parameters(), lr=0.5),
        Multipliers(16),
        GradientAscent(1.0),
        scheme,  # type: ignore[arg-type]
        keep_statistics=functools.partial(running_statistics_kept, model),
    )

    def observe() -> Observation:
        losses = F.cross_entropy(model(x), y, reduction="none")
        return Observation(losses.new_zeros(()), losses.mean(), ConstraintBatch(losses))

    step(observe)
    bn, expected = model[1], reference[1]
    assert int(bn.num_batches_tracked) == 1
    assert torch.equal(bn.running_mean, expected.running_mean)
    assert torch.equal(bn.running_var, expected.running_var)


def test_the_spec_refuses_extragradient_for_sal_and_restarts_for_equalities() -> None:
    from dualtune.core.spec import SweepSpec

    base = {"name": "s", "task": {"name": "digits"}, "methods": ["sal"]}
    with pytest.raises(ValueError, match=r"dual\.scheme.*sal"):
        SweepSpec.model_validate(
            {**base, "constraint": {"kind": "sample_loss"}, "dual": {"scheme": "extragradient"}}
        )
    with pytest.raises(ValueError, match=r"dual\.restart"):
        SweepSpec.model_validate(
            {
                **base,
                "methods": ["fl"],
                "constraint": {"kind": "class_loss", "equality": True},
                "dual": {"restart": True},
            }
        )
