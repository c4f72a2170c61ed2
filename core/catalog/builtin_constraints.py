"""The built-in constraint kinds: each one's spec section (``ConstraintParams``) and
description (``ConstraintKindInfo``), registered like any plugin's, by the
``dualtune.constraints`` entry points in the project's pyproject.toml (one per constant).
Their builders live in ``dualtune.core.engine.constraints``, one module per kind."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import Field

from dualtune.core.catalog.constraints import ConstraintKindInfo, ConstraintParams
from dualtune.core.catalog.tasks import TaskInfo

PositiveFloat = Annotated[float, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]

BUILDERS = "dualtune.core.engine.constraints"


class InequalityConstraint(ConstraintParams):
    """A kind whose constraints are inequalities g ≤ ε, with ε a swept grid key."""

    @property
    def equality(self) -> bool:
        return False


class SampleLossConstraint(InequalityConstraint):
    """ℓ_i(θ) ≤ ε for every training sample."""

    kind: Literal["sample_loss"]

    @property
    def front_metric(self) -> str | None:
        return "loss_max"


Rate = Literal["positive", "true_positive", "false_positive", "error"]
"""A group rate: the share of positive decisions (demographic parity), of positive decisions
among the positives (true-positive rate: equal opportunity), among the negatives
(false-positive rate), or of wrong decisions (error rate). Decisions are "predicts class 1";
the positive label is class 1 (multiclass tasks: class 1 against the rest)."""

RATE_METRICS: dict[str, str] = {
    "positive": "dp_gap",
    "true_positive": "tpr_gap",
    "false_positive": "fpr_gap",
    "error": "error_gap",
}
"""The §3.4 split metric that measures each rate's disparity (max − min over groups)."""


class RateConstraint(ConstraintParams):
    """Common to the rate kinds (``group_rate``, ``equalized_odds``): per group g of
    ``attribute`` and each rate, h_g = r_g − r (the group's rate minus the overall rate) = 0
    (``equality``) or |h_g| ≤ ε.

    With ``proxy`` (the default) the multipliers ascend on the hard rates, the ones the
    metrics count, and the primal step descends on the smooth surrogate σ(τ(p − ½))
    (proxy-Lagrangian training: Cotter et al., JMLR 2019; TFCO; Cooper's proxy
    constraints). With ``proxy: false`` both use the surrogate, as the statistical-equality
    code does (τ = 8): its multipliers then settle where the *soft* rates are equal, and the
    hard gap can stay well above the bound (0.015–0.03 on Adult).
    """

    attribute: str
    equality: bool = False
    temperature: PositiveFloat = 8.0
    """τ of the surrogate decision σ(τ(p − ½)), p the predicted probability of class 1."""
    tolerance: NonNegativeFloat = 0.01
    """An equality counts as satisfied (``feasible_frac``) within this distance."""
    proxy: bool = True

    @property
    def uses_epsilon(self) -> bool:
        # The equality targets a zero gap: ε is not read, so it does not multiply trials.
        return not self.equality

    @property
    def rates(self) -> tuple[Rate, ...]:
        """The rates constrained, in the order of the constraint vector's blocks."""
        raise NotImplementedError


class GroupRateConstraint(RateConstraint):
    """One group rate equal across groups: positive (demographic parity, the default),
    true_positive (equal opportunity), false_positive or error rate parity."""

    kind: Literal["group_rate"]
    rate: Rate = "positive"

    @property
    def rates(self) -> tuple[Rate, ...]:
        return (self.rate,)

    @property
    def front_metric(self) -> str | None:
        return RATE_METRICS[self.rate]


class EqualizedOddsConstraint(RateConstraint):
    """Equalized odds: true- and false-positive rate parity together (Hardt et al. 2016;
    Fairlearn's EqualizedOdds)."""

    kind: Literal["equalized_odds"]

    @property
    def rates(self) -> tuple[Rate, ...]:
        return ("true_positive", "false_positive")

    @property
    def front_metric(self) -> str | None:
        return "eo_gap"


class BoundedGroupLossConstraint(InequalityConstraint):
    """Each group's mean loss ≤ ε (Fairlearn's BoundedGroupLoss; Agarwal et al. 2019)."""

    kind: Literal["bounded_group_loss"]
    attribute: str

    @property
    def front_metric(self) -> str | None:
        return "group_loss_max"


class ClassLossConstraint(ConstraintParams):
    """Per-class mean loss ≤ ε (or = ε)."""

    kind: Literal["class_loss"]
    equality: bool = False
    tolerance: NonNegativeFloat = 0.01


class WeightNormConstraint(InequalityConstraint):
    """‖W_l‖²_F ≤ ε per weight matrix."""

    kind: Literal["weight_norm"]


class OrthogonalityConstraint(InequalityConstraint):
    """‖W_l W_lᵀ − I‖_F ≤ ε per weight matrix."""

    kind: Literal["orthogonality"]


READOUT_MODELS = ("resmlp", "transformer")
"""Task ``model`` values with a readout after every block: digits' residual MLP,
fashion_denoise's patch transformer (both count their blocks in ``blocks``)."""


class LayerDescentConstraint(InequalityConstraint):
    """Layerwise descent (arXiv 2601.17257): with ℓ̄_l the mean loss of the readout after
    block l, ℓ̄_{l+1} ≤ (1 − ε) ℓ̄_l for every block transition; needs a model with a
    readout per block (digits ``model: resmlp``, fashion_denoise's transformer). ε is the
    swept grid key, in [0, 1)."""

    kind: Literal["layer_descent"]
    noise_std: NonNegativeFloat = 0.5
    """Standard deviation of the Gaussian input noise for ``<split>/noisy_accuracy``, in
    input units (digits pixels lie in [0, 1]); classification tasks only (fashion_denoise
    has its own noise levels, ``task.params.noise_std`` and ``ood_noise_std``)."""

    def problems(
        self,
        task: TaskInfo,
        task_params: Mapping[str, Any],
        epsilon: tuple[float, ...] | None,
    ) -> list[tuple[str, str]]:
        """The task's model must have a readout after every block (``READOUT_MODELS``) and
        at least two blocks; and ε < 1, since (1 − ε) scales a loss."""
        items: list[tuple[str, str]] = []
        model = task_params.get("model")
        if model not in READOUT_MODELS:
            items.append(
                (
                    "task.params.model",
                    f"layer_descent needs a model with a readout after every block; "
                    f"task {task.name!r} has model {model!r}: set task.params.model: resmlp",
                )
            )
        elif int(task_params.get("blocks", 0)) < 2:
            items.append(
                (
                    "task.params.blocks",
                    "layer_descent constrains block transitions and needs blocks ≥ 2, "
                    f"got {task_params.get('blocks')}",
                )
            )
        bad = [e for e in epsilon or () if e >= 1]
        if bad:
            items.append(
                (
                    "grid.epsilon",
                    f"layer_descent needs ε < 1 (the bound is (1 − ε) × the previous layer's "
                    f"loss), got {bad}",
                )
            )
        return items


class PinnResidualConstraint(ConstraintParams):
    """A PDE task's residuals as equality constraints: w_k·mean(res_k²) = 0 for the initial
    condition, the boundary condition and the PDE (k = IC, BC, PDE). Rescaling an equality
    leaves its feasible set unchanged, but the weights set the terms of the ``penalty``
    method: weights (100, 100, 1) with penalty 1 is the weighted PINN loss."""

    kind: Literal["pinn_residual"]
    equality: Literal[True] = True
    weights: tuple[PositiveFloat, PositiveFloat, PositiveFloat] = (1.0, 1.0, 1.0)
    """w_IC, w_BC, w_PDE."""
    tolerance: NonNegativeFloat = 1e-3
    """A weighted mean squared residual at most this counts as satisfied (feasible_frac)."""

    @property
    def uses_epsilon(self) -> bool:
        # The residuals are driven to 0: ε is not read, so it does not multiply trials.
        return False


SAMPLE_LOSS = ConstraintKindInfo(
    "sample_loss",
    "every training sample's loss: ℓ_i(θ) ≤ ε (Feasible Learning)",
    "one per training sample",
    SampleLossConstraint,
    f"{BUILDERS}.sample_loss:SampleLoss",
    per_sample=True,
)


GROUP_RATE = ConstraintKindInfo(
    "group_rate",
    "per-group rate − overall rate = 0, or |·| ≤ ε; rate: positive (demographic parity, "
    "the default), true_positive (equal opportunity), false_positive, error",
    "one per group (two per group for |·| ≤ ε)",
    GroupRateConstraint,
    f"{BUILDERS}.group_rate:GroupRate",
    needs_classification=True,
    needs_group_attribute=True,
    allows_equality=True,
)


EQUALIZED_ODDS = ConstraintKindInfo(
    "equalized_odds",
    "equalized odds: per-group true- and false-positive rates − the overall ones = 0, or |·| ≤ ε",
    "two per group (four per group for |·| ≤ ε)",
    EqualizedOddsConstraint,
    f"{BUILDERS}.group_rate:GroupRate",
    needs_classification=True,
    needs_group_attribute=True,
    allows_equality=True,
)


BOUNDED_GROUP_LOSS = ConstraintKindInfo(
    "bounded_group_loss",
    "each group's mean loss ≤ ε (Fairlearn's BoundedGroupLoss)",
    "one per group",
    BoundedGroupLossConstraint,
    f"{BUILDERS}.bounded_group_loss:BoundedGroupLoss",
    needs_group_attribute=True,
)


CLASS_LOSS = ConstraintKindInfo(
    "class_loss",
    "per-class mean loss ≤ ε (or = ε)",
    "one per class",
    ClassLossConstraint,
    f"{BUILDERS}.class_loss:ClassLoss",
    needs_classification=True,
    allows_equality=True,
)


WEIGHT_NORM = ConstraintKindInfo(
    "weight_norm",
    "per-layer squared Frobenius norm ‖W_l‖²_F ≤ ε",
    "one per weight matrix",
    WeightNormConstraint,
    f"{BUILDERS}.weight_norm:WeightNorm",
)


ORTHOGONALITY = ConstraintKindInfo(
    "orthogonality",
    "per-layer ‖W_l W_lᵀ − I‖_F ≤ ε (Gram of the smaller side)",
    "one per weight matrix",
    OrthogonalityConstraint,
    f"{BUILDERS}.weight_norm:Orthogonality",
)


LAYER_DESCENT = ConstraintKindInfo(
    "layer_descent",
    "layerwise descent: the mean loss of the readout after block l+1 is at most "
    "(1 − ε) times that after block l (needs a model with a readout per block)",
    "one per block transition",
    LayerDescentConstraint,
    f"{BUILDERS}.layer_descent:LayerDescent",
    extra_metrics=("descent_frac", "noisy_accuracy"),
    generic=False,
    epsilon_in_kind=True,
)


PINN_RESIDUAL = ConstraintKindInfo(
    "pinn_residual",
    "a PDE task's mean squared residuals (initial condition, boundary condition, "
    "PDE), each weighted: w_k·mean(res_k²) = 0",
    "one per residual (IC, BC, PDE)",
    PinnResidualConstraint,
    f"{BUILDERS}.pinn_residual:PinnResidual",
    allows_equality=True,
    generic=False,
    # With a zero objective, ERM (which ignores the constraints) has nothing to minimise.
    methods=("penalty", "fl", "rfl", "alm", "sal"),
)
