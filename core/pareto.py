"""The sweep's Pareto fronts: per method, the trials that no other trial of the method beats
on both the selection metric and the constraint metric (ARCHITECTURE §3.5). Pure Python,
shared by the report (``core.reporting``), its table and the parent run's figure.

The two axes of a sweep:

* **x, the constraint metric**: the first metric of ``selection.subject_to`` (its bound is
  the feasible region); else ``{split}/{constraint.front_metric}``, the split being the
  selection metric's (``train`` for a ``train/`` metric, ``val`` otherwise); else
  ``constraint/violation_max``. Lower is better, except under a bound that has only a
  ``min`` (``train/feasible_frac: {min: 0.95}``).
* **y, the selection metric**: ``selection.metric``, better by ``selection.mode``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from dualtune.core.spec import SweepSpec
from dualtune.core.states import TRIAL_SELECTABLE

if TYPE_CHECKING:
    from dualtune.core.reporting import TrialOutcome

Direction = Literal["min", "max"]
FALLBACK_METRIC = "constraint/violation_max"
"""The constraint axis when neither the selection's bounds nor the kind name a metric."""


@dataclass(frozen=True)
class ConstraintAxis:
    """The x axis: a metric, which way is better, and the feasible region (``None``: no
    bound; else ``{"min": …, "max": …}``, a side ``None`` where it is open)."""

    metric: str
    direction: Direction
    bound: Mapping[str, float | None] | None = None

    def __post_init__(self) -> None:
        if self.direction not in ("min", "max"):
            raise ValueError(f"direction must be 'min' or 'max', not {self.direction!r}")
        if self.bound is not None and set(self.bound) != {"min", "max"}:
            raise ValueError(f"bound needs the keys min and max, got {sorted(self.bound)}")


def _split(metric: str) -> str:
    return "train" if metric.startswith("train/") else "val"


def constraint_axis(spec: SweepSpec) -> ConstraintAxis:
    """The sweep's constraint axis (see the module's docstring)."""
    first = next(iter(spec.selection.subject_to.items()), None)
    if first is not None:
        metric, bound = first
        only_min = bound.min is not None and bound.max is None
        return ConstraintAxis(
            metric, "max" if only_min else "min", {"min": bound.min, "max": bound.max}
        )
    front_metric = spec.constraint.front_metric
    if front_metric is not None:
        return ConstraintAxis(f"{_split(spec.selection.metric)}/{front_metric}", "min")
    return ConstraintAxis(FALLBACK_METRIC, "min")


def front_indices(
    points: Sequence[tuple[float, float]], x_direction: Direction, y_direction: Direction
) -> list[int]:
    """The positions of the non-dominated points (none other at least as good on both axes
    and better on one; equal points are all kept), in ascending x (then y, then position).
    The points must be finite."""
    for name, direction in (("x_direction", x_direction), ("y_direction", y_direction)):
        if direction not in ("min", "max"):
            raise ValueError(f"{name} must be 'min' or 'max', not {direction!r}")
    x_sign = 1.0 if x_direction == "min" else -1.0
    y_sign = 1.0 if y_direction == "min" else -1.0
    # In costs (lower is better on both), sorted: a point is dominated by one with the same
    # cost a and a lower b, or by any earlier group's point whose b is not above its own.
    costs = sorted((x_sign * x, y_sign * y, i) for i, (x, y) in enumerate(points))
    front: list[int] = []
    best_b = math.inf
    start = 0
    while start < len(costs):
        end = start
        while end < len(costs) and costs[end][0] == costs[start][0]:
            end += 1
        group_b = costs[start][1]  # the group's lowest, by the sort
        if group_b < best_b:
            front += [i for _, b, i in costs[start:end] if b == group_b]
            best_b = group_b
        start = end
    return sorted(front, key=lambda i: (points[i][0], points[i][1], i))


def _finite(metrics: Mapping[str, float], name: str) -> float | None:
    value = metrics.get(name)
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def pareto_section(spec: SweepSpec, outcomes: Sequence[TrialOutcome]) -> dict[str, Any]:
    """The report's ``pareto`` key (JSON)::

        {"x": {"metric": str, "direction": "min" | "max",
               "bound": {"min": float | null, "max": float | null} | null},
         "y": {"metric": str, "mode": "min" | "max"},
         "methods": [{"method": str,
                      "points": [{"trial_id": str, "x": float, "y": float, "params": {…}}],
                      "front": [trial_id, …]}]}

    One entry per method of the spec, in its order (ERM included). ``points``: the method's
    succeeded and stopped trials with both metrics finite, in the outcomes' order;
    ``front``: the ids of those on its Pareto front, in ascending x. A method without such
    a trial has both empty.
    """
    x_axis = constraint_axis(spec)
    y_metric, y_mode = spec.selection.metric, spec.selection.mode
    methods: list[dict[str, Any]] = []
    for method in spec.methods:
        points: list[dict[str, Any]] = []
        for o in outcomes:
            if o.method != method or o.status not in TRIAL_SELECTABLE:
                continue
            x, y = _finite(o.metrics, x_axis.metric), _finite(o.metrics, y_metric)
            if x is not None and y is not None:
                points.append({"trial_id": o.trial_id, "x": x, "y": y, "params": dict(o.params)})
        on_front = front_indices([(p["x"], p["y"]) for p in points], x_axis.direction, y_mode)
        methods.append(
            {
                "method": method,
                "points": points,
                "front": [points[i]["trial_id"] for i in on_front],
            }
        )
    return {
        "x": {
            "metric": x_axis.metric,
            "direction": x_axis.direction,
            "bound": dict(x_axis.bound) if x_axis.bound is not None else None,
        },
        "y": {"metric": y_metric, "mode": y_mode},
        "methods": methods,
    }
