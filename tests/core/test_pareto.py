"""The report's Pareto fronts (``dualtune.core.pareto``): the front against a brute-force
computation, the axes a spec gives, and what the report and its table show."""

from __future__ import annotations

import itertools
import json
import math
from typing import Any

import numpy as np
import pytest
from rich.console import Console

from dualtune.core.catalog.constraints import ConstraintParams
from dualtune.core.pareto import (
    FALLBACK_METRIC,
    ConstraintAxis,
    constraint_axis,
    front_indices,
    pareto_section,
)
from dualtune.core.report_table import render_report
from dualtune.core.reporting import TrialOutcome, build_report
from dualtune.core.spec import SweepSpec

DIRECTIONS = list(itertools.product(("min", "max"), ("min", "max")))


def brute_force_front(points: np.ndarray, x_direction: str, y_direction: str) -> set[int]:
    """Every point no other point weakly beats on both axes and strictly on one."""
    cost = points * np.array(
        [1.0 if x_direction == "min" else -1.0, 1.0 if y_direction == "min" else -1.0]
    )
    weakly = (cost[None, :, :] <= cost[:, None, :]).all(axis=2)  # [i, j]: j ≤ i on both
    strictly = (cost[None, :, :] < cost[:, None, :]).any(axis=2)
    dominated = (weakly & strictly).any(axis=1)
    return set(np.flatnonzero(~dominated).tolist())


@pytest.mark.parametrize(("x_direction", "y_direction"), DIRECTIONS)
@pytest.mark.parametrize("seed", range(20))
def test_the_front_is_the_brute_force_front_with_ties(
    seed: int, x_direction: str, y_direction: str
) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    # Few distinct values: many ties on one axis and duplicate points.
    points = rng.integers(0, 8, size=(n, 2)).astype(float) / 4
    if seed % 2:
        points = rng.normal(size=(n, 2))
    pairs = [(float(x), float(y)) for x, y in points]
    front = front_indices(pairs, x_direction, y_direction)  # type: ignore[arg-type]
    assert set(front) == brute_force_front(points, x_direction, y_direction)
    assert len(front) == len(set(front))
    assert front == sorted(front, key=lambda i: (pairs[i][0], pairs[i][1], i))


def test_ties_keep_equal_points_and_drop_the_worse_of_a_tie_on_one_axis() -> None:
    points = [(1.0, 2.0), (1.0, 3.0), (1.0, 2.0), (2.0, 1.0), (2.0, 2.0), (3.0, 1.0)]
    assert front_indices(points, "min", "min") == [0, 2, 3]
    assert front_indices(points, "max", "max") == [1, 4, 5]
    assert front_indices(points, "max", "min") == [5]
    assert front_indices(points, "min", "max") == [1]
    assert front_indices([], "min", "min") == []


def test_a_direction_that_is_neither_min_nor_max_is_refused() -> None:
    with pytest.raises(ValueError, match="x_direction must be 'min' or 'max'"):
        front_indices([(0.0, 0.0)], "lowest", "min")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="direction must be 'min' or 'max'"):
        ConstraintAxis("val/dp_gap", "down")  # type: ignore[arg-type]


def spec(**overrides: Any) -> SweepSpec:
    body: dict[str, Any] = {
        "name": "fronts",
        "task": {"name": "two_moons"},
        "constraint": {"kind": "sample_loss"},
        "methods": ["erm", "fl", "rfl"],
        "grid": {"epsilon": [0.1, 0.2, 0.3], "dual_lr": 0.05},
    }
    body.update(overrides)
    return SweepSpec.model_validate(body)


class GapConstraint(ConstraintParams):
    @property
    def front_metric(self) -> str | None:
        return "dp_gap"


def test_the_first_bound_is_the_axis_and_a_min_only_bound_makes_higher_better() -> None:
    at_least = spec(selection={"subject_to": {"train/feasible_frac": {"min": 0.95}}})
    assert constraint_axis(at_least) == ConstraintAxis(
        "train/feasible_frac", "max", {"min": 0.95, "max": None}
    )
    at_most = spec(
        selection={"subject_to": {"val/loss_max": {"max": 2.0}, "val/accuracy": {"min": 0.8}}}
    )
    assert constraint_axis(at_most) == ConstraintAxis(
        "val/loss_max", "min", {"min": None, "max": 2.0}
    )
    both = spec(selection={"subject_to": {"val/accuracy": {"min": 0.8, "max": 0.99}}})
    assert constraint_axis(both).direction == "min"


def test_without_bounds_the_kinds_front_metric_on_the_selections_split_else_the_violation() -> (
    None
):
    base = spec()
    gap = base.model_copy(update={"constraint": GapConstraint(kind="sample_loss")})
    assert constraint_axis(gap) == ConstraintAxis("val/dp_gap", "min")
    on_train = gap.model_copy(
        update={"selection": gap.selection.model_copy(update={"metric": "train/loss_mean"})}
    )
    assert constraint_axis(on_train).metric == "train/dp_gap"
    on_other = gap.model_copy(
        update={"selection": gap.selection.model_copy(update={"metric": "dual/lambda_max"})}
    )
    assert constraint_axis(on_other).metric == "val/dp_gap"
    plain = base.model_copy(update={"constraint": ConstraintParams(kind="sample_loss")})
    assert constraint_axis(plain) == ConstraintAxis(FALLBACK_METRIC, "min")


def outcome(trial_id: str, status: str = "succeeded", **metrics: float) -> TrialOutcome:
    """A trial of the method its id starts with; ``train__feasible_frac`` names
    ``train/feasible_frac``."""
    method = trial_id.split("-")[0]
    params = {} if method == "erm" else {"epsilon": float(trial_id.split("-")[1]) / 10}
    return TrialOutcome(
        trial_id, method, params, status, {k.replace("__", "/"): v for k, v in metrics.items()}
    )


BOUNDED = spec(
    selection={
        "metric": "val/loss_mean",
        "mode": "min",
        "subject_to": {"train/feasible_frac": {"min": 0.9}},
    }
)
OUTCOMES = [
    outcome("erm-0", val__loss_mean=0.20, train__feasible_frac=0.5),
    outcome("fl-1", val__loss_mean=0.30, train__feasible_frac=0.95),
    outcome("fl-2", val__loss_mean=0.25, train__feasible_frac=0.92),
    outcome("fl-3", val__loss_mean=0.31, train__feasible_frac=0.93),  # beaten by fl-1
    outcome("fl-4", val__loss_mean=math.nan, train__feasible_frac=0.99),
    outcome("fl-5", val__loss_mean=0.10),  # no feasible_frac
    outcome("fl-6", "failed", val__loss_mean=0.01, train__feasible_frac=1.0),
    outcome("fl-7", "diverged", val__loss_mean=0.01, train__feasible_frac=1.0),
    outcome("rfl-1", "failed"),
    outcome("rfl-2", val__loss_mean=0.27, train__feasible_frac=math.inf),
]


def test_the_section_has_every_methods_points_and_front_and_skips_the_unusable_trials() -> None:
    section = pareto_section(BOUNDED, OUTCOMES)
    assert section["x"] == {
        "metric": "train/feasible_frac",
        "direction": "max",
        "bound": {"min": 0.9, "max": None},
    }
    assert section["y"] == {"metric": "val/loss_mean", "mode": "min"}
    by_method = {m["method"]: m for m in section["methods"]}
    assert list(by_method) == ["erm", "fl", "rfl"]
    assert by_method["erm"]["front"] == ["erm-0"]
    fl = by_method["fl"]
    assert [p["trial_id"] for p in fl["points"]] == ["fl-1", "fl-2", "fl-3"]
    assert fl["points"][0] == {
        "trial_id": "fl-1",
        "x": 0.95,
        "y": 0.30,
        "params": {"epsilon": 0.1},
    }
    assert fl["front"] == ["fl-2", "fl-1"]  # ascending feasible share
    # rfl: one failed trial and one with an infinite metric: nothing to draw.
    assert by_method["rfl"] == {"method": "rfl", "points": [], "front": []}


def test_a_max_bound_makes_lower_better() -> None:
    at_most = spec(
        selection={
            "metric": "val/accuracy",
            "mode": "max",
            "subject_to": {"val/dp_gap": {"max": 0.1}},
        }
    )
    trials = [
        outcome("fl-1", val__accuracy=0.9, val__dp_gap=0.05),
        outcome("fl-2", val__accuracy=0.8, val__dp_gap=0.01),
        outcome("fl-3", val__accuracy=0.85, val__dp_gap=0.06),  # beaten by fl-1 on both
        outcome("fl-4", val__accuracy=0.95, val__dp_gap=0.2),
    ]
    section = pareto_section(at_most, trials)
    assert section["x"]["direction"] == "min"
    (_, fl, _) = section["methods"]
    assert fl["front"] == ["fl-2", "fl-1", "fl-4"]


def test_a_method_without_a_succeeded_trial_has_an_empty_front() -> None:
    section = pareto_section(BOUNDED, [o for o in OUTCOMES if o.status != "succeeded"])
    assert all(m["points"] == [] and m["front"] == [] for m in section["methods"])


def test_the_report_carries_the_section_as_json() -> None:
    report = build_report(BOUNDED, OUTCOMES, sweep_id="fronts-1")
    assert report["pareto"] == pareto_section(BOUNDED, OUTCOMES)
    assert json.loads(json.dumps(report["pareto"], allow_nan=False)) == report["pareto"]


def test_the_report_table_lists_each_methods_front_under_the_best_trials() -> None:
    console = Console(record=True, width=200)
    render_report(build_report(BOUNDED, OUTCOMES, sweep_id="fronts-1"), console)
    text = console.export_text()
    best, fronts = text.split("Pareto fronts", 1)
    assert "best per method" in best
    assert "train/feasible_frac (higher is better)" in fronts
    assert "val/loss_mean (lower is better)" in fronts
    rows = [line for line in fronts.splitlines() if "fl-" in line or "erm-" in line]
    assert [next(w for w in row.split() if "-" in w and w[0].isalpha()) for row in rows] == [
        "erm-0",
        "fl-2",
        "fl-1",
    ]
    assert "0.92" in rows[1]
    assert "0.25" in rows[1]
    assert "no trial with both metrics" in fronts  # rfl


def test_a_report_without_the_section_prints_only_the_best_trials() -> None:
    report = build_report(BOUNDED, OUTCOMES, sweep_id="fronts-1")
    del report["pareto"]
    console = Console(record=True, width=200)
    render_report(report, console)
    assert "Pareto" not in console.export_text()
