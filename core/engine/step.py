"""One primal-dual step under the three update schemes.

``PrimalDualStep`` is the engine's only update loop body; the trainer calls it per batch and
the verification tests call it on their own problems (cvxpy toys, the nonconvex ALM toy, the
Cooper peer check), so what is checked is what trains.

Schemes (λ_t the multipliers, θ_t the parameters, one observation O(θ) = (f, g)):

* ``alternating_dual_first`` (default; one forward pass):
  λ_{t+1} = Π[λ_t + η e(g(θ_t), λ_t)];  θ_{t+1} = θ_t − step ∇_θ L(θ_t, λ_{t+1})
* ``simultaneous`` (one forward pass):
  θ_{t+1} = θ_t − step ∇_θ L(θ_t, λ_t);  λ_{t+1} = Π[λ_t + η e(g(θ_t), λ_t)]
* ``alternating_primal_first`` (a second, gradient-free evaluation at θ_{t+1}):
  θ_{t+1} = θ_t − step ∇_θ L(θ_t, λ_t);  λ_{t+1} = Π[λ_t + η e(g(θ_{t+1}), λ_t)]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

import torch
from torch import Tensor

from dualtune.core.engine.dual_optimizers import DualOptimizer
from dualtune.core.engine.methods import Method
from dualtune.core.engine.multipliers import Multipliers
from dualtune.core.engine.observation import ConstraintBatch, Observation

Scheme = Literal["alternating_dual_first", "alternating_primal_first", "simultaneous"]
SCHEMES: tuple[Scheme, ...] = (
    "alternating_dual_first",
    "alternating_primal_first",
    "simultaneous",
)


class PrimalOptimizer(Protocol):
    """What the step needs of a primal optimizer: a torch optimizer, or a pack's
    ``StackedOptimizer``."""

    def zero_grad(self, set_to_none: bool = True) -> None: ...

    def step(self) -> object: ...


@dataclass(frozen=True)
class StepOutput:
    loss: Tensor
    """The primal loss that was minimised (detached): a scalar, or one per member (K,)
    for a pack, whose members' losses are summed for the backward pass (their parameters
    are disjoint, so each member gets its own gradient)."""
    observation: Observation
    """The observation at θ_t (values detached)."""


class PrimalDualStep:
    """Applies one step of ``method`` with the given optimizers and scheme.

    Args:
        method: the method (its primal loss and dual error).
        primal_optimizer: a torch optimizer over the model parameters.
        multipliers: the multiplier table of the constraint kind.
        dual_optimizer: the dual update rule (unused by methods without multipliers).
        scheme: the update order.
    """

    def __init__(
        self,
        method: Method,
        primal_optimizer: PrimalOptimizer,
        multipliers: Multipliers,
        dual_optimizer: DualOptimizer,
        scheme: Scheme = "alternating_dual_first",
    ) -> None:
        if scheme not in SCHEMES:
            raise ValueError(f"unknown scheme {scheme!r}; valid schemes: {', '.join(SCHEMES)}")
        self.method = method
        self.primal_optimizer = primal_optimizer
        self.multipliers = multipliers
        self.dual_optimizer = dual_optimizer
        self.scheme = scheme

    def _dual_update(self, constraint: ConstraintBatch, lam: Tensor | None = None) -> Tensor:
        """Dual step at the observed constraints; returns their new multipliers."""
        values = constraint.values.detach()
        if lam is None:
            lam = self.multipliers.gather(constraint.index)
        error = self.method.dual_error(self.method.defect(values), lam)
        if error is None:
            return lam
        return self.dual_optimizer.step_(self.multipliers, constraint.index, error)

    def _primal_update(self, obs: Observation, lam: Tensor | None) -> Tensor:
        loss = self.method.primal_loss(obs, lam)
        self.primal_optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()  # type: ignore[no-untyped-call]
        self.primal_optimizer.step()
        return loss.detach()

    def __call__(
        self,
        observe: Callable[[], Observation],
        *,
        observe_constraint: Callable[[], ConstraintBatch] | None = None,
    ) -> StepOutput:
        """One step. ``observe`` evaluates the problem at the current parameters (with
        gradients); ``observe_constraint`` re-evaluates only the constraints, for the
        primal-first scheme (defaults to ``observe().constraint``)."""
        obs = observe()
        uses_lambda = self.method.uses_multipliers
        index = obs.constraint.index
        if not uses_lambda:
            loss = self._primal_update(obs, None)
        elif self.scheme == "alternating_dual_first":
            loss = self._primal_update(obs, self._dual_update(obs.constraint))
        elif self.scheme == "simultaneous":
            lam = self.multipliers.gather(index)
            loss = self._primal_update(obs, lam)
            self._dual_update(obs.constraint, lam)
        else:
            loss = self._primal_update(obs, self.multipliers.gather(index))
            with torch.no_grad():
                after = observe_constraint() if observe_constraint else observe().constraint
            self._dual_update(after)
        detached = Observation(
            obs.objective.detach(),
            obs.erm_loss.detach(),
            ConstraintBatch(obs.constraint.values.detach(), index),
        )
        return StepOutput(loss, detached)
