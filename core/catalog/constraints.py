"""Constraint kinds: what is constrained, and how many multipliers it needs."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ConstraintKindInfo:
    name: str
    summary: str
    multipliers: str
    """One multiplier per what (sample, group, class, layer)."""
    needs_classification: bool = False
    needs_group_attribute: bool = False
    allows_equality: bool = False
    extra_metrics: tuple[str, ...] = ()
    """Split metrics the kind reports beyond §3.4 (e.g. ``descent_frac``)."""
    generic: bool = True
    """Applies to any task that meets the flags above; a task-specific kind applies only to
    the tasks that list it in ``TaskInfo.constraint_kinds``."""


CONSTRAINT_KINDS: dict[str, ConstraintKindInfo] = {
    k.name: k
    for k in (
        ConstraintKindInfo(
            "sample_loss",
            "every training sample's loss: ℓ_i(θ) ≤ ε (Feasible Learning)",
            "one per training sample",
        ),
        ConstraintKindInfo(
            "group_rate",
            "per-group positive rate − overall rate = 0, or |·| ≤ ε (demographic parity)",
            "one per group (two per group for |·| ≤ ε)",
            needs_classification=True,
            needs_group_attribute=True,
            allows_equality=True,
        ),
        ConstraintKindInfo(
            "class_loss",
            "per-class mean loss ≤ ε (or = ε)",
            "one per class",
            needs_classification=True,
            allows_equality=True,
        ),
        ConstraintKindInfo(
            "weight_norm",
            "per-layer squared Frobenius norm ‖W_l‖²_F ≤ ε",
            "one per weight matrix",
        ),
        ConstraintKindInfo(
            "orthogonality",
            "per-layer ‖W_l W_lᵀ − I‖_F ≤ ε (Gram of the smaller side)",
            "one per weight matrix",
        ),
        ConstraintKindInfo(
            "layer_descent",
            "layerwise descent: the mean loss of the readout after block l+1 is at most "
            "(1 − ε) times that after block l (needs a model with a readout per block)",
            "one per block transition",
            needs_classification=True,
            extra_metrics=("descent_frac", "noisy_accuracy"),
            generic=False,
        ),
        ConstraintKindInfo(
            "pinn_residual",
            "a PDE task's mean squared residuals (initial condition, boundary condition, "
            "PDE), each weighted: w_k·mean(res_k²) = 0",
            "one per residual (IC, BC, PDE)",
            allows_equality=True,
            generic=False,
        ),
    )
}
