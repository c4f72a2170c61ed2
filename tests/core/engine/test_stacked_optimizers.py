"""The stacked primal optimizers step each member exactly as torch's optimizer steps that
member's parameters alone, with the member's own learning rate."""

from collections.abc import Callable

import pytest
import torch

from dualtune.core.engine.stacked_optimizers import StackedAdam, StackedOptimizer, StackedSGD

LRS = [0.1, 0.01, 0.003]


def quadratic_grads(seed: int, shape: tuple[int, ...], steps: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(steps)]


@pytest.mark.parametrize(
    ("make_stacked", "make_torch"),
    [
        (
            lambda p, lr: StackedSGD(p, lr, momentum=0.9, weight_decay=0.01),
            lambda p, lr: torch.optim.SGD(p, lr=lr, momentum=0.9, weight_decay=0.01),
        ),
        (
            lambda p, lr: StackedSGD(p, lr, momentum=0.0, weight_decay=0.0),
            lambda p, lr: torch.optim.SGD(p, lr=lr),
        ),
        (
            lambda p, lr: StackedAdam(p, lr, weight_decay=0.01),
            lambda p, lr: torch.optim.Adam(p, lr=lr, weight_decay=0.01),
        ),
        (
            lambda p, lr: StackedAdam(p, lr, weight_decay=0.05, decoupled=True),
            lambda p, lr: torch.optim.AdamW(p, lr=lr, weight_decay=0.05),
        ),
    ],
    ids=["sgd-momentum-wd", "sgd", "adam-wd", "adamw"],
)
def test_each_member_steps_as_torchs_optimizer_with_its_own_lr(
    make_stacked: Callable[[list[torch.Tensor], torch.Tensor], StackedOptimizer],
    make_torch: Callable[[list[torch.Tensor], float], torch.optim.Optimizer],
) -> None:
    start = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    stacked = start.unsqueeze(0).repeat(len(LRS), 1, 1).requires_grad_()
    opt = make_stacked([stacked], torch.tensor(LRS, dtype=torch.float64))
    singles = [start.clone().requires_grad_() for _ in LRS]
    torch_opts = [make_torch([p], lr) for p, lr in zip(singles, LRS, strict=True)]
    for step, grad in enumerate(quadratic_grads(2, (4, 3), 6)):
        # Different members see different gradients: the gradient of 0.5‖p − target‖²
        # plus a per-step perturbation.
        stacked.grad = stacked.detach() - grad + step
        opt.step()
        for p, o in zip(singles, torch_opts, strict=True):
            p.grad = p.detach() - grad + step
            o.step()
    for member, p in enumerate(singles):
        torch.testing.assert_close(stacked[member].detach(), p.detach(), rtol=1e-12, atol=1e-12)


def test_a_members_state_round_trips_through_torchs_optimizer() -> None:
    start = torch.randn(5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    stacked = start.unsqueeze(0).repeat(2, 1).requires_grad_()
    opt = StackedAdam([stacked], torch.tensor([0.1, 0.01], dtype=torch.float64))
    for _ in range(3):
        stacked.grad = stacked.detach().clone()
        opt.step()

    single = stacked[1].detach().clone().requires_grad_()
    torch_opt = torch.optim.Adam([single], lr=0.01)
    member = opt.member_state_dict(1)
    assert member["param_groups"] is None  # settings come from the trial's config
    groups = torch_opt.state_dict()["param_groups"]
    torch_opt.load_state_dict({**member, "param_groups": groups})  # torch's own format
    single.grad = single.detach().clone()
    torch_opt.step()
    stacked.grad = stacked.detach().clone()
    opt.step()
    torch.testing.assert_close(stacked[1].detach(), single.detach(), rtol=1e-12, atol=1e-12)

    again = StackedAdam([stacked.detach().clone()], torch.tensor([0.1, 0.01], dtype=torch.float64))
    again.load_member_state_dicts([opt.member_state_dict(i) for i in range(2)])
    assert again.steps == opt.steps == 4
    torch.testing.assert_close(again.state["exp_avg"][0], opt.state["exp_avg"][0])
