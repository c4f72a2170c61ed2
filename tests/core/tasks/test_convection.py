"""The convection PINN task and the ``pinn_residual`` constraint kind.

Residuals are checked against closed forms (the exact solution u* = sin(x − βt) has none;
u* + a·x and u* + a·t have known ones) and against finite differences; the spec keeps the
kind to PDE tasks and ERM away from it; the paper's claim (equality constraints beat the
100/100/1-weighted PINN loss) is measured on a reduced budget.
"""

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from dualtune import core
from dualtune.core.engine.constraints import PinnResidual
from dualtune.core.engine.evaluation import evaluate_split
from dualtune.core.engine.methods import Penalty
from dualtune.core.engine.observation import ConstraintBatch, Observation
from dualtune.core.spec import SpecError, load_spec
from dualtune.core.tasks.convection import Convection
from dualtune.core.tasks.loading import load_task
from tests.core.engine.conftest import make_trial

BETA = 30.0


class Shifted(nn.Module):
    """u(x, t) = sin(x − βt) + a·x + b·t: the exact solution when a = b = 0."""

    def __init__(self, beta: float, a: float = 0.0, b: float = 0.0) -> None:
        super().__init__()
        self.beta, self.a, self.b = beta, a, b

    def forward(self, p: Tensor) -> Tensor:
        x, t = p[:, 0], p[:, 1]
        return (torch.sin(x - self.beta * t) + self.a * x + self.b * t).unsqueeze(-1)


@pytest.fixture(scope="module")
def task() -> Convection:
    loaded = load_task("convection", {})
    assert isinstance(loaded, Convection)
    return loaded


def test_data_are_the_exact_solution_on_uniform_points_and_a_grid(task: Convection) -> None:
    data = task.load()
    assert (data.train.n, data.val.n) == (1000, 256 * 100)
    assert data.num_classes is None
    for split in (data.train, data.val):
        x, t = split.x[:, 0].double(), split.x[:, 1].double()
        assert float(x.min()) >= 0
        assert float(x.max()) < 2 * math.pi
        assert float(t.min()) >= 0
        assert float(t.max()) <= 1
        assert torch.allclose(split.y.double(), torch.sin(x - BETA * t), atol=1e-5)
    # The grid is regular: 256 distinct x, 100 distinct t including both ends of [0, 1].
    assert len(set(data.val.x[:, 0].tolist())) == 256
    times = sorted(set(data.val.x[:, 1].tolist()))
    assert (len(times), times[0], times[-1]) == (100, 0.0, 1.0)
    torch.manual_seed(0)
    hidden = [m for m in task.make_model(data).modules() if isinstance(m, nn.Linear)]
    assert [m.out_features for m in hidden] == [50, 50, 50, 50, 1]
    assert sum(isinstance(m, nn.Tanh) for m in task.make_model(data).modules()) == 4


def test_the_exact_solution_has_zero_residuals(task: Convection) -> None:
    data = task.load()
    for x in (data.train.x, data.val.x):
        residuals = task.residuals(Shifted(BETA), x)
        assert residuals.shape == (3,)
        assert residuals.abs().max() < 1e-5


def test_perturbed_solutions_have_their_closed_form_residuals(task: Convection) -> None:
    x = task.load().train.x.double()
    a = 0.1
    # u* + a·x: IC residual a·x, BC residual u(0) − u(2π) = −2πa, PDE residual β·a.
    ic, bc, pde = task.residuals(Shifted(BETA, a=a), x).tolist()
    assert ic == pytest.approx(a**2 * float(x[:, 0].pow(2).mean()), rel=1e-9)
    assert bc == pytest.approx((2 * math.pi * a) ** 2, rel=1e-9)
    assert pde == pytest.approx((BETA * a) ** 2, rel=1e-9)
    # u* + a·t: initial and periodic conditions still hold, the PDE is off by a.
    ic, bc, pde = task.residuals(Shifted(BETA, b=a), x).tolist()
    assert ic < 1e-20
    assert bc < 1e-20
    assert pde == pytest.approx(a**2, rel=1e-9)


def test_residuals_of_a_network_match_finite_differences(task: Convection) -> None:
    data = task.load()
    torch.manual_seed(1)
    model = task.make_model(data).double()
    x = data.train.x[:200].double()
    got = task.residuals(model, x, create_graph=False)
    h = 1e-5

    def u(points: Tensor) -> Tensor:
        with torch.no_grad():
            out: Tensor = model(points)
        return out.reshape(-1)

    dx, dt = torch.tensor([h, 0.0], dtype=x.dtype), torch.tensor([0.0, h], dtype=x.dtype)
    u_x = (u(x + dx) - u(x - dx)) / (2 * h)
    u_t = (u(x + dt) - u(x - dt)) / (2 * h)
    zero = torch.zeros(len(x), dtype=x.dtype)
    ic = u(torch.stack([x[:, 0], zero], 1)) - torch.sin(x[:, 0])
    bc = u(torch.stack([zero, x[:, 1]], 1)) - u(torch.stack([zero + 2 * math.pi, x[:, 1]], 1))
    want = torch.stack([ic.pow(2).mean(), bc.pow(2).mean(), (u_t + BETA * u_x).pow(2).mean()])
    assert want[2] > 1e-3  # an untrained network is far from solving the PDE
    assert torch.allclose(got, want, rtol=1e-6, atol=1e-12)
    assert not got.requires_grad


def test_residual_gradients_in_the_parameters_are_exact(task: Convection) -> None:
    """The PDE residual's gradient needs second derivatives (create_graph); gradcheck
    compares it with finite differences in one layer's weights."""
    torch.manual_seed(2)
    small = Convection(task.params.model_copy(update={"hidden": [6, 6]}))
    model = small.make_model(task.load()).double()
    first = next(m for m in model.modules() if isinstance(m, nn.Linear))
    x = task.load().train.x[:20].double()

    def residuals_at(weight: Tensor) -> Tensor:
        params = {"model.0.weight": weight}
        out: Tensor = torch.func.functional_call(
            _ResidualsOf(task, model), params, (x,), strict=False
        )
        return out

    weight = first.weight.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(residuals_at, (weight,), eps=1e-6, atol=1e-5)


class _ResidualsOf(nn.Module):
    """A module whose forward is the task's residuals of ``model`` (for functional_call)."""

    def __init__(self, task: Convection, model: nn.Module) -> None:
        super().__init__()
        self.task, self.model = task, model

    def forward(self, x: Tensor) -> Tensor:
        return self.task.residuals(self.model, x)


def test_resampling_draws_fresh_uniform_points_from_the_generator(task: Convection) -> None:
    x = task.load().train.x
    a = task.augment(x, torch.Generator().manual_seed(5))
    b = task.augment(x, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert not torch.equal(a, x)
    assert (a.shape, a.dtype) == (x.shape, x.dtype)
    assert float(a[:, 0].min()) >= 0
    assert float(a[:, 0].max()) <= 2 * math.pi
    assert float(a[:, 1].min()) >= 0
    assert float(a[:, 1].max()) <= 1
    # Uniform: the means sit near π and ½ (1000 points; standard errors ≈ 0.06 and 0.01).
    assert abs(float(a[:, 0].mean()) - math.pi) < 0.3
    assert abs(float(a[:, 1].mean()) - 0.5) < 0.05
    fixed = load_task("convection", {"resample": False})
    assert fixed.augment(x, torch.Generator()) is x


def test_the_kind_weights_the_residuals_and_evaluates_without_gradients(
    task: Convection,
) -> None:
    data = task.load()
    model = Shifted(BETA, a=0.1)
    kind = PinnResidual((100.0, 100.0, 1.0), tolerance=1e-9)
    raw = task.residuals(model, data.val.x, create_graph=False)
    with torch.no_grad():  # as evaluate_split runs it
        ev = evaluate_split(task, model, kind, data.val, prefix="val", epsilon=0.0)
    assert torch.allclose(ev.constraint_values, raw * torch.tensor([100.0, 100.0, 1.0]))
    assert float(ev.metrics["val/feasible_frac"]) == 0.0
    # rel_l2 of u* + 0.1x against u* on the grid, computed directly.
    x = data.val.x[:, 0].double()
    want = float((0.1 * x).norm() / torch.sin(x - BETA * data.val.x[:, 1].double()).norm())
    assert float(ev.metrics["val/rel_l2"]) == pytest.approx(want, rel=1e-5)
    with torch.no_grad():
        exact = evaluate_split(task, Shifted(BETA), kind, data.val, prefix="val", epsilon=0.0)
    assert float(exact.metrics["val/rel_l2"]) < 1e-6
    assert float(exact.metrics["val/feasible_frac"]) == 1.0


def test_penalty_with_weights_100_100_1_is_the_weighted_pinn_loss(task: Convection) -> None:
    x = task.load().train.x
    model = Shifted(BETA, a=0.1)
    ic, bc, pde = task.residuals(model, x).tolist()
    values = PinnResidual((100.0, 100.0, 1.0), tolerance=0.0)._weighted(
        task, model, x, create_graph=True
    )
    obs = Observation(values.new_zeros(()), values.new_zeros(()), ConstraintBatch(values))
    loss = Penalty(penalty=1.0, equality=True).primal_loss(obs, None)
    assert float(loss.detach()) == pytest.approx(100 * ic + 100 * bc + pde, rel=1e-6)


def test_the_kind_rejects_bad_weights_and_tasks_without_residuals() -> None:
    with pytest.raises(ValueError, match="residual weights must be > 0"):
        PinnResidual((1.0, 0.0, 1.0), tolerance=0.0)
    with pytest.raises(ValueError, match="tolerance must be ≥ 0"):
        PinnResidual((1.0, 1.0, 1.0), tolerance=-1.0)
    polyfit = load_task("polyfit", {})
    with pytest.raises(ValueError, match="need a PDE task with residuals; Polyfit has none"):
        PinnResidual((1.0, 1.0, 1.0), tolerance=0.0).evaluate(
            polyfit, nn.Linear(1, 1), torch.zeros(1), polyfit.load().val
        )


BASE: dict[str, Any] = {
    "name": "c",
    "task": {"name": "convection"},
    "constraint": {"kind": "pinn_residual"},
    "methods": ["fl"],
}


def errors_of(**overrides: Any) -> list[tuple[str, str]]:
    with pytest.raises(SpecError) as info:
        load_spec({**BASE, **overrides})
    return [(e["field"], e["message"]) for e in info.value.errors]


def test_the_spec_keeps_erm_and_cserm_off_the_residuals() -> None:
    for method in ("erm", "cserm"):
        [(field, message)] = errors_of(methods=[method])
        assert field == "methods.0"
        assert message.startswith(
            f"method {method!r} does not apply to constraint kind 'pinn_residual'; "
            "methods for pinn_residual: "
        )
        fitting = message.split(": ")[-1].split(", ")
        assert {"penalty", "fl", "rfl", "alm", "sal"} <= set(fitting)
        assert not {"erm", "cserm"} & set(fitting)


def test_the_spec_keeps_the_residual_kind_and_the_pde_task_together() -> None:
    errors = errors_of(task={"name": "two_moons"})
    assert ("constraint.kind", "task 'two_moons' does not support constraint kind") in [
        (f, m.split(" 'pinn_residual'")[0]) for f, m in errors
    ]
    [(field, message)] = errors_of(constraint={"kind": "sample_loss"})
    assert field == "constraint.kind"
    assert message == (
        "task 'convection' does not support constraint kind 'sample_loss'; "
        "kinds for convection: pinn_residual"
    )


def test_the_residual_constraint_section() -> None:
    spec = load_spec(
        {
            **BASE,
            "constraint": {"kind": "pinn_residual", "weights": [100, 100, 1]},
            "methods": ["penalty", "fl"],
            "grid": {"epsilon": [0.0, 0.1]},
            "selection": {"metric": "val/rel_l2"},
        }
    )
    assert spec.constraint.kind == "pinn_residual"
    assert spec.constraint.weights == (100.0, 100.0, 1.0)
    assert spec.constraint.equality is True
    # The residuals are driven to 0: ε is not read and does not multiply the trials.
    assert spec.count_trials() == 2

    # The kind's own params class validates the section: errors name the field as written.
    def fields(**constraint: Any) -> list[str]:
        return [f for f, _ in errors_of(constraint={"kind": "pinn_residual", **constraint})]

    assert fields(equality=False) == ["constraint.equality"]
    assert fields(weights=[1, 1]) == ["constraint.weights.2"]  # missing
    assert fields(weights=[1, -1, 1]) == ["constraint.weights.1"]
    assert fields(tolerance=-1) == ["constraint.tolerance"]


@pytest.mark.parametrize(
    ("method", "grid"),
    [
        ("fl", {"dual_lr": 0.1}),
        ("rfl", {"dual_lr": 0.1, "alpha": 1.0}),
        ("alm", {"rho": 1.0}),
        ("sal", {"rho": 1.0}),
        ("penalty", {"penalty": 1.0}),
    ],
)
def test_the_training_loop_runs(method: str, grid: dict[str, float]) -> None:
    config = make_trial(
        method,
        task={"name": "convection", "params": {"n_collocation": 200, "grid_x": 32, "grid_t": 8}},
        constraint={"kind": "pinn_residual", "weights": [1, 1, 1]},
        grid=grid,
        train={"epochs": 20, "batch_size": 200, "eval_every": 10},
    )
    result = core.fit(config)
    assert len(result.history) == 2
    final = result.final
    assert {"train/rel_l2", "val/rel_l2"} <= set(final)
    assert all(np.isfinite(v) for v in final.values())
    multipliers = result.multipliers
    assert multipliers is not None
    assert multipliers.shape == (3,)
    if method == "penalty":
        assert np.all(multipliers == 0)
    else:
        # The residuals are ≥ 0, so gradient ascent only ever raises the multipliers.
        assert np.all(multipliers > 0)


def _final_rel_l2(method: str, grid: dict[str, float], weights: list[float]) -> float:
    iterations = 16_000
    config = make_trial(
        method,
        task={"name": "convection", "params": {"n_collocation": 256}},
        constraint={"kind": "pinn_residual", "weights": weights},
        grid={**grid, "seed": 0},
        # One batch per epoch: an epoch is one iteration on fresh collocation points.
        train={
            "epochs": iterations,
            "batch_size": 256,
            "eval_every": iterations,
            "optimizer": {"name": "adam", "lr": 1e-3},
        },
    )
    return core.fit(config).final["val/rel_l2"]


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Train on one thread, as the worker does: the network is tiny, and on a loaded machine
    two intra-op threads spin for each other (measured here: the claim test took 65 s on
    two threads on an idle machine, 870 s on two threads on a loaded one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_equality_constraints_beat_the_weighted_pinn_loss_on_a_reduced_budget() -> None:
    """The statistical-equality paper's convection claim at β = 30, 16k iterations of Adam
    1e-3 on 256 fresh points each (the paper: 300k on 1000). Measured on CPU (val/rel_l2 at
    16k, seeds 0/1/2): FL (dual_lr 0.01) 0.612/0.582/0.091, ALM (ρ = 1) 0.616/0.059/0.051,
    penalty 100·IC + 100·BC + PDE 0.733/0.723/0.744. Seed 0 is the closest of the three
    (ratio 0.83). At 35k iterations on 1000 points (H200) all methods reach 0.02–0.09 and the
    ordering depends on the seed; see docs/convection.md."""
    penalty = _final_rel_l2("penalty", {"penalty": 1.0}, [100.0, 100.0, 1.0])
    fl = _final_rel_l2("fl", {"dual_lr": 0.01}, [1.0, 1.0, 1.0])
    assert fl < 0.9 * penalty, (fl, penalty)


def test_a_split_is_evaluated_in_chunks_with_the_same_result(task: Convection) -> None:
    data = task.load()
    torch.manual_seed(3)
    model = task.make_model(data)
    kind = PinnResidual((1.0, 1.0, 1.0), tolerance=0.0)
    whole = task.residuals(model, data.val.x, create_graph=False)

    class Chunked(Convection):
        eval_chunk = 1000  # 25 600 grid points: 25 full chunks and one of 600

    chunked = Chunked(task.params)
    with torch.no_grad():
        values = kind.evaluate(chunked, model, torch.zeros(1), data.val)
    assert torch.allclose(values, whole, rtol=1e-5)
