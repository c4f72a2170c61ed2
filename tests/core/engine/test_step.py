"""The primal-dual step: its closed-form primal update (``Method.primal_terms``, weights
back-propagated from the constraint values) trains bit for bit as autograd on the method's
``primal_loss`` does, under every scheme and dual optimizer."""

from typing import Any

import pytest
import torch

from dualtune.core.engine.trainer import Trainer
from tests.core.engine.conftest import make_trial

DIGITS = {"name": "digits", "params": {"hidden": [16]}}
SCHEMES = ("alternating_dual_first", "simultaneous", "alternating_primal_first", "extragradient")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def trained(
    method: str, grid: dict[str, Any], dual: dict[str, Any], autograd: bool
) -> tuple[Trainer, torch.Tensor]:
    """A trainer after one epoch and its step losses; ``autograd``: with the closed form
    switched off."""
    trainer = Trainer(
        make_trial(
            method,
            task=DIGITS,
            grid={"epsilon": 2.3, "dual_lr": 1.0, "lr": 0.05, "seed": 3, **grid},
            train={"epochs": 1, "batch_size": 128, "optimizer": {"name": "sgd", "lr": 0.05}},
            dual=dual,
        )
    )
    if autograd:
        trainer.method.primal_terms = lambda *_: None  # type: ignore[method-assign]
    losses = [trainer.step(lambda b=b: trainer._observe(b)).loss for b in trainer.batches()]
    return trainer, torch.stack(losses)


@pytest.mark.parametrize(
    ("method", "grid", "scheme"),
    [
        *(("fl", {}, scheme) for scheme in SCHEMES),
        ("rfl", {"alpha": 0.7}, "simultaneous"),
        ("alm", {"rho": 0.8}, "alternating_dual_first"),
        ("alm", {"rho": 0.0}, "alternating_primal_first"),  # the plain Lagrangian branch
    ],
)
def test_closed_form_primal_step_is_bitwise_the_autograd_step(
    method: str, grid: dict[str, Any], scheme: str
) -> None:
    # νPI drives fl's and rfl's multipliers; alm takes its own ρ-scaled ascent.
    nupi = {"name": "nupi", "kp": 0.5, "nu": 0.3}
    dual = {
        "scheme": scheme,
        "init": 0.2,
        "optimizer": nupi if method != "alm" else {"name": "ga"},
    }
    (fast, fast_losses), (reference, losses) = (
        trained(method, grid, dual, autograd) for autograd in (False, True)
    )
    for name, value in reference.model.state_dict().items():
        assert torch.equal(fast.model.state_dict()[name], value), name
    assert torch.equal(fast.multipliers.value, reference.multipliers.value)
    assert torch.equal(fast_losses, losses)
    # Not a trivial problem: some constraints are active and (where the dual moves at
    # all: ρ > 0) some multipliers were projected to 0.
    lam = reference.multipliers.value
    assert bool((lam > 0).any())
    if grid.get("rho") != 0.0:
        assert bool((lam == 0).any())


@pytest.mark.parametrize(
    ("method", "grid"), [("fl", {}), ("rfl", {"alpha": 0.7}), ("alm", {"rho": 0.8})]
)
def test_a_sample_loss_step_never_builds_the_lagrangian_graph(
    method: str, grid: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Feasible Learning's objective is 0: the step takes the closed form, not autograd."""
    trainer = Trainer(make_trial(method, task=DIGITS, grid={"epsilon": 0.4, **grid}))

    def refuse(*_: object) -> torch.Tensor:
        raise AssertionError("primal_loss differentiated")

    monkeypatch.setattr(trainer.method, "primal_loss", refuse)
    batch = next(iter(trainer.batches()))
    trainer.step(lambda: trainer._observe(batch))
