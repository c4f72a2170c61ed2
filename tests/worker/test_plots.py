"""Per-run plots stay cheap and faithful on large splits."""

from pathlib import Path

import numpy as np
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
