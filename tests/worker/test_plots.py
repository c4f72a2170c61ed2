"""Per-run plots stay cheap and faithful on large splits."""

from pathlib import Path

import numpy as np
import pytest
from matplotlib import image

from dualtune.worker.tracking import plots


def test_a_large_splits_cdf_is_drawn_at_a_few_thousand_ranks_with_both_ends() -> None:
    values = np.random.default_rng(0).exponential(size=1_000_000)
    x, y = plots._cdf(values)
    assert x.size <= plots.CURVE_POINTS
    assert (x[0], x[-1]) == (values.min(), values.max())
    assert (y[0], y[-1]) == (1 / values.size, 1.0)
    # Every drawn point lies on the exact empirical CDF.
    ranks = np.searchsorted(np.sort(values), x, side="right")
    np.testing.assert_allclose(y, ranks / values.size)


def test_the_scatter_keeps_the_hardest_samples_and_a_uniform_sample_of_the_rest() -> None:
    rng = np.random.default_rng(1)
    loss, lam = rng.exponential(size=200_000), rng.exponential(size=200_000)
    shown_loss, shown_lam = plots._scatter_sample(loss, lam)
    assert shown_loss.size <= plots.SCATTER_POINTS
    assert loss.max() in shown_loss
    assert lam.max() in shown_lam
    # Apart from the extremes the cloud has the data's density: similar medians.
    assert abs(np.median(shown_loss) - np.median(loss)) < 0.05


def test_multiplier_plot_of_a_million_samples_is_written(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    per_sample = {
        "train_loss": rng.exponential(size=10**6),
        "multiplier": rng.exponential(size=10**6),
    }
    path = plots.multipliers(per_sample, None, tmp_path / "m.png", "t")
    assert image.imread(path).shape[0] > 100


def _section(bound: dict[str, float | None] | None, direction: str) -> dict[str, object]:
    rng = np.random.default_rng(3)
    methods = []
    for method in ("erm", "fl", "rfl"):
        points = [
            {"trial_id": f"{method}-{i}", "x": float(x), "y": float(y), "params": {}}
            for i, (x, y) in enumerate(rng.uniform(size=(6, 2)))
        ]
        methods.append({"method": method, "points": points, "front": [points[0]["trial_id"]]})
    methods.append({"method": "alm", "points": [], "front": []})
    return {
        "x": {"metric": "val/dp_gap", "direction": direction, "bound": bound},
        "y": {"metric": "val/accuracy", "mode": "max"},
        "methods": methods,
    }


@pytest.mark.parametrize(
    ("bound", "direction"),
    [
        (None, "min"),
        ({"min": None, "max": 0.5}, "min"),
        ({"min": 0.3, "max": None}, "max"),
        ({"min": 0.2, "max": 0.6}, "min"),
        ({"min": None, "max": 5.0}, "min"),  # beyond every point: the view widens to it
    ],
)
def test_the_pareto_figure_is_written_for_every_kind_of_bound(
    tmp_path: Path, bound: dict[str, float | None] | None, direction: str
) -> None:
    path = plots.pareto(_section(bound, direction), tmp_path / "pareto.png", "t")
    assert path is not None
    assert image.imread(path).shape[:2] == (495, 770)


def test_no_pareto_figure_when_no_trial_has_both_metrics(tmp_path: Path) -> None:
    section = _section(None, "min")
    for entry in section["methods"]:  # type: ignore[attr-defined]
        entry["points"], entry["front"] = [], []
    assert plots.pareto(section, tmp_path / "pareto.png", "t") is None
    assert not (tmp_path / "pareto.png").exists()
