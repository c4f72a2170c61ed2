"""The built-in constraint kinds' descriptions, registered like any plugin's: by the
``dualtune.constraints`` entry points in the project's pyproject.toml (one per constant)."""

from __future__ import annotations

from dualtune.core.catalog.constraints import ConstraintKindInfo

SAMPLE_LOSS = ConstraintKindInfo(
    "sample_loss",
    "every training sample's loss: ℓ_i(θ) ≤ ε (Feasible Learning)",
    "one per training sample",
)


GROUP_RATE = ConstraintKindInfo(
    "group_rate",
    "per-group positive rate − overall rate = 0, or |·| ≤ ε (demographic parity)",
    "one per group (two per group for |·| ≤ ε)",
    needs_classification=True,
    needs_group_attribute=True,
    allows_equality=True,
)


CLASS_LOSS = ConstraintKindInfo(
    "class_loss",
    "per-class mean loss ≤ ε (or = ε)",
    "one per class",
    needs_classification=True,
    allows_equality=True,
)


WEIGHT_NORM = ConstraintKindInfo(
    "weight_norm",
    "per-layer squared Frobenius norm ‖W_l‖²_F ≤ ε",
    "one per weight matrix",
)


ORTHOGONALITY = ConstraintKindInfo(
    "orthogonality",
    "per-layer ‖W_l W_lᵀ − I‖_F ≤ ε (Gram of the smaller side)",
    "one per weight matrix",
)


LAYER_DESCENT = ConstraintKindInfo(
    "layer_descent",
    "layerwise descent: the mean loss of the readout after block l+1 is at most "
    "(1 − ε) times that after block l (needs a model with a readout per block)",
    "one per block transition",
    needs_classification=True,
    extra_metrics=("descent_frac", "noisy_accuracy"),
    generic=False,
)


PINN_RESIDUAL = ConstraintKindInfo(
    "pinn_residual",
    "a PDE task's mean squared residuals (initial condition, boundary condition, "
    "PDE), each weighted: w_k·mean(res_k²) = 0",
    "one per residual (IC, BC, PDE)",
    allows_equality=True,
    generic=False,
)
