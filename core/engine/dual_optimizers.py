"""Dual optimizers: how the dual error signal e becomes a multiplier update.

Every method hands the optimizer an error e for the observed constraints (for plain FL,
e = g − ε; RFL adds −λ/α; ALM scales by ρ). The optimizer then updates only those entries:

* ``GradientAscent``: λ ← Π[λ + η e].
* ``NuPI`` (νPI, Sohrabi et al. 2024): ξ_t = ν ξ_{t−1} + (1 − ν) e_t and
  λ ← Π[λ + η (K_I e_t + K_P (ξ_t − ξ_{t−1}))]. With K_P = 0 it is gradient ascent with
  step η K_I; with ν = 0, K_I = 1, K_P = ω it is optimistic ascent with optimism ω, which for
  equality constraints is ALM-GDA with penalty ω (Ramirez et al. 2025).

ξ is kept per entry and updated only when the entry is observed, so per-sample νPI sees each
sample's own error history. Cooper's dense path resets ξ to 0 after the first step while its
sparse path keeps (1 − ν)e₀ (a documented inconsistency); here both initialisations are
defined once, per entry, on the entry's first observation:

* ``init="sgd"``: ξ_{−1} = e₀, so the first update is plain ascent η K_I e₀;
* ``init="zeros"``: ξ_{−1} = 0, so the first update is η (K_I + K_P(1 − ν)) e₀.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Literal

import torch
from torch import Tensor

from core.engine.multipliers import Multipliers


class DualOptimizer(ABC):
    """Updates the observed entries of a multiplier table from an error signal."""

    def __init__(self, lr: float) -> None:
        if not lr > 0:
            raise ValueError(f"dual learning rate must be > 0, got {lr}")
        self.lr = lr

    @abstractmethod
    def step_(self, multipliers: Multipliers, index: Tensor | None, error: Tensor) -> Tensor:
        """Apply one update to ``multipliers`` at ``index`` given error ``error``; returns
        the new (projected) values at ``index``, saving the caller a second read."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        del state


class GradientAscent(DualOptimizer):
    """Projected gradient ascent: λ ← Π[λ + η e]."""

    def step_(self, multipliers: Multipliers, index: Tensor | None, error: Tensor) -> Tensor:
        lam = multipliers.gather(index)
        return multipliers.scatter_(index, torch.add(lam, error, alpha=self.lr))


class NuPI(DualOptimizer):
    """νPI: ξ_t = ν ξ_{t−1} + (1−ν) e_t;  λ ← Π[λ + η (K_I e_t + K_P (ξ_t − ξ_{t−1}))].

    Args:
        lr: η.
        size: number of multipliers (ξ is stored per entry).
        kp: proportional gain K_P (any sign; negative K_P recovers heavy-ball momentum).
        ki: integral gain K_I > 0.
        nu: EMA coefficient ν ∈ [0, 1).
        init: ``"sgd"`` (ξ_{−1} = e₀, the default) or ``"zeros"`` (ξ_{−1} = 0).
    """

    def __init__(
        self,
        lr: float,
        size: int,
        *,
        kp: float = 0.0,
        ki: float = 1.0,
        nu: float = 0.0,
        init: Literal["sgd", "zeros"] = "sgd",
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__(lr)
        if not ki > 0:
            raise ValueError(f"νPI integral gain ki must be > 0, got {ki}")
        if not 0.0 <= nu < 1.0:
            raise ValueError(f"νPI ν must be in [0, 1), got {nu}")
        if init not in ("sgd", "zeros"):
            raise ValueError(f"νPI init must be 'sgd' or 'zeros', got {init!r}")
        self.kp, self.ki, self.nu, self.init = kp, ki, nu, init
        self.xi = torch.zeros(size, device=device, dtype=dtype)
        self.seen = torch.zeros(size, device=device, dtype=torch.bool)

    def _read(self, state: Tensor, index: Tensor | None) -> Tensor:
        return state.clone() if index is None else state.index_select(0, index)

    def _write(self, state: Tensor, index: Tensor | None, values: Tensor) -> None:
        if index is None:
            state.copy_(values)
        else:
            state.index_copy_(0, index, values)

    def step_(self, multipliers: Multipliers, index: Tensor | None, error: Tensor) -> Tensor:
        error = error.to(self.xi.dtype)
        xi_prev = self._read(self.xi, index)
        if self.init == "sgd":
            seen = self._read(self.seen, index)
            xi_prev = torch.where(seen, xi_prev, error)
        xi = self.nu * xi_prev + (1.0 - self.nu) * error
        lam = multipliers.gather(index)
        new = multipliers.scatter_(
            index, lam + self.lr * (self.ki * error + self.kp * (xi - xi_prev))
        )
        self._write(self.xi, index, xi)
        self._write(self.seen, index, torch.ones_like(xi, dtype=torch.bool))
        return new

    def state_dict(self) -> dict[str, Any]:
        return {"xi": self.xi.clone(), "seen": self.seen.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.xi.copy_(state["xi"])
        self.seen.copy_(state["seen"])
