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
    """

    values: Tensor
    index: Tensor | None = None


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
