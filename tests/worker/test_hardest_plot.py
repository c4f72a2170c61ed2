"""``plots/hardest.png``: the samples ``hardest.csv`` lists, in its order, as pictures."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib import image

from dualtune.core.engine.hardest import HardestSamples, hardest_samples
from dualtune.core.tasks.loading import load_task
from dualtune.worker.tracking import per_sample as tables
from dualtune.worker.tracking import plots


@pytest.mark.parametrize("multipliers", [True, False], ids=["per-sample λ", "no λ"])
def test_the_pictures_are_the_first_rows_of_hardest_csv(tmp_path: Path, multipliers: bool) -> None:
    task = load_task("digits", {})
    data = task.load()
    n = data.train.n
    rng = np.random.default_rng(3)
    # Rounded, so that ties (broken by loss, then by row) occur.
    arrays = {
        "train_loss": rng.exponential(size=n).round(1),
        "train_label": data.train.y.numpy(),
        "val_loss": rng.exponential(size=data.val.n),
        "val_label": data.val.y.numpy(),
    }
    if multipliers:
        arrays["multiplier"] = rng.integers(0, 4, size=n).astype(np.float64)
    found = hardest_samples(task, data.train.x, arrays, k=16)
    assert found is not None
    listed = pd.read_csv(tables.write_hardest(arrays, tmp_path)).head(16)
    assert found.index.tolist() == listed["index"].tolist()
    np.testing.assert_array_equal(found.label, listed["label"].to_numpy())
    np.testing.assert_allclose(found.loss, listed["loss"].to_numpy())
    np.testing.assert_allclose(found.multiplier, listed["multiplier"].to_numpy())


@pytest.mark.parametrize(
    ("k", "shape"), [(16, (8, 8)), (3, (32, 32, 3)), (1, (28, 28))], ids=["grey", "rgb", "one"]
)
def test_the_figure_is_written_for_grey_and_colour_images(
    tmp_path: Path, k: int, shape: tuple[int, ...]
) -> None:
    rng = np.random.default_rng(0)
    samples = HardestSamples(
        index=np.arange(k, dtype=np.int64),
        images=rng.random((k, *shape)),
        label=np.arange(k) % 10,
        loss=rng.exponential(size=k),
        multiplier=np.where(np.arange(k) % 2 == 0, rng.exponential(size=k), np.nan),
    )
    path = plots.hardest(samples, tmp_path / "hardest.png", "fl ε=0.05: the hardest samples")
    picture = image.imread(path)
    assert picture.shape[0] > 100
    assert picture.shape[1] > 100
