"""Methods: the primal loss each minimises and the dual error each ascends on.

Notation: d = g − ε (the defect of each observed constraint; g ≤ ε or h = ε), λ the
multipliers of the observed constraints, v(d) = [d]₊ for inequalities and |d| for
equalities. Per-constraint terms are **summed** (as in the Feasible Learning code): for
per-sample constraints the primal Lagrangian is Σ_{i∈B} λ_i (ℓ_i − ε), not a batch mean.
The dual error e is what the dual optimizer (GA or νPI) ascends on: λ ← Π[λ + η e].

Packed trials: every formula broadcasts over a leading member dimension. ``stack_methods``
turns K methods of one class into one whose hyperparameters are (K, 1) tensors; the
observed constraint values and multipliers are then (K, B), every sum runs over the last
dimension, and the primal loss is one value per member (K,).
"""

from __future__ import annotations

import copy
import math
from abc import ABC
from collections.abc import Sequence
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor

from dualtune.core.engine.observation import Observation
from dualtune.core.engine.operands import operand, zero
from dualtune.core.engine.penalties import DefectEstimate, PenaltySchedule


class PrimalTerms(NamedTuple):
    """The primal loss of one step in closed form (see ``Method.primal_terms``)."""

    loss: Tensor
    """Its value, exactly as ``primal_loss`` computes it (no autograd graph)."""
    weights: Tensor
    """∂loss/∂g_j at the observed constraint values: what back-propagating from g with
    these weights gives the parameters is the gradient of ``primal_loss``, bit for bit."""


def plus_objective(objective: Tensor, terms: Tensor) -> Tensor:
    """objective + terms for a fresh ``terms`` (a sum the caller just formed): in place on
    it when that gives the same tensor (same dtype, ``objective`` broadcasting into it),
    which saves an allocation on a step whose ops are a few hundred values each."""
    if objective.dtype == terms.dtype and (objective.dim() == 0 or objective.shape == terms.shape):
        return terms.add_(objective)
    return objective + terms


class Method(ABC):
    """A way of training under constraints.

    Args:
        epsilon: the constraint level ε.
        equality: whether the constraints are equalities h = ε.
    """

    name: ClassVar[str]
    uses_multipliers: ClassVar[bool] = True
    hyperparameters: ClassVar[tuple[str, ...]] = ("epsilon",)
    """The scalar settings a pack of trials may vary between its members."""
    stateless_dual: ClassVar[bool] = True
    """``dual_error`` is a function of its arguments (no schedule it advances), so the
    extragradient scheme may evaluate it twice per step."""

    def __init__(self, *, epsilon: float = 0.0, equality: bool = False) -> None:
        self.epsilon = float(epsilon)
        self.equality = equality

    # -- helpers shared by the methods
    def defect(self, values: Tensor) -> Tensor:
        """d = g − ε."""
        return values - operand(self.epsilon, values)

    def violation(self, values: Tensor) -> Tensor:
        """v = [g − ε]₊ (inequality) or |h − ε| (equality)."""
        d = self.defect(values)
        return d.abs() if self.equality else d.clamp_min(0.0)

    def primal_loss(self, obs: Observation, lam: Tensor | None) -> Tensor:
        raise NotImplementedError

    def primal_terms(self, objective: Tensor, defect: Tensor, lam: Tensor) -> PrimalTerms | None:
        """``primal_loss`` and its gradient in the constraint values, without autograd, for
        an ``objective`` that carries no gradient (``defect`` = g − ε detached, ``lam`` the
        multipliers the primal step uses). The step then back-propagates the weights from g
        instead of recording and differentiating the defect, product and sum on every step.
        ``None``: no closed form; the step differentiates ``primal_loss``."""
        del objective, defect, lam
        return None

    def dual_error(
        self, defect: Tensor, lam: Tensor, index: Tensor | None = None
    ) -> Tensor | None:
        """The dual error e at the observed constraints (``index``: which they are, None
        for all); ``None`` skips the dual step."""
        del lam, index
        return defect

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        del state

    # -- packs: one member's state, and the members' states stacked (all state is scalar)
    def member_state_dict(self, member: int) -> dict[str, Any]:
        return {k: v[member].reshape(()).clone() for k, v in self.state_dict().items()}

    def load_member_state_dicts(self, states: Sequence[dict[str, Any]]) -> None:
        if states and states[0]:
            self.load_state_dict(
                {
                    k: torch.stack([s[k].reshape(()) for s in states]).reshape(-1, 1)
                    for k in states[0]
                }
            )


def stack_methods(
    methods: Sequence[Method], *, dtype: torch.dtype, device: torch.device | str = "cpu"
) -> Method:
    """One method for a pack of K members of the same class: each hyperparameter becomes a
    (K, 1) tensor of the members' values, the state (SAL's ρ and best violation) too."""
    first = methods[0]
    for m in methods:
        if type(m) is not type(first) or m.equality != first.equality:
            raise ValueError("a pack's members must use the same method and constraint type")
    stacked = copy.copy(first)
    for name in first.hyperparameters:
        values = [float(getattr(m, name)) for m in methods]
        setattr(stacked, name, torch.tensor(values, dtype=dtype, device=device).reshape(-1, 1))
    stacked.load_member_state_dicts([m.state_dict() for m in methods])
    return stacked


class ERM(Method):
    """min_θ mean_i ℓ_i(θ); constraints are ignored (but still measured)."""

    name = "erm"
    uses_multipliers = False

    def primal_loss(self, obs: Observation, lam: Tensor | None) -> Tensor:
        return obs.erm_loss


class Penalty(Method):
    """min_θ f(θ) + c · Σ_j v_j(θ), a fixed penalty coefficient c ≥ 0."""

    name = "penalty"
    uses_multipliers = False
    hyperparameters = ("epsilon", "penalty")

    def __init__(self, *, penalty: float, epsilon: float = 0.0, equality: bool = False) -> None:
        super().__init__(epsilon=epsilon, equality=equality)
        if penalty < 0:
            raise ValueError(f"penalty coefficient must be ≥ 0, got {penalty}")
        self.penalty = float(penalty)

    def primal_loss(self, obs: Observation, lam: Tensor | None) -> Tensor:
        return obs.objective + (self.penalty * self.violation(obs.constraint.values)).sum(-1)


class CSERM(Method):
    """Clamped squared ERM: min_θ f(θ) + mean_i [ℓ_i(θ) − ε]₊² (Feasible Learning baseline)."""

    name = "cserm"
    uses_multipliers = False

    def primal_loss(self, obs: Observation, lam: Tensor | None) -> Tensor:
        return obs.objective + self.violation(obs.constraint.values).pow(2).mean(-1)


class FL(Method):
    """Lagrangian gradient descent-ascent (Feasible Learning when f = 0).

    primal: min_θ f(θ) + Σ_j λ_j (g_j(θ) − ε);   dual error: e = g − ε.
    """

    name = "fl"

    def primal_loss(self, obs: Observation, lam: Tensor | None) -> Tensor:
        assert lam is not None
        values = obs.constraint.values
        return obs.objective + (lam.to(values.dtype) * self.defect(values)).sum(-1)

    def primal_terms(self, objective: Tensor, defect: Tensor, lam: Tensor) -> PrimalTerms | None:
        # ∂/∂g of Σ λ_j (g_j − ε) is λ: autograd's sum → product → difference chain passes
        # 1·λ = λ through unchanged.
        weights = lam if lam.dtype == defect.dtype else lam.to(defect.dtype)
        return PrimalTerms(plus_objective(objective, (weights * defect).sum(-1)), weights)


class RFL(FL):
    """Resilient FL: slack u ≥ 0 with cost α‖u‖²/2, eliminated (u* = λ/α).

    primal: as FL;   dual error: e = g − ε − λ/α, so λ_i → α[g_i − ε]₊ at a fixed point.
    """

    name = "rfl"
    hyperparameters = ("epsilon", "alpha")

    def __init__(self, *, alpha: float, epsilon: float = 0.0, equality: bool = False) -> None:
        super().__init__(epsilon=epsilon, equality=equality)
        if not alpha > 0:
            raise ValueError(f"RFL slack cost alpha must be > 0, got {alpha}")
        self.alpha = float(alpha)

    def dual_error(
        self, defect: Tensor, lam: Tensor, index: Tensor | None = None
    ) -> Tensor | None:
        return defect - lam / operand(self.alpha, lam)


def augmented_terms(defect: Tensor, lam: Tensor, rho: float | Tensor, *, equality: bool) -> Tensor:
    """Σ_j ψ(d_j, λ_j, ρ), the augmented-Lagrangian constraint terms.

    equality:   ψ = λd + (ρ/2)d²
    inequality: ψ = (1/(2ρ))([λ + ρd]₊² − λ²)    (Nocedal & Wright 17.65)
              = d(λ + ρd/2)   where λ + ρd ≥ 0,   −λ²/(2ρ) elsewhere.
    The piecewise form has no 1/ρ where it matters, so ρ = 0 gives the plain Lagrangian
    λd instead of Cooper's NaN (cooper#106); the other branch never depends on θ.

    Rounded as h = (ρ/2)d, a = λ + h and ψ = d·a on the smooth branch, whose side is the
    sign of a + h (= λ + ρd): a + h is also what autograd's product rule gives for ∂ψ/∂d
    there, so the closed form (``augmented_terms_and_weights``) has the branch and the
    gradient in one tensor.
    """
    if lam.dtype != defect.dtype:
        lam = lam.to(defect.dtype)
    if isinstance(rho, Tensor):
        rho_t = rho.to(defect.dtype)
        h = defect * (0.5 * rho_t)
        a = lam + h
        smooth = defect * a
        if equality:
            return smooth.sum(-1)
        flat = -(lam * lam) / (2.0 * rho_t.clamp_min(torch.finfo(defect.dtype).tiny))
        return torch.where(a + h >= 0, smooth, flat).sum(-1)
    h = defect * operand(0.5 * rho, defect)
    a = lam + h
    smooth = defect * a
    if equality or rho <= 0.0:
        # λ ≥ 0 keeps λ + 0·d ≥ 0: the smooth branch everywhere.
        return smooth.sum(-1)
    z = zero(defect)
    return torch.where(a + h >= z, smooth, _flat(lam, rho, z)).sum(-1)


def _flat(lam: Tensor, rho: float, z: Tensor) -> Tensor:
    """−λ²/(2ρ), the flat branch of ψ (scalar ρ > 0), in one op: (−1/(2ρ))·λ·λ + 0."""
    return torch.addcmul(z, lam, lam, value=-0.5 / rho)


def augmented_terms_and_weights(
    defect: Tensor, lam: Tensor, rho: float, *, equality: bool
) -> tuple[Tensor, Tensor]:
    """``augmented_terms`` (scalar ρ) and its gradient in the defect, computed the way
    autograd differentiates ``augmented_terms``: with h = (ρ/2)d, a = λ + h and ψ = d·a, the
    product rule gives a·1 + (d·1)(ρ/2) = a + h on the smooth branch and 0 on the flat one
    (where a + h < 0: the gradient is [a + h]₊)."""
    if lam.dtype != defect.dtype:
        lam = lam.to(defect.dtype)
    h = defect * operand(0.5 * rho, defect)
    a = lam + h
    smooth = defect * a
    slope = a.add_(h)  # a is spent; fresh tensors are updated in place from here on
    if equality or rho <= 0.0:
        return smooth.sum(-1), slope
    z = zero(defect)
    active = slope >= z
    terms = torch.where(active, smooth, _flat(lam, rho, z), out=smooth).sum(-1)
    # clamp_min_ is where(active, slope, 0) but keeps a NaN slope, as autograd's 0·NaN does
    return terms, slope.clamp_min_(z)


class _Scheduled(Method):
    """A method with per-constraint penalties ρ_j (``core.engine.penalties``) and, for
    constraints observed as minibatch estimates, the running defect estimate its penalty's
    slope is read from (``DefectEstimate``; ``None`` otherwise)."""

    schedule: PenaltySchedule
    estimate: DefectEstimate | None

    def _augmented(
        self, defect: Tensor, lam: Tensor, rho: float | Tensor, index: Tensor | None
    ) -> Tensor:
        """Σ_j ψ(d_j, λ_j, ρ_j) (``augmented_terms``). With an estimate, its value is the
        same but its gradient is [λ + ρ·d̄]₊·∇d, d̄ the defect estimated on the earlier
        batches (``DefectEstimate``: the batch's own d in the slope would bias it)."""
        if self.estimate is None:
            return augmented_terms(defect, lam, rho, equality=self.equality)
        with torch.no_grad():  # only the value: the gradient is the linear term's
            terms = augmented_terms(defect, lam, rho, equality=self.equality)
            slope = lam.to(defect.dtype) + self.estimate.coefficient(index, defect) * rho
            if not self.equality:
                slope = slope.clamp_min(0.0)
        linear = (slope * defect).sum(-1)
        return linear + (terms - linear.detach())

    def state_dict(self) -> dict[str, Any]:
        state = self.schedule.state_dict()
        if self.estimate is not None:
            state |= self.estimate.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.schedule.load_state_dict(state)
        if self.estimate is not None:
            self.estimate.load_state_dict(state)

    def member_state_dict(self, member: int) -> dict[str, Any]:
        state = self.schedule.member_state_dict(member)
        if self.estimate is not None:
            state |= self.estimate.member_state_dict(member)
        return state

    def load_member_state_dicts(self, states: Sequence[dict[str, Any]]) -> None:
        self.schedule = copy.copy(self.schedule)  # a pack's own, not its first member's
        self.schedule.load_member_state_dicts(states)
        if self.estimate is not None:
            self.estimate = copy.copy(self.estimate)
            self.estimate.load_member_state_dicts(states)


class ALM(_Scheduled):
    """Augmented Lagrangian, the method of multipliers with a ρ-scaled dual step.

    primal: min_θ f(θ) + Σ_j ψ(g_j − ε, λ_j, ρ_j);   dual error: e_j = ρ_j(g_j − ε),
    i.e. λ_j ← Π[λ_j + η ρ_j (g_j − ε)]: η = 1 is the classical multiplier update
    λ ← [λ + ρg]₊. With ``rho_growth`` > 1 each constraint's ρ_j grows by that factor (up to
    ``rho_max``) whenever its violation is above its running average (``PenaltySchedule``:
    the penalty rises where the constraint does not decrease, as Nocedal & Wright's
    Alg. 17.4 and Cooper's multiplicative penalty updater); the multiplier step uses ρ_j
    before the growth. ``rho_growth`` = 1 (the default) keeps ρ fixed: ALM-GDA. With
    ``batch_estimates`` (minibatch estimates of population constraints) the penalty's slope
    is read from the earlier batches' defect estimate (``_Scheduled._augmented``).
    """

    name = "alm"
    hyperparameters = ("epsilon", "rho", "rho_growth", "rho_max")

    def __init__(
        self,
        *,
        rho: float,
        rho_growth: float = 1.0,
        rho_max: float = math.inf,
        size: int = 1,
        epsilon: float = 0.0,
        equality: bool = False,
        batch_estimates: bool = False,
    ) -> None:
        super().__init__(epsilon=epsilon, equality=equality)
        if not (rho >= 0 and math.isfinite(rho)):
            raise ValueError(f"ALM penalty rho must be a finite number ≥ 0, got {rho}")
        if rho_growth < 1:
            raise ValueError(f"ALM rho_growth must be ≥ 1, got {rho_growth}")
        if rho_growth > 1 and not rho > 0:
            raise ValueError("ALM rho_growth > 1 grows ρ by a factor: it needs rho > 0")
        if rho_growth > 1 and rho_max < rho:
            raise ValueError(f"ALM rho_max ({rho_max}) must be ≥ rho ({rho})")
        self.rho: float | Tensor = float(rho)
        """A pack sets its members' (K, 1) values (``stack_methods``)."""
        self.rho_growth: float | Tensor = float(rho_growth)
        self.rho_max: float | Tensor = float(rho_max if rho_growth > 1 else max(rho_max, rho))
        self.schedule = PenaltySchedule(rho, size)
        """Per-constraint ρ_j; read only while ``scheduled`` (it stays at ρ otherwise)."""
        self.estimate = DefectEstimate(size) if batch_estimates else None

    @property
    def scheduled(self) -> bool:
        """Whether ρ grows (for a pack: whether any member's does)."""
        growth = self.rho_growth
        return bool((growth > 1).any()) if isinstance(growth, Tensor) else growth > 1

    @property
    def stateless_dual(self) -> bool:  # type: ignore[override]
        return not self.scheduled

    def _rho(self, index: Tensor | None, like: Tensor) -> float | Tensor:
        return self.schedule.read(index, like) if self.scheduled else self.rho

    def primal_loss(self, obs: Observation, lam: Tensor | None) -> Tensor:
        assert lam is not None
        defect = self.defect(obs.constraint.values)
        rho = self._rho(obs.constraint.index, defect)
        return obs.objective + self._augmented(defect, lam, rho, obs.constraint.index)

    def primal_terms(self, objective: Tensor, defect: Tensor, lam: Tensor) -> PrimalTerms | None:
        if isinstance(self.rho, Tensor) or self.scheduled or self.estimate is not None:
            # a pack's (K, 1) ρ, per-constraint ρ_j or an estimated slope: differentiate
            # primal_loss
            return None
        terms, weights = augmented_terms_and_weights(defect, lam, self.rho, equality=self.equality)
        return PrimalTerms(plus_objective(objective, terms), weights)

    def dual_error(
        self, defect: Tensor, lam: Tensor, index: Tensor | None = None
    ) -> Tensor | None:
        if not self.scheduled:
            return operand(self.rho, defect) * defect
        error = self.schedule.read(index, defect) * defect
        v = defect.abs() if self.equality else defect.clamp_min(0.0)
        self.schedule.observe(index, v, self.rho_growth, self.rho_max)
        return error


class SAL(_Scheduled):
    """Stochastic augmented Lagrangian with the SAL penalty schedule (Lavado et al. 2023),
    per constraint, on a smoothed violation.

    primal: min_θ f(θ) + Σ_j ψ(g_j − ε, λ_j, ρ_j) (the ALM terms with each constraint's ρ_j).
    At each observation of constraint j, with v_j = [g_j − ε]₊ (|g_j − ε| for equalities)
    and v̄_j the exponential average of its earlier observations (``PenaltySchedule``):
      if v_j ≤ v̄_j:  λ_j ← Π[λ_j + ρ_j (g_j − ε)]          (accept: multiplier update)
      else:          ρ_j ← min(ρ_j · rho_growth, rho_max)   (the penalty grows)
    "The violation did not increase" is read on the smoothed estimate: v_j ≤ v̄_j is v̄ not
    increasing. The released SAL code compares one step's whole violation norm with the
    best norm so far; under minibatch constraints that record can only fall, so one lucky
    batch froze λ (measured on digits' ``class_loss``, ε = 0.1: multiplier updates per epoch
    12, 8, 4, 1, 2, 2, 0, 1, 1, 0, 0, 0), and a kind that observes a different subset of its
    constraints per batch (``class_loss``) made step-to-step norms incomparable. Per
    constraint, each is compared only with its own history. The code replaces λ by ρc
    instead of adding; we keep the additive method-of-multipliers update, which keeps the
    multipliers' memory. The dual step is taken with step size 1 (the update above).
    """

    name = "sal"
    hyperparameters = ("epsilon", "rho_growth", "rho_max")
    stateless_dual = False

    def __init__(
        self,
        *,
        rho: float,
        rho_growth: float,
        rho_max: float,
        size: int = 1,
        epsilon: float = 0.0,
        equality: bool = False,
        batch_estimates: bool = False,
    ) -> None:
        super().__init__(epsilon=epsilon, equality=equality)
        if not (rho > 0 and math.isfinite(rho)):
            raise ValueError(f"SAL penalty rho must be a finite number > 0, got {rho}")
        if rho_growth < 1:
            raise ValueError(f"SAL rho_growth must be ≥ 1, got {rho_growth}")
        if rho_max < rho:
            raise ValueError(f"SAL rho_max ({rho_max}) must be ≥ rho ({rho})")
        self.rho_growth: float | Tensor = float(rho_growth)
        self.rho_max: float | Tensor = float(rho_max)
        self.schedule = PenaltySchedule(rho, size)
        self.estimate = DefectEstimate(size) if batch_estimates else None

    @property
    def rho(self) -> Tensor:
        """Every constraint's current ρ_j."""
        return self.schedule.rho

    def primal_loss(self, obs: Observation, lam: Tensor | None) -> Tensor:
        assert lam is not None
        defect = self.defect(obs.constraint.values)
        rho = self.schedule.read(obs.constraint.index, defect)
        return obs.objective + self._augmented(defect, lam, rho, obs.constraint.index)

    def dual_error(
        self, defect: Tensor, lam: Tensor, index: Tensor | None = None
    ) -> Tensor | None:
        rho = self.schedule.read(index, defect)
        v = defect.abs() if self.equality else defect.clamp_min(0.0)
        accept = self.schedule.observe(index, v, self.rho_growth, self.rho_max)
        return torch.where(accept, rho * defect, torch.zeros_like(defect))


METHOD_CLASSES: dict[str, type[Method]] = {
    m.name: m for m in (ERM, Penalty, CSERM, FL, RFL, ALM, SAL)
}
