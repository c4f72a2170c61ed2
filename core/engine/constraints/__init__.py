"""Constraint kinds: turn a model's outputs into constraint values g_j(θ).

``base`` holds the interface (``ConstraintKind``, built from the spec with ``from_spec``
and a ``KindContext``; ``Batch``); each built-in kind is one module, named by its catalog
entry (``core.catalog.builtin_constraints``) as a plugin kind's builder is:

* ``sample_loss``   g_i = ℓ_i(θ) (or the task's own g_i), one per training sample.
* ``group_rate``    h_g = r_g − r, a group's rate (positive, true-positive,
                    false-positive or error) minus the overall rate; = 0, or |h_g| ≤ ε as
                    two inequalities (2G multipliers); proxy constraints by default (the
                    dual step on hard rates, the primal step on the surrogate).
                    ``equalized_odds`` (same module): true- and false-positive rates.
* ``bounded_group_loss`` g_g = mean loss of group g, one per group.
* ``class_loss``    g_k = mean loss of class k, one per class.
* ``weight_norm``   g_l = ‖W_l‖²_F, one per weight matrix; ``orthogonality`` (same module)
                    g_l = ‖W_l W_lᵀ − I‖_F.
* ``pinn_residual`` h_k = w_k·mean(res_k²) = 0 for a PDE task's residuals.
* ``layer_descent`` g_l = ℓ̄_{l+1} − (1 − ε) ℓ̄_l, one per block transition; ε folded into g.
"""

from dualtune.core.engine.constraints.base import (
    Batch,
    ConstraintKind,
    KindContext,
    group_means,
)
from dualtune.core.engine.constraints.bounded_group_loss import BoundedGroupLoss
from dualtune.core.engine.constraints.class_loss import ClassLoss
from dualtune.core.engine.constraints.group_rate import GroupRate, rate_gaps
from dualtune.core.engine.constraints.layer_descent import (
    LayerDescent,
    ReadoutModel,
    layer_losses,
    readout_model,
)
from dualtune.core.engine.constraints.pinn_residual import PinnResidual, ResidualTask
from dualtune.core.engine.constraints.sample_loss import SampleLoss
from dualtune.core.engine.constraints.weight_norm import (
    Orthogonality,
    WeightNorm,
    gram_defect,
    weight_matrices,
)
from dualtune.core.engine.observation import ConstraintBatch

__all__ = [
    "Batch",
    "BoundedGroupLoss",
    "ClassLoss",
    "ConstraintBatch",
    "ConstraintKind",
    "GroupRate",
    "KindContext",
    "LayerDescent",
    "Orthogonality",
    "PinnResidual",
    "ReadoutModel",
    "ResidualTask",
    "SampleLoss",
    "WeightNorm",
    "gram_defect",
    "group_means",
    "layer_losses",
    "rate_gaps",
    "readout_model",
    "weight_matrices",
]
