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

The step reads λ and forms d = g − ε once, for both updates. Under proxy constraints
(``ConstraintBatch.dual_values``) the dual step's d is formed from the hard values and the
primal step's from the differentiable surrogate. Where the method has a closed
form of its primal loss (``Method.primal_terms``) and the objective is constant (Feasible
Learning), the primal gradient is back-propagated from the constraint values with the
weights ∂L/∂g rather than through an autograd graph of the Lagrangian.
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

    def _dual_update(self, index: Tensor | None, defect: Tensor, lam: Tensor) -> Tensor:
        """Dual step at the observed constraints (``defect`` = g − ε detached, ``lam`` their
        multipliers, already read); returns their new multipliers."""
        error = self.method.dual_error(defect, lam)
        if error is None:
            return lam
        return self.dual_optimizer.step_(self.multipliers, index, error, lam)

    def _primal_update(
        self, obs: Observation, lam: Tensor | None, defect: Tensor | None
    ) -> Tensor:
        values = obs.constraint.values
        if (
            lam is not None
            and defect is not None
            and values.requires_grad
            and not obs.objective.requires_grad
        ):
            terms = self.method.primal_terms(obs.objective, defect, lam)
            if terms is not None:
                # With a constant objective ∂L/∂θ = Σ_j ∂L/∂g_j · ∂g_j/∂θ: back-propagating
                # the method's closed-form ∂L/∂g from g gives autograd's gradient of
                # primal_loss bit for bit, without recording and differentiating the
                # defect, product and sum on every step (most of what a constrained step
                # added to ERM's on a small model).
                self.primal_optimizer.zero_grad(set_to_none=True)
                torch.autograd.backward(values, terms.weights)
                self.primal_optimizer.step()
                return terms.loss
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
        constraint = obs.constraint
        index = constraint.index
        values = constraint.values.detach()
        if not self.method.uses_multipliers:
            loss = self._primal_update(obs, None, None)
        else:
            # λ_t is read and d = g(θ_t) − ε formed once, for both the dual and the primal
            # update; under proxy constraints the dual step's defect is the hard one.
            lam = self.multipliers.gather(index)
            defect = self.method.defect(values)
            ascent = (
                defect
                if constraint.dual_values is None
                else self.method.defect(constraint.ascent_values)
            )
            if self.scheme == "alternating_dual_first":
                lam = self._dual_update(index, ascent, lam)
                loss = self._primal_update(obs, lam, defect)
            elif self.scheme == "simultaneous":
                loss = self._primal_update(obs, lam, defect)
                self._dual_update(index, ascent, lam)
            else:
                loss = self._primal_update(obs, lam, defect)
                with torch.no_grad():
                    after = observe_constraint() if observe_constraint else observe().constraint
                self._dual_update(
                    after.index,
                    self.method.defect(after.ascent_values),
                    self.multipliers.gather(after.index),
                )
        dual = None if constraint.dual_values is None else constraint.ascent_values
        detached = Observation(
            obs.objective.detach(), obs.erm_loss.detach(), ConstraintBatch(values, index, dual)
        )
        return StepOutput(loss, detached)
