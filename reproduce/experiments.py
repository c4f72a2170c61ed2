"""The reproduction report's sections: which specs each runs, what it tabulates, what the
paper claims and at what budget the paper ran it."""

from __future__ import annotations

from dataclasses import dataclass, field

TAIL = (
    "loss_mean",
    "cvar_0.01",
    "cvar_0.05",
    "cvar_0.1",
    "loss_max",
    "feasible_frac",
)


@dataclass(frozen=True)
class Section:
    key: str
    title: str
    claim: str
    specs: tuple[str, ...]
    """Spec files in ``examples/reproduce/`` (without ``.yaml``)."""
    tables: tuple[tuple[str, tuple[str, ...]], ...]
    """(caption, columns) per table of each spec; a column is a metric name (§3.4 or a
    task/kind extra) or a derived column (``slack_mean``, ``slack_max``)."""
    paper_budget: str
    figure: str | None = None
    """``loss_cdf``, ``dp_tradeoff``, ``alpha_ablation`` or ``None``."""
    notes: tuple[str, ...] = field(default=())


SECTIONS: tuple[Section, ...] = (
    Section(
        "feasible_learning",
        "Feasible Learning and resilient FL against ERM and CSERM",
        "FL and RFL lower the upper tail of the training loss (CVaR at the top 1–10 %, the "
        "largest loss, more samples under ε) against ERM, with the mean loss and the accuracy "
        "close to ERM's (Feasible Learning, §1.7 claim 4).",
        ("fl_fashion_mnist", "fl_cps_wages"),
        (
            ("train", tuple(f"train/{n}" for n in (*TAIL, "accuracy"))),
            ("val", tuple(f"val/{n}" for n in (*TAIL, "accuracy"))),
        ),
        "CIFAR-10 / ResNet-18, 200 epochs, 5 seeds; UTKFace age regression, 150 epochs",
        figure="loss_cdf",
    ),
    Section(
        "demographic_parity",
        "Demographic parity as equality constraints",
        "With one equality constraint per group (rate of the group − overall rate = 0), the "
        "training disparity goes to ≈ 0 with test accuracy a few points from ERM, where a "
        "fixed penalty trades one for the other (statistical equality constraints, §2.5 "
        "claim 1).",
        ("dp_adult", "dp_adult_sharp", "dp_compas"),
        (("", ("train/dp_gap", "val/dp_gap", "train/accuracy", "val/accuracy")),),
        "COMPAS, logistic regression, full batch, up to 16 000 epochs, 10 splits",
        figure="dp_tradeoff",
    ),
    Section(
        "sal",
        "Regularisers as constraints: SAL against a fixed penalty and ALM",
        "The stochastic augmented Lagrangian reaches a lower constraint violation than a "
        "fixed penalty at no lower accuracy (SAL, 2310.16647).",
        ("sal_weight_norm", "sal_orthogonality"),
        (
            (
                "",
                (
                    "val/accuracy",
                    "train/accuracy",
                    "constraint/violation_max",
                    "constraint/violation_mean",
                    "train/feasible_frac",
                ),
            ),
        ),
        "MNIST / CIFAR-10 CNNs and ResNets, 50+ epochs, 10 runs",
    ),
    Section(
        "convection",
        "Convection PINN: equality constraints against the weighted penalty",
        "At β = 30 the equality-constrained PINN (IC, BC and PDE residuals = 0, zero "
        "objective) reaches a lower relative L2 error than the 100·IC + 100·BC + 1·PDE "
        "penalty PINN (statistical equality constraints, §2.5 claim 3).",
        ("convection", "convection_penalty"),
        (("", ("val/rel_l2", "train/rel_l2", "constraint/violation_max")),),
        "300 000 Adam iterations, 1 000 collocation points per iteration, 5 seeds",
    ),
    Section(
        "layer_descent",
        "Layerwise descent constraints",
        "With E[ℓ_{l+1}] ≤ (1 − ε)·E[ℓ_l] imposed per block, the loss decreases from block to "
        "block; the share of samples that descend at every block rises but stays below "
        "100 %; accuracy under input noise is at least ERM's (unrolled transformers, "
        "2601.17257; qualitative).",
        ("layer_descent",),
        (
            (
                "",
                (
                    "train/descent_frac",
                    "val/descent_frac",
                    "val/accuracy",
                    "val/noisy_accuracy",
                    "constraint/violation_max",
                ),
            ),
        ),
        "video denoising and pretrained text transformers (not available offline)",
    ),
    Section(
        "rfl_alpha",
        "Resilient FL: the slack cost α",
        "The slack cost α sets how much slack u = λ/α the constraints take: the slack "
        "shrinks as α grows and RFL approaches FL (the paper's ablation varies the "
        "multipliers' weight decay 1/α). At the fixed point λ_i = α[ℓ_i − ε]₊, so RFL's "
        "primal objective is CSERM's scaled by α, and under Adam, which is blind to that "
        "scale, small α trains like CSERM.",
        ("rfl_alpha",),
        (
            (
                "",
                (
                    "train/cvar_0.1",
                    "train/loss_max",
                    "train/loss_mean",
                    "slack_mean",
                    "slack_max",
                    "val/accuracy",
                ),
            ),
        ),
        "CIFAR-10 / ResNet-18, 200 epochs",
        figure="alpha_ablation",
    ),
)
