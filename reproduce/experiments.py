"""The reproduction report's sections: which specs each runs, what it tabulates, what the
paper claims and at what budget the paper ran it."""

from __future__ import annotations

from dataclasses import dataclass, field

# What "comparable average performance" allows in the Feasible Learning verdict: val accuracy
# at most this many points below ERM's (the research notes' suggestion, not the paper's), or,
# where there is no accuracy (regression), val mean loss at most this fraction above ERM's.
ACCURACY_MARGIN_POINTS = 1.0
MEAN_LOSS_MARGIN = 0.05

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
    figure_caption: str = ""
    notes: tuple[str, ...] = field(default=())


SECTIONS: tuple[Section, ...] = (
    Section(
        "feasible_learning",
        "Feasible Learning and resilient FL against ERM and CSERM",
        "FL and RFL give the held-out losses a lower upper tail than ERM — fewer high-loss "
        "outliers: a lower CVaR at the top 1, 5 and 10 % and a lower largest loss — at only a "
        "marginal cost in average performance (Feasible Learning, 2501.14912, which states it "
        "for per-sample *test* losses — their CDF and CVaR; the research notes' §1.7 claim 4 "
        "had read it on training losses). Judged here on the val split, which no trial "
        "trains on and none is chosen by: each method's best trial by the specs' selection (train "
        "CVaR₀.₁) holds the claim when its val CVaR₀.₀₁, CVaR₀.₀₅, CVaR₀.₁ and largest loss "
        f"are all below ERM's and its val accuracy is at most {ACCURACY_MARGIN_POINTS:g} "
        "point below ERM's (our margin for the paper's “marginal”), or, for regression, its "
        f"val mean loss at most {100 * MEAN_LOSS_MARGIN:g} % above ERM's. The train split is "
        "shown beside it; it is not the claim.",
        ("fl_fashion_mnist", "fl_cps_wages"),
        (
            ("val (held out: the claim)", tuple(f"val/{n}" for n in (*TAIL, "accuracy"))),
            ("train", tuple(f"train/{n}" for n in (*TAIL, "accuracy"))),
        ),
        "CIFAR-10 / ResNet-18, 200 epochs, 5 seeds; UTKFace age regression, 150 epochs",
        figure="loss_cdf",
        figure_caption="Per-sample loss tails of each method's best trial at its last epoch: "
        "the share of a split's samples whose loss exceeds ℓ (1 − CDF, log–log, read from 131 "
        "quantiles of the split's per-sample losses), held-out val split on the left (the "
        "claim's), train split on the right.",
        notes=(
            "**Reading it.** On the full Fashion-MNIST for 30 epochs ERM nearly interpolates "
            "the training set — its train tail is the lowest — and pays for it on the held-out "
            "split: every FL and RFL trial, at both ε, has a lower val CVaR at 1, 5 and 10 % and"
            " a lower largest val loss than ERM. What they miss is the accuracy margin: at "
            "ε = 0.105 they lose a little more than the 1 point allowed, at ε = 0.511 about "
            "3½ points. CSERM, the fixed quadratic penalty, has a lower val CVaR at every level "
            "than any FL or RFL trial, at ε = 0.105 within 0.25 points of ERM's accuracy: at "
            "this budget the held-out tail is bought without multipliers. At the CI budget "
            "(10 000 images, 10 epochs; "
            "`tests/core/engine/test_real_data_claims.py`, which reads the train split) FL and "
            "RFL lower the train CVaR₀.₁ and the largest train loss against an ERM that has not"
            " yet fit the data. On CPS wages a few wages lie tens of standard deviations out; "
            "their constraints cannot be met, their multipliers grow without bound and the fit "
            "bends towards them — the largest loss falls on both splits while every CVaR and "
            "the mean loss rise. That is the case resilient FL's slack is for; α ≤ 1 does not "
            "give enough slack here.",
        ),
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
        notes=(
            "**Reading it.** Training equalises soft rates σ(τ(p − ½)); `dp_gap` counts hard "
            "decisions. On Adult both the paper's τ = 8 (`dp_adult`) and τ = 128 "
            "(`dp_adult_sharp`) bring the hard training gap of `fl` and `alm` below 0.001 at "
            "2¼–2½ points of accuracy; the sharper τ gains nothing on the val gap. On COMPAS "
            "(four race groups) neither plain gradient ascent on the multipliers (`fl`) nor ALM"
            " had closed the gap after 500 full-batch steps (train gap 0.34 and 0.29; `fl` also "
            "loses 10 points of accuracy), where the fixed penalties reach 0.04–0.09.",
        ),
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
        notes=(
            "**Reading it.** Our fixed penalty is the exact penalty c·Σ[g − ε]₊: any c above the "
            "optimal multipliers is feasible, which makes it a strong baseline. On weight norm "
            "SAL ends feasible, unlike the weak penalty (c = 0.001), at an accuracy between "
            "those of the two feasible penalties (within 0.1 points of each), whose violation, "
            "0, it cannot undercut; ALM, feasible too, is the most accurate of the feasible runs."
            " On orthogonality SAL ends just short of feasible (largest "
            "violation 0.008, one of its two constraints), far below the weak penalty's (c = "
            "0.01: 3.7), and more accurate than the penalties strong enough to be feasible; the "
            "verdict counts that 0.008 against their 0.",
        ),
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
        notes=(
            "**Larger budgets** (docs/convection.md): every method sits on a plateau near 0.6–0.8"
            " and then drops to a few per cent; the constrained PINN leaves it first (10–20k "
            "iterations against 20–25k). At 35k iterations on 1 000 points (3 seeds, run on a "
            "GPU) all methods reach 0.02–0.09 and the ordering depends on the seed.",
        ),
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
        notes=(
            "**Reading it.** The readout is shared by every block (a logit lens on the residual "
            "stream), so ERM's training of the final readout already orders the intermediate "
            "ones: the multipliers end near 0 and the constrained runs differ from ERM by "
            "seed-to-seed noise. Separate heads per block, where ERM leaves the intermediate "
            "heads untrained, are not implemented (docs/layer_descent.md).",
        ),
    ),
    Section(
        "rfl_alpha",
        "Resilient FL: the slack cost α",
        "The slack cost α sets how much slack u = λ/α the constraints take: the slack "
        "shrinks as α grows and RFL approaches FL (the paper's ablation varies the "
        "multipliers' weight decay 1/α). At the fixed point λ_i = α[ℓ_i − ε]₊, so RFL's "
        "primal objective is CSERM's scaled by α, and under Adam, which is blind to that "
        "scale, small α trains like CSERM. The tail that α buys is read, as in §1, on the "
        "held-out split (val CVaR₀.₁ and largest loss, against ERM's); the train columns are "
        "shown beside it and are not the claim.",
        ("rfl_alpha",),
        (
            (
                "",
                (
                    "val/cvar_0.1",
                    "val/loss_max",
                    "val/accuracy",
                    "train/cvar_0.1",
                    "train/loss_max",
                    "train/loss_mean",
                    "slack_mean",
                    "slack_max",
                ),
            ),
        ),
        "CIFAR-10 / ResNet-18, 200 epochs",
        figure="alpha_ablation",
        notes=(
            "**Reading it.** On the held-out split every α gives a lower val CVaR₀.₁ than ERM, "
            "and it rises with α towards FL's: the cheapest slack (α = 0.01, the most "
            "CSERM-like) has the lowest val tail, at ERM's accuracy. The largest val loss is "
            "noisier (one sample) and is below ERM's at only two values of α; the train "
            "CVaR₀.₁ hardly moves with α.",
        ),
    ),
)
