"""Dual optimizers against hand-written recursions (independent of the implementation)."""

import pytest
import torch

from dualtune.core.engine.dual_optimizers import GradientAscent, NuPI
from dualtune.core.engine.multipliers import Multipliers

F64 = torch.float64


def errors(steps: int, size: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(size, generator=g, dtype=F64) for _ in range(steps)]


def test_gradient_ascent_projects_at_every_step() -> None:
    lam = Multipliers(3, dtype=torch.float64)
    ga = GradientAscent(lr=0.5)
    expected = torch.zeros(3, dtype=F64)
    for e in errors(20, 3):
        ga.step_(lam, None, e)
        expected = (expected + 0.5 * e).clamp_min(0)
        assert torch.allclose(lam.value, expected, atol=0, rtol=0)


@pytest.mark.parametrize(("alpha", "beta"), [(0.01, 0.9), (0.1, 0.5)])
def test_nupi_with_negative_kp_is_heavy_ball(alpha: float, beta: float) -> None:
    """νPI(ν=β, K_I=α/(1−β), K_P=−αβ/(1−β)², zeros init) ≡ heavy ball v←βv+e, λ←λ+αv."""
    lam = Multipliers(4, equality=True, dtype=torch.float64)
    opt = NuPI(
        1.0,
        4,
        kp=-alpha * beta / (1 - beta) ** 2,
        ki=alpha / (1 - beta),
        nu=beta,
        init="zeros",
        dtype=torch.float64,
    )
    ref, velocity = torch.zeros(4, dtype=F64), torch.zeros(4, dtype=F64)
    for e in errors(300, 4, seed=1):
        opt.step_(lam, None, e)
        velocity = beta * velocity + e
        ref = ref + alpha * velocity
    assert torch.allclose(lam.value, ref, atol=1e-12, rtol=0)


def test_nupi_with_unit_gains_is_optimistic_gradient() -> None:
    """K_P = K_I = 1, ν = 0: λ_{t+1} = λ_t + η(2e_t − e_{t−1}) (with e_{−1} = e_0, sgd init)."""
    lam = Multipliers(3, equality=True, dtype=torch.float64)
    opt = NuPI(0.1, 3, kp=1.0, ki=1.0, nu=0.0, dtype=torch.float64)
    ref, previous = torch.zeros(3, dtype=F64), None
    for e in errors(50, 3, seed=2):
        opt.step_(lam, None, e)
        previous = e if previous is None else previous
        ref = ref + 0.1 * (2 * e - previous)
        previous = e
    assert torch.allclose(lam.value, ref, atol=1e-13, rtol=0)


def test_nupi_keeps_error_history_per_entry_under_indexed_updates() -> None:
    """Each entry's ξ advances only when that entry is observed."""
    lam = Multipliers(4, equality=True, dtype=torch.float64)
    opt = NuPI(1.0, 4, kp=2.0, ki=1.0, nu=0.5, dtype=torch.float64)
    dense = {
        i: (
            Multipliers(1, equality=True, dtype=torch.float64),
            NuPI(1.0, 1, kp=2.0, ki=1.0, nu=0.5, dtype=torch.float64),
        )
        for i in range(4)
    }
    g = torch.Generator().manual_seed(3)
    for _ in range(40):
        index = torch.randperm(4, generator=g)[:2]
        e = torch.randn(2, generator=g, dtype=F64)
        opt.step_(lam, index, e)
        for j, i in enumerate(index.tolist()):
            table, single = dense[i]
            single.step_(table, None, e[j : j + 1])
    for i, (table, _) in dense.items():
        assert lam.value[i].item() == pytest.approx(table.value.item(), abs=1e-12)


def test_nupi_first_step_depends_on_init() -> None:
    e = torch.tensor([1.0], dtype=F64)
    for init, expected in (("sgd", 0.1), ("zeros", 0.1 * (1 + 3.0 * 0.5))):
        lam = Multipliers(1, dtype=torch.float64)
        NuPI(0.1, 1, kp=3.0, ki=1.0, nu=0.5, init=init, dtype=torch.float64).step_(lam, None, e)
        assert lam.value.item() == pytest.approx(expected)


def test_state_round_trip_continues_identically() -> None:
    def run(split: bool) -> torch.Tensor:
        lam = Multipliers(3, dtype=torch.float64)
        opt = NuPI(0.3, 3, kp=1.5, nu=0.2, dtype=torch.float64)
        es = errors(10, 3, seed=4)
        for e in es[:5]:
            opt.step_(lam, None, e)
        if split:
            lam2 = Multipliers(3, dtype=torch.float64)
            opt2 = NuPI(0.3, 3, kp=1.5, nu=0.2, dtype=torch.float64)
            lam2.load_state_dict(lam.state_dict())
            opt2.load_state_dict(opt.state_dict())
            lam, opt = lam2, opt2
        for e in es[5:]:
            opt.step_(lam, None, e)
        return lam.value

    assert torch.equal(run(False), run(True))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ki": 0.0}, "ki must be > 0"),
        ({"nu": 1.0}, r"ν must be in \[0, 1\)"),
        ({"init": "ones"}, "init must be"),
    ],
)
def test_nupi_rejects_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        NuPI(0.1, 2, **kwargs)  # type: ignore[arg-type]


def test_dual_lr_must_be_positive() -> None:
    with pytest.raises(ValueError, match="dual learning rate"):
        GradientAscent(lr=0.0)


@pytest.mark.parametrize(
    "make",
    [lambda: GradientAscent(lr=0.3), lambda: NuPI(0.3, 6, kp=0.5, nu=0.4, dtype=F64)],
    ids=["ga", "nupi"],
)
def test_multipliers_the_caller_already_read_give_the_same_update(make: object) -> None:
    index = torch.tensor([4, 1, 3])
    tables = [Multipliers(6, dtype=F64, init=0.5) for _ in range(2)]
    optimizers = [make(), make()]  # type: ignore[operator]
    for e in errors(5, 3):
        read = tables[1].gather(index)
        assert torch.equal(
            optimizers[0].step_(tables[0], index, e),
            optimizers[1].step_(tables[1], index, e, read),
        )
    assert torch.equal(tables[0].value, tables[1].value)
