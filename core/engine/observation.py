"""What one evaluation of a constrained problem yields: objective, ERM loss, constraints."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass(frozen=True)
class ConstraintBatch:
    """Constraint values g_j(θ) observed in one step, and which multipliers they belong to.

    ``values`` stay differentiable (the primal step needs them); ``index`` selects the
    multiplier entries (for per-sample constraints, the batch's sample indices) and is
    ``None`` when every constraint of the kind is observed, in order.

    ``dual_values`` are **proxy constraints** (Cotter et al. 2019, "Optimization with
    non-differentiable constraints"; TFCO's proxy-Lagrangian, Cooper's
    ``ConstrainedMinimizationProblem`` with ``strict_violation``): the values the dual step
    ascends on, when they differ from the differentiable surrogate the primal step descends
    on, e.g. a hard rate (the share of positive decisions, which the metrics count) next to
    its sigmoid. Same shape and index as ``values``; ``None``: the dual step uses ``values``.
    """

    values: Tensor
    index: Tensor | None = None
    dual_values: Tensor | None = None

    @property
    def ascent_values(self) -> Tensor:
        """What the dual step ascends on (detached): ``dual_values`` when given, else
        ``values``."""
        chosen = self.values if self.dual_values is None else self.dual_values
        return chosen.detach()


@dataclass(frozen=True)
class Observation:
    """One forward evaluation of the problem at the current parameters.

    Attributes:
        objective: what constrained methods minimise besides the constraint terms (0 for
            Feasible Learning, ½‖w‖² for the SVM, the mean loss for other kinds).
        erm_loss: the mean training loss, which ERM minimises.
        constraint: the observed constraint values.
    """

    objective: Tensor
    erm_loss: Tensor
    constraint: ConstraintBatch
