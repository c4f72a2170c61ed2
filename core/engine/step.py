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
* ``extragradient`` (Korpelevich 1976; a second forward and backward pass), as Cooper's
  ``ExtrapolationConstrainedOptimizer`` with ``ExtraSGD``: both players first extrapolate,
  θ_{t+½} = θ_t − step ∇_θ L(θ_t, λ_t) and λ_{t+½} = Π[λ_t + η e(g(θ_t), λ_t)], then
  update from (θ_t, λ_t) along the field at the extrapolated point:
  θ_{t+1} = θ_t − step ∇_θ L(θ_{t+½}, λ_{t+½});  λ_{t+1} = Π[λ_t + η e(g(θ_{t+½}), λ_{t+½})].
  Each optimizer steps twice per batch with its parameters put back in between, so its
  state (momentum, Adam's moments, νPI's ξ) sees both gradients, as Cooper's ``ExtraSGD``
  and ``ExtraAdam`` do; with plain SGD and gradient ascent the step is Cooper's exactly.

A re-evaluation inside a step (primal-first's, extragradient's) runs in
``keep_statistics``: the trainer passes a context that puts the model's running statistics
(BatchNorm) back afterwards, so they move once per batch under every scheme.

``restart`` (dual restarts, ``dual.restart``): after every dual update, the multiplier of an
observed inequality constraint that is strictly satisfied (d < 0, on the hard value under
proxy constraints) is set to 0, so it stops pushing the primal step once the constraint
holds, instead of decaying at the rate η·|d| (Cooper's ``dual_restarts``).

The step reads λ and forms d = g − ε once, for both updates. Under proxy constraints
(``ConstraintBatch.dual_values``) the dual step's d is formed from the hard values and the
primal step's from the differentiable surrogate. Where the method has a closed
form of its primal loss (``Method.primal_terms``) and the objective is constant (Feasible
Learning), the primal gradient is back-propagated from the constraint values with the
weights ∂L/∂g rather than through an autograd graph of the Lagrangian.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol, get_args

import torch
from torch import Tensor

from dualtune.core.engine.dual_optimizers import DualOptimizer
from dualtune.core.engine.methods import Method
from dualtune.core.engine.multipliers import Multipliers
from dualtune.core.engine.observation import ConstraintBatch, Observation
from dualtune.core.spec.sections import Scheme

SCHEMES: tuple[Scheme, ...] = get_args(Scheme)


class PrimalOptimizer(Protocol):
    """What the step needs of a primal optimizer: a torch optimizer, or a pack's
    ``StackedOptimizer``."""

    def zero_grad(self, set_to_none: bool = True) -> None: ...

    def step(self) -> object: ...


def optimized_parameters(optimizer: PrimalOptimizer) -> list[Tensor]:
    """The tensors ``optimizer`` steps: a torch optimizer's ``param_groups``, a stacked
    optimizer's ``params``."""
    groups = getattr(optimizer, "param_groups", None)
    if groups is not None:
        return [p for group in groups for p in group["params"]]
    return list(getattr(optimizer, "params"))  # noqa: B009 (the protocol does not name it)


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
        restart: dual restarts (see the module docstring).
        keep_statistics: a context in which the model's forward passes leave its running
            statistics as they were (the re-evaluations of primal-first and extragradient).
    """

    def __init__(
        self,
        method: Method,
        primal_optimizer: PrimalOptimizer,
        multipliers: Multipliers,
        dual_optimizer: DualOptimizer,
        scheme: Scheme = "alternating_dual_first",
        *,
        restart: bool = False,
        keep_statistics: Callable[[], AbstractContextManager[None]] = contextlib.nullcontext,
    ) -> None:
        if scheme not in SCHEMES:
            raise ValueError(f"unknown scheme {scheme!r}; valid schemes: {', '.join(SCHEMES)}")
        if scheme == "extragradient" and not method.stateless_dual:
            raise ValueError(
                f"{method.name} has no extragradient form: its dual update is stateful"
            )
        if restart and multipliers.equality:
            raise ValueError("dual restarts apply to inequality constraints only")
        self.method = method
        self.primal_optimizer = primal_optimizer
        self.multipliers = multipliers
        self.dual_optimizer = dual_optimizer
        self.scheme = scheme
        self.restart = restart
        self.keep_statistics = keep_statistics

    def _dual_update(
        self,
        index: Tensor | None,
        defect: Tensor,
        lam: Tensor,
        *,
        field_lam: Tensor | None = None,
    ) -> Tensor:
        """Dual step at the observed constraints (``defect`` = g − ε detached, ``lam`` their
        multipliers, already read; the error is evaluated at ``field_lam`` when given, the
        extrapolated multipliers of extragradient); returns their new multipliers."""
        error = self.method.dual_error(defect, lam if field_lam is None else field_lam, index)
        if error is None:
            return lam
        new = self.dual_optimizer.step_(self.multipliers, index, error, lam)
        if self.restart:
            new = self.multipliers.scatter_(index, new.masked_fill(defect < 0, 0.0))
        return new

    def _primal_update(
        self,
        obs: Observation,
        lam: Tensor | None,
        defect: Tensor | None,
        *,
        before_step: Callable[[], None] | None = None,
    ) -> Tensor:
        """A primal step on ``obs``'s Lagrangian at ``lam``; ``before_step`` runs between
        the backward pass and the optimizer's step (extragradient puts θ_t back there)."""
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
                if before_step is not None:
                    before_step()
                self.primal_optimizer.step()
                return terms.loss
        loss = self.method.primal_loss(obs, lam)
        self.primal_optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()  # type: ignore[no-untyped-call]
        if before_step is not None:
            before_step()
        self.primal_optimizer.step()
        return loss.detach()

    def _extragradient(
        self,
        observe: Callable[[], Observation],
        obs: Observation,
        lam: Tensor,
        defect: Tensor,
        ascent: Tensor,
    ) -> Tensor:
        """The extragradient step from (θ_t, λ_t) = (the parameters, ``lam``); returns the
        primal loss at θ_t."""
        index = obs.constraint.index
        params = optimized_parameters(self.primal_optimizer)
        start = [p.detach().clone() for p in params]
        # Extrapolation: one step of each player from (θ_t, λ_t).
        self._dual_update(index, ascent, lam)
        loss = self._primal_update(obs, lam, defect)

        def back_to_start() -> None:
            with torch.no_grad():
                for p, value in zip(params, start, strict=True):
                    p.copy_(value)

        with self.keep_statistics():
            mid = observe()
            c = mid.constraint
            lam_mid = self.multipliers.gather(c.index)
            mid_defect = self.method.defect(c.values.detach())
            mid_ascent = (
                mid_defect if c.dual_values is None else self.method.defect(c.ascent_values)
            )
            # The update: from θ_t along ∇_θ L(θ_{t+½}, λ_{t+½}) ...
            self._primal_update(mid, lam_mid, mid_defect, before_step=back_to_start)
        # ... and from λ_t along e(g(θ_{t+½}), λ_{t+½}).
        self.multipliers.scatter_(index, lam)
        self._dual_update(c.index, mid_ascent, self.multipliers.gather(c.index), field_lam=lam_mid)
        return loss

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
            elif self.scheme == "extragradient":
                loss = self._extragradient(observe, obs, lam, defect, ascent)
            else:
                loss = self._primal_update(obs, lam, defect)
                with torch.no_grad(), self.keep_statistics():
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
