"""The metric names of ARCHITECTURE §3.4 (Tune reports, MLflow metrics, summaries)."""

from __future__ import annotations

SPLITS = ("train", "val")
SPLIT_METRICS = (
    "loss_mean",
    "loss_max",
    "loss_q50",
    "loss_q90",
    "loss_q99",
    "cvar_0.01",
    "cvar_0.05",
    "cvar_0.1",
    "feasible_frac",
    "accuracy",
    "dp_gap",
)
GLOBAL_METRICS = (
    "dual/lambda_mean",
    "dual/lambda_max",
    "dual/lambda_active_frac",
    "constraint/violation_max",
    "constraint/violation_mean",
    "time/epoch_s",
    "time/samples_per_s",
)
METRIC_NAMES: tuple[str, ...] = (
    tuple(f"{s}/{m}" for s in SPLITS for m in SPLIT_METRICS) + GLOBAL_METRICS
)


def metric_names_for(
    problem: str, constraint_kind: str, extra: tuple[str, ...] = ()
) -> tuple[str, ...]:
    """The metrics a trial of this problem type and constraint kind reports.

    ``extra`` names split metrics that a task or a constraint kind adds (``rel_l2``,
    ``descent_frac``): each is reported for both splits, as ``train/<name>`` and ``val/<name>``.
    """
    names = []
    for name in METRIC_NAMES:
        if name.endswith("/accuracy") and problem != "classification":
            continue
        if name.endswith("/dp_gap") and constraint_kind != "group_rate":
            continue
        names.append(name)
    names += [f"{s}/{m}" for s in SPLITS for m in extra]
    return tuple(names)
