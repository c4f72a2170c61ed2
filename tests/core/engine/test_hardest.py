"""The hardest training samples, as images: the largest multipliers first (then the largest
losses), each image the picture of its own row, shown as the raw data has it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch import Tensor

from dualtune.core.catalog.tasks import TaskParams
from dualtune.core.engine.hardest import HardestSamples, hardest_order, hardest_samples
from dualtune.core.tasks.base import Dataset, Task
from dualtune.core.tasks.loading import load_task
from tests.core.tasks import fixtures

NAN = float("nan")


def per_sample(loss: list[float], lam: list[float] | None = None) -> dict[str, np.ndarray]:
    arrays = {"train_loss": np.asarray(loss), "train_label": np.arange(len(loss)) % 3}
    if lam is not None:
        arrays["multiplier"] = np.asarray(lam)
    return arrays


def test_the_order_is_multiplier_then_loss_largest_first_nan_last_ties_by_row() -> None:
    arrays = per_sample(
        loss=[0.1, 0.9, 0.5, 0.5, NAN, 0.2, 0.7],
        lam=[0.0, 2.0, 1.0, 1.0, 3.0, NAN, 1.0],
    )
    # λ 3 (row 4), λ 2 (1), the three λ 1 by loss (6: 0.7, then 2 and 3 tied at 0.5 in row
    # order), λ 0 (0), λ NaN (5).
    assert hardest_order(arrays).tolist() == [4, 1, 6, 2, 3, 0, 5]


def test_without_per_sample_multipliers_the_order_is_by_loss() -> None:
    by_loss = [1, 3, 2, 0]
    assert hardest_order(per_sample([0.1, 0.9, 0.3, 0.5])).tolist() == by_loss
    # A dense multiplier table (one per group or class) is not per sample.
    assert hardest_order(per_sample([0.1, 0.9, 0.3, 0.5], lam=[5.0, 1.0])).tolist() == by_loss
    assert hardest_order(per_sample([0.1, 0.9, 0.3, 0.5], lam=[NAN] * 4)).tolist() == by_loss


def test_a_task_whose_inputs_are_not_images_has_none() -> None:
    task = load_task("two_moons", {"n_train": 32})
    data = task.load()
    arrays = per_sample(list(np.linspace(0, 1, data.train.n)))
    assert task.images(data.train.x) is None
    assert hardest_samples(task, data.train.x, arrays) is None


def test_digits_hardest_are_sklearns_images_of_those_rows() -> None:
    task = load_task("digits", {})
    data = task.load()
    n = data.train.n
    rng = np.random.default_rng(0)
    arrays = {
        "train_loss": rng.exponential(size=n),
        "train_label": data.train.y.numpy(),
        "multiplier": rng.exponential(size=n),
    }
    found = hardest_samples(task, data.train.x, arrays, k=5)
    assert isinstance(found, HardestSamples)
    top = np.argsort(-arrays["multiplier"])[:5]
    assert found.index.tolist() == top.tolist()
    np.testing.assert_array_equal(found.multiplier, arrays["multiplier"][top])
    np.testing.assert_array_equal(found.loss, arrays["train_loss"][top])
    np.testing.assert_array_equal(found.label, data.train.y.numpy()[top])
    assert found.images.shape == (5, 8, 8)
    # Each picture is one of sklearn's 8×8 digits (pixels 0..16), of the sample's label.
    digits = load_digits()
    for image, label in zip(found.images, found.label, strict=True):
        same = np.flatnonzero((np.abs(digits.images / 16.0 - image) < 1e-6).all(axis=(1, 2)))
        assert same.size >= 1
        assert label in digits.target[same]


def test_cifar_images_are_the_raw_rgb_bytes(tmp_path: Path) -> None:
    train_data, _, _, _ = fixtures.write_cifar_batches(tmp_path, per_batch=4)
    task = load_task("cifar10", {"data_dir": str(tmp_path), "model": "cnn"})
    data = task.load()
    images = task.images(data.train.x)
    assert images is not None
    assert images.shape == (20, 32, 32, 3)
    # b'data' holds the red, green and blue planes row by row.
    raw = train_data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1) / 255.0
    np.testing.assert_allclose(images, raw, atol=1e-6)


def test_fashion_mnist_images_keep_black_black_and_the_brightest_white() -> None:
    # The loader standardises raw/255 with the training split's mean and std, whatever
    # they are: any (mean, std) must come back to the raw picture, up to its brightest.
    raw = np.random.default_rng(0).integers(0, 200, size=(16, 28, 28)).astype(np.uint8)
    raw[:, :4] = 0  # the black border every Fashion-MNIST picture has
    task = load_task("fashion_mnist", {})
    for mean, std in ((0.286, 0.353), (0.5, 0.1)):
        x = torch.as_tensor((raw / 255.0 - mean) / std, dtype=torch.float32)[:, None]
        images = task.images(x)
        assert images is not None
        assert images.shape == (16, 28, 28)
        np.testing.assert_allclose(images, raw / raw.max(), atol=1e-5)


class BadImages(Task):
    """Images of the wrong shape: one per row, but flat."""

    problem = "classification"

    def load(self) -> Dataset:
        raise NotImplementedError

    def make_model(self, data: Dataset) -> torch.nn.Module:
        raise NotImplementedError

    def images(self, x: Tensor) -> np.ndarray:
        return x.numpy()


def test_images_of_the_wrong_shape_name_the_task() -> None:
    task = BadImages(TaskParams())
    arrays = per_sample([0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match=r"BadImages.images must return 2 images"):
        hardest_samples(task, torch.rand(3, 5), arrays, k=2)
    with pytest.raises(ValueError, match="k must be at least 1"):
        hardest_samples(task, torch.rand(3, 5), arrays, k=0)
