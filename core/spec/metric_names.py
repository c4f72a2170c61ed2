"""The metric names of ARCHITECTURE §3.4 (Tune reports, MLflow metrics, summaries)."""

from __future__ import annotations

from dualtune.core.catalog import CONSTRAINT_KINDS

SPLITS = ("train", "val")
GROUP_METRICS = ("dp_gap", "tpr_gap", "fpr_gap", "eo_gap", "error_gap", "group_loss_max")
"""Split metrics of §3.4 that a task with a group attribute reports (for the constraint's
attribute, else the task's first): max − min over groups of the positive, true-positive,
false-positive and error rates of the hard decisions (``eo_gap`` the larger of the TPR and
FPR gaps), and the largest group mean loss."""
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
    *GROUP_METRICS,
)
CLASSIFICATION_METRICS = frozenset(
    {"accuracy", "noisy_accuracy", *GROUP_METRICS} - {"group_loss_max"}
)
"""Split metrics that only classification tasks report (decisions and rates), the
``layer_descent`` kind's ``noisy_accuracy`` among them."""
GLOBAL_METRICS = (
    "dual/lambda_mean",
    "dual/lambda_max",
    "dual/lambda_active_frac",
    "constraint/violation_max",
    "constraint/violation_mean",
    "time/epoch_s",
    "time/samples_per_s",
    "time/epochs",
)
EPOCHS_RUN = "time/epochs"
"""Epochs a trial has trained (at its last evaluation): what early stopping saves is read
from it, epochs run against epochs asked."""
BEST_FEASIBLE = "best_feasible/"
"""The prefix of a trial's best feasible evaluation beside its last one: the evaluation
that was best by the selection among those meeting every ``selection.subject_to`` bound,
as ``best_feasible/<name>`` and its epoch as ``best_feasible/epoch``."""
BEST_FEASIBLE_EPOCH = f"{BEST_FEASIBLE}epoch"
METRIC_NAMES: tuple[str, ...] = (
    tuple(f"{s}/{m}" for s in SPLITS for m in SPLIT_METRICS) + GLOBAL_METRICS
)


def metric_names_for(
    problem: str, constraint_kind: str, extra: tuple[str, ...] = (), *, groups: bool = False
) -> tuple[str, ...]:
    """The metrics a trial of this problem type and constraint kind reports.

    ``groups``: the task has a group attribute, so it reports the ``GROUP_METRICS`` (those
    of them that apply to its problem type). The kind's own split metrics come from the
    registry (``ConstraintKindInfo.extra_metrics``); ``extra`` names more that a task adds
    (``rel_l2``). Each is reported for both splits, as ``train/<name>`` and
    ``val/<name>``: a §3.4 name in its place in ``METRIC_NAMES``, the others after them.
    """
    info = CONSTRAINT_KINDS.get(constraint_kind)
    extra = tuple(dict.fromkeys((*(info.extra_metrics if info else ()), *extra)))
    names = []
    for name in METRIC_NAMES:
        split_metric = name.partition("/")[2]
        if split_metric in CLASSIFICATION_METRICS and problem != "classification":
            continue
        if split_metric in GROUP_METRICS and not groups and split_metric not in extra:
            continue
        names.append(name)
    names += [
        f"{s}/{m}"
        for s in SPLITS
        for m in extra
        if m not in SPLIT_METRICS
        and not (m in CLASSIFICATION_METRICS and problem != "classification")
    ]
    return tuple(names)
