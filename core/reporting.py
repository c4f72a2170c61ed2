"""The sweep report: per method, the best trial by the spec's ``selection`` (feasible first),
the tail-metric table against ERM, and each method's Pareto front (``core.pareto``). Pure
Python, shared by the worker and the service."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dualtune.core.pareto import pareto_section
from dualtune.core.spec import Selection, SweepSpec
from dualtune.core.spec.metric_names import BEST_FEASIBLE, BEST_FEASIBLE_EPOCH, EPOCHS_RUN
from dualtune.core.states import TRIAL_FINAL, TRIAL_SELECTABLE, TrialState

TABLE_METRICS: tuple[str, ...] = (
    "train/loss_mean",
    "train/cvar_0.1",
    "train/loss_max",
    "train/feasible_frac",
    "val/loss_mean",
    "val/cvar_0.1",
    "val/loss_max",
    "val/feasible_frac",
    "val/accuracy",
)
FINAL_STATES: tuple[str, ...] = tuple(s.value for s in TrialState if s in TRIAL_FINAL)
"""The report counts every final state (0 included), in ``TrialState``'s order."""


@dataclass(frozen=True)
class TrialOutcome:
    """What the report needs of one trial."""

    trial_id: str
    method: str
    params: Mapping[str, float | int]
    status: str
    metrics: Mapping[str, float] = field(default_factory=dict)
    error: str | None = None


def meets_bounds(metrics: Mapping[str, float], subject_to: Mapping[str, Any]) -> bool:
    """Whether every ``subject_to`` bound holds (a missing or NaN metric fails its bound)."""
    for name, bound in subject_to.items():
        value = metrics.get(name)
        if value is None or math.isnan(value):
            return False
        low, high = getattr(bound, "min", None), getattr(bound, "max", None)
        if low is not None and value < low:
            return False
        if high is not None and value > high:
            return False
    return True


def score(metrics: Mapping[str, float], metric: str, mode: str) -> float:
    """``metric`` as a number to minimise (a missing or NaN metric is the worst)."""
    value = metrics.get(metric, math.nan)
    if math.isnan(value):
        return math.inf
    return value if mode == "min" else -value


def _score(outcome: TrialOutcome, metric: str, mode: str) -> float:
    return score(outcome.metrics, metric, mode)


def total_violation(metrics: Mapping[str, float], subject_to: Mapping[str, Any]) -> float:
    """How far ``metrics`` are outside the ``subject_to`` bounds, summed (0 when inside;
    infinite when a bounded metric is missing)."""
    total = 0.0
    for name, bound in subject_to.items():
        value = metrics.get(name, math.nan)
        if math.isnan(value):
            return math.inf
        low, high = getattr(bound, "min", None), getattr(bound, "max", None)
        total += max(0.0, (low - value) if low is not None else 0.0)
        total += max(0.0, (value - high) if high is not None else 0.0)
    return total


def best_feasible_metrics(
    history: Sequence[Mapping[str, float]], selection: Selection, names: Sequence[str] = ()
) -> dict[str, float]:
    """A trial's best feasible evaluation as ``best_feasible/<name>`` metrics: among the
    evaluations of ``history`` (each with its ``epoch``) that meet every
    ``selection.subject_to`` bound, the best by the selection's metric (the earliest of
    equals), with its ``best_feasible/epoch``; the selection's metrics, its bounds' and
    ``names`` are kept. Empty when no evaluation met the bounds (TFCO's "best iterate")."""
    feasible = [h for h in history if meets_bounds(h, selection.subject_to)]
    if not feasible:
        return {}
    best = min(feasible, key=lambda h: score(h, selection.metric, selection.mode))
    kept = dict.fromkeys((selection.metric, *selection.subject_to, *names))
    out = {f"{BEST_FEASIBLE}{k}": float(best[k]) for k in kept if k in best}
    out[BEST_FEASIBLE_EPOCH] = float(best.get("epoch", math.nan))
    return out


def _best_feasible_entry(metrics: Mapping[str, float]) -> dict[str, Any] | None:
    if BEST_FEASIBLE_EPOCH not in metrics:
        return None
    prefix = len(BEST_FEASIBLE)
    return {
        "epoch": int(metrics[BEST_FEASIBLE_EPOCH]),
        "metrics": {
            k[prefix:]: v
            for k, v in metrics.items()
            if k.startswith(BEST_FEASIBLE) and k != BEST_FEASIBLE_EPOCH
        },
    }


def _entry(outcome: TrialOutcome) -> dict[str, Any]:
    return {
        "trial_id": outcome.trial_id,
        "params": dict(outcome.params),
        "status": outcome.status,
        "epochs": outcome.metrics.get(EPOCHS_RUN),
        "metrics": {k: outcome.metrics.get(k) for k in TABLE_METRICS if k in outcome.metrics},
        "best_feasible": _best_feasible_entry(outcome.metrics),
    }


def compute_section(spec: SweepSpec, outcomes: Sequence[TrialOutcome]) -> dict[str, Any]:
    """The epochs the sweep's trials ran against the epochs it asked for (``train.epochs``
    each): what early stopping saved. A trial without an evaluation counts 0 epochs."""
    asked = spec.train.epochs * len(outcomes)
    run = sum(int(o.metrics.get(EPOCHS_RUN, 0.0)) for o in outcomes)
    return {
        "epochs_run": run,
        "epochs_asked": asked,
        "share": run / asked if asked else None,
        "stopped": sum(o.status == TrialState.STOPPED for o in outcomes),
        "early_stopping": (
            spec.early_stopping.model_dump(mode="json") if spec.early_stopping else None
        ),
    }


def _ratios(entry: dict[str, Any], erm: dict[str, Any]) -> dict[str, float]:
    """The method's best over ERM's best, for each table metric both have (ERM not zero)."""
    shown = entry["best"] or entry["best_infeasible"]
    if shown is None:
        return {}
    ratios: dict[str, float] = {}
    for key, value in shown["metrics"].items():
        ref = erm["best"]["metrics"].get(key)
        if value is not None and ref:
            ratios[key] = value / ref
    return ratios


def build_report(
    spec: SweepSpec, outcomes: Sequence[TrialOutcome], *, sweep_id: str
) -> dict[str, Any]:
    """The report: counts by status, and per method the best succeeded trial that meets
    every ``selection.subject_to`` bound, by ``selection.metric``/``mode``. When none meets
    them, ``best`` is null and ``best_infeasible`` names the trial closest to the bounds.
    ``vs_erm`` holds each method's table metrics as ratios to ERM's best (when ERM ran).
    ``pareto`` holds every method's trials on the constraint metric against the selection
    metric, and each method's front (``dualtune.core.pareto.pareto_section``)."""
    sel = spec.selection
    counts = dict.fromkeys(FINAL_STATES, 0)
    for o in outcomes:
        counts[o.status] = counts.get(o.status, 0) + 1
    methods: list[dict[str, Any]] = []
    for method in spec.methods:
        done = [o for o in outcomes if o.method == method and o.status in TRIAL_SELECTABLE]
        feasible = [o for o in done if meets_bounds(o.metrics, sel.subject_to)]
        best = min(feasible, key=lambda o: _score(o, sel.metric, sel.mode), default=None)
        infeasible = None
        if best is None and done:
            infeasible = min(
                done,
                key=lambda o: (
                    total_violation(o.metrics, sel.subject_to),
                    _score(o, sel.metric, sel.mode),
                ),
            )
        methods.append(
            {
                "method": method,
                "trials": sum(o.method == method for o in outcomes),
                "succeeded": sum(o.status == TrialState.SUCCEEDED for o in done),
                "stopped": sum(o.status == TrialState.STOPPED for o in done),
                "met_bounds": len(feasible),
                "best": _entry(best) if best else None,
                "best_infeasible": _entry(infeasible) if infeasible else None,
            }
        )
    erm = next((m for m in methods if m["method"] == "erm" and m["best"]), None)
    for entry in methods:
        entry["vs_erm"] = _ratios(entry, erm) if erm is not None and entry is not erm else {}
    return {
        "sweep_id": sweep_id,
        "name": spec.name,
        "selection": sel.model_dump(mode="json"),
        "trial_counts": counts,
        "table_metrics": list(TABLE_METRICS),
        "methods": methods,
        "pareto": pareto_section(spec, outcomes),
        "compute": compute_section(spec, outcomes),
    }
