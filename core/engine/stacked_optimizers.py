"""Primal optimizers for a pack: K members' parameters stacked along a leading dimension.

Each member may have its own learning rate, so torch's optimizers (one ``lr`` per parameter
group) cannot step a stacked tensor; these apply torch's own update formulas (SGD with
momentum, Adam, AdamW; ``torch.optim`` single-tensor path) with ``lr`` a (K,) tensor
broadcast over each parameter. The other settings (momentum, betas, weight decay) are
shared by a pack's members.

A member's state converts to and from the ``state_dict`` of the torch optimizer a single
trial builds for it (``member_state_dict`` / ``load_member_state_dicts``), so a member of a
pack checkpoints like an unpacked trial and either can continue from the other. Its
``param_groups`` are left ``None``: they hold only settings, which the trial's config
gives (``Trainer.load_state_dict`` fills them in), and building a torch optimizer just to
read them would import ``torch._dynamo`` (about a second) in every pack's process.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from dualtune.core.spec.sections import PrimalOptimizer as PrimalOptimizerConfig


def _per_member(values: Tensor, like: Tensor) -> Tensor:
    """A (K,) tensor shaped to broadcast over a stacked parameter (K, ...)."""
    return values.reshape(-1, *([1] * (like.ndim - 1)))


class StackedOptimizer(ABC):
    """Steps stacked parameters (K, ...) with per-member learning rates ``lr`` (K,)."""

    state_keys: tuple[str, ...] = ()
    """The per-parameter state tensors, as torch's optimizer names them."""

    def __init__(self, params: Sequence[Tensor], lr: Tensor) -> None:
        self.params = list(params)
        self.lr = lr
        self.steps = 0
        self.state: dict[str, list[Tensor]] = {
            k: [torch.zeros_like(p) for p in self.params] for k in self.state_keys
        }

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        self.steps += 1
        for i, p in enumerate(self.params):
            if p.grad is not None:
                self._update(i, p, p.grad, _per_member(self.lr, p))

    @abstractmethod
    def _update(self, i: int, p: Tensor, grad: Tensor, lr: Tensor) -> None: ...

    def _member_param_state(self, i: int, member: int) -> dict[str, Any]:
        return {k: self.state[k][i][member].clone() for k in self.state_keys}

    def member_state_dict(self, member: int) -> dict[str, Any]:
        """Member ``member``'s state as the ``state_dict`` of its single-trial torch
        optimizer, ``param_groups`` left ``None`` (the trial's config holds them)."""
        state = (
            {i: self._member_param_state(i, member) for i in range(len(self.params))}
            if self.steps
            else {}
        )
        return {"state": state, "param_groups": None}

    def load_member_state_dicts(self, states: Sequence[dict[str, Any]]) -> None:
        """Load the members' single-trial optimizer states (taken at the same step)."""
        steps = {self._steps_of(s) for s in states}
        if len(steps) != 1:
            raise ValueError(f"a pack's members must be at the same step, got {sorted(steps)}")
        self.steps = steps.pop()
        if not self.steps:
            return
        for i in range(len(self.params)):
            for k in self.state_keys:
                self.state[k][i].copy_(torch.stack([s["state"][i][k] for s in states]))

    def _steps_of(self, state: dict[str, Any]) -> int:
        del state
        return self.steps


class StackedSGD(StackedOptimizer):
    """torch.optim.SGD (dampening 0, no Nesterov): g ← g + wd·p; b ← μb + g; p ← p − lr·b."""

    def __init__(
        self, params: Sequence[Tensor], lr: Tensor, *, momentum: float, weight_decay: float
    ) -> None:
        self.state_keys = ("momentum_buffer",) if momentum else ()
        super().__init__(params, lr)
        self.momentum, self.weight_decay = momentum, weight_decay

    def _update(self, i: int, p: Tensor, grad: Tensor, lr: Tensor) -> None:
        if self.weight_decay:
            grad = grad.add(p, alpha=self.weight_decay)
        if self.momentum:
            buf = self.state["momentum_buffer"][i]
            if self.steps == 1:
                buf.copy_(grad)
            else:
                buf.mul_(self.momentum).add_(grad)
            grad = buf
        p.sub_(lr * grad)

    def _steps_of(self, state: dict[str, Any]) -> int:
        # torch's SGD keeps no step count; only whether a momentum buffer exists matters.
        entries = state["state"]
        return int(bool(entries) and "momentum_buffer" in entries.get(0, {}))


class StackedAdam(StackedOptimizer):
    """torch.optim.Adam / AdamW: m ← β₁m + (1−β₁)g; v ← β₂v + (1−β₂)g²;
    p ← p − lr/(1−β₁ᵗ) · m / (√v/√(1−β₂ᵗ) + eps); weight decay added to g (Adam) or
    p ← p(1 − lr·wd) first (AdamW)."""

    state_keys = ("exp_avg", "exp_avg_sq")

    def __init__(
        self,
        params: Sequence[Tensor],
        lr: Tensor,
        *,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        decoupled: bool = False,
    ) -> None:
        super().__init__(params, lr)
        self.betas, self.eps = betas, eps
        self.weight_decay, self.decoupled = weight_decay, decoupled

    def _update(self, i: int, p: Tensor, grad: Tensor, lr: Tensor) -> None:
        beta1, beta2 = self.betas
        if self.weight_decay:
            if self.decoupled:
                p.mul_(1 - lr * self.weight_decay)
            else:
                grad = grad.add(p, alpha=self.weight_decay)
        m, v = self.state["exp_avg"][i], self.state["exp_avg_sq"][i]
        m.lerp_(grad, 1 - beta1)
        v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step_size = lr / (1 - beta1**self.steps)
        denom = (v.sqrt() / math.sqrt(1 - beta2**self.steps)).add_(self.eps)
        p.sub_(step_size * (m / denom))

    def _member_param_state(self, i: int, member: int) -> dict[str, Any]:
        return {
            "step": torch.tensor(float(self.steps)),
            **super()._member_param_state(i, member),
        }

    def _steps_of(self, state: dict[str, Any]) -> int:
        entries = state["state"]
        return int(entries[0]["step"]) if entries else 0


def stacked_optimizer(
    config: PrimalOptimizerConfig, params: Sequence[Tensor], lr: Tensor
) -> StackedOptimizer:
    """The stacked counterpart of ``build_primal_optimizer`` for a pack's shared settings."""
    if config.name == "sgd":
        return StackedSGD(params, lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return StackedAdam(
        params, lr, weight_decay=config.weight_decay, decoupled=config.name == "adamw"
    )
