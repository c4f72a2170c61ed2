"""Dual optimizers: how the dual error signal e becomes a multiplier update.

Every method hands the optimizer an error e for the observed constraints (for plain FL,
e = g − ε; RFL adds −λ/α; ALM scales by ρ). The optimizer then updates only those entries:

* ``GradientAscent``: λ ← Π[λ + η e].
* ``NuPI`` (νPI, Sohrabi et al. 2024): ξ_t = ν ξ_{t−1} + (1 − ν) e_t and
  λ ← Π[λ + η (K_I e_t + K_P (ξ_t − ξ_{t−1}))]. With K_P = 0 it is gradient ascent with
  step η K_I; with ν = 0, K_I = 1, K_P = ω it is optimistic ascent with optimism ω, which for
  equality constraints is ALM-GDA with penalty ω (Ramirez et al. 2025).

In a pack of K trials the multiplier table is (K, m), η, K_P and ν are (K, 1) tensors of
the members' values (``stack_dual_optimizers``) and ξ is (K, m); the formulas broadcast.

ξ is kept per entry and updated only when the entry is observed, so per-sample νPI sees each
sample's own error history. Cooper's dense path resets ξ to 0 after the first step while its
sparse path keeps (1 − ν)e₀ (a documented inconsistency); here both initialisations are
defined once, per entry, on the entry's first observation:

* ``init="sgd"``: ξ_{−1} = e₀, so the first update is plain ascent η K_I e₀;
* ``init="zeros"``: ξ_{−1} = 0, so the first update is η (K_I + K_P(1 − ν)) e₀.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from dualtune.core.engine.multipliers import Multipliers


class DualOptimizer(ABC):
    """Updates the observed entries of a multiplier table from an error signal."""

    hyperparameters: tuple[str, ...] = ("lr",)
    """The scalar settings a pack of trials may vary between its members."""

    def __init__(self, lr: float) -> None:
        if not lr > 0:
            raise ValueError(f"dual learning rate must be > 0, got {lr}")
        self.lr: float | Tensor = lr

    @abstractmethod
    def step_(
        self,
        multipliers: Multipliers,
        index: Tensor | None,
        error: Tensor,
        lam: Tensor | None = None,
    ) -> Tensor:
        """Apply one update to ``multipliers`` at ``index`` given error ``error``; returns
        the new (projected) values at ``index``, saving the caller a second read. ``lam``:
        the multipliers at ``index`` if the caller has read them already (saves a gather)."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        del state

    # -- packs: the state is per entry, so a member's state is its row
    def member_state_dict(self, member: int) -> dict[str, Any]:
        return {k: v[member].clone() for k, v in self.state_dict().items()}

    def load_member_state_dicts(self, states: Sequence[dict[str, Any]]) -> None:
        if states and states[0]:
            self.load_state_dict({k: torch.stack([s[k] for s in states]) for k in states[0]})


def stack_dual_optimizers(
    optimizers: Sequence[DualOptimizer], *, dtype: torch.dtype, device: torch.device | str
) -> DualOptimizer:
    """One dual optimizer for a pack: the members' hyperparameters as (K, 1) tensors and
    their per-entry state stacked into (K, m)."""
    first = optimizers[0]
    if any(type(o) is not type(first) for o in optimizers):
        raise ValueError("a pack's members must use the same dual optimizer")
    stacked = copy.copy(first)
    for name in first.hyperparameters:
        values = [float(getattr(o, name)) for o in optimizers]
        setattr(stacked, name, torch.tensor(values, dtype=dtype, device=device).reshape(-1, 1))
    states = [o.state_dict() for o in optimizers]
    if states[0]:
        for key, value in states[0].items():
            setattr(
                stacked,
                key,
                torch.empty((len(states), *value.shape), dtype=value.dtype, device=value.device),
            )
        stacked.load_member_state_dicts(states)
    return stacked


class GradientAscent(DualOptimizer):
    """Projected gradient ascent: λ ← Π[λ + η e]."""

    def step_(
        self,
        multipliers: Multipliers,
        index: Tensor | None,
        error: Tensor,
        lam: Tensor | None = None,
    ) -> Tensor:
        if lam is None:
            lam = multipliers.gather(index)
        if isinstance(self.lr, Tensor):
            return multipliers.scatter_(index, lam + self.lr * error)
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

    hyperparameters = ("lr", "kp", "nu")

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
        self.kp: float | Tensor = kp
        self.nu: float | Tensor = nu
        self.ki, self.init = ki, init
        self.xi = torch.zeros(size, device=device, dtype=dtype)
        self.seen = torch.zeros(size, device=device, dtype=torch.bool)

    def _read(self, state: Tensor, index: Tensor | None) -> Tensor:
        return state.clone() if index is None else state.index_select(-1, index)

    def _write(self, state: Tensor, index: Tensor | None, values: Tensor) -> None:
        if index is None:
            state.copy_(values)
        else:
            state.index_copy_(-1, index, values)

    def step_(
        self,
        multipliers: Multipliers,
        index: Tensor | None,
        error: Tensor,
        lam: Tensor | None = None,
    ) -> Tensor:
        error = error.to(self.xi.dtype)
        xi_prev = self._read(self.xi, index)
        if self.init == "sgd":
            seen = self._read(self.seen, index)
            xi_prev = torch.where(seen, xi_prev, error)
        xi = self.nu * xi_prev + (1.0 - self.nu) * error
        if lam is None:
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
