"""CIFAR-10 from the python batches (written here in the real format: no package ships the
data): shapes, labels, per-channel normalisation, the channel layout of a row, crop + flip
augmentation drawn from the trial's generator, and the CIFAR ResNet-18.

On the full data set ResNet-18 is a GPU workload; these tests use 100 + 20 images."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from dualtune.core import fit
from dualtune.core.spec import SpecError, load_spec
from dualtune.core.tasks.cifar10 import MEAN, PADDING, STD, read_batch
from dualtune.core.tasks.loading import load_task
from dualtune.core.tasks.vision_models import ResNet18
from tests.core.tasks.fixtures import write_cifar_batches

FIXTURE = tuple[Path, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@pytest.fixture
def cifar(tmp_path: Path) -> FIXTURE:
    folder = tmp_path / "cifar-10-batches-py"
    return (folder, *write_cifar_batches(folder))


def _normalised(raw: np.ndarray) -> np.ndarray:
    """Independent of the loader: torchvision's ToTensor then Normalize, per image."""
    images = raw.reshape(-1, 3, 32, 32) / 255.0
    result: np.ndarray = (images - np.array(MEAN)[:, None, None]) / np.array(STD)[:, None, None]
    return result


def test_batches_load_with_shapes_labels_and_normalisation(cifar: FIXTURE) -> None:
    folder, train_raw, train_labels, test_raw, test_labels = cifar
    for data_dir in (folder, folder.parent):  # the batches folder or its parent
        data = load_task("cifar10", {"data_dir": str(data_dir)}).load()
        assert data.train.x.shape == (100, 3, 32, 32)
        assert data.val.x.shape == (20, 3, 32, 32)
        assert data.train.x.dtype == torch.float32
        assert data.num_classes == 10
        assert data.train.y.tolist() == train_labels.tolist()
        assert data.val.y.tolist() == test_labels.tolist()
        assert set(data.train.y.tolist()) == set(range(10))
        assert np.allclose(data.train.x.numpy(), _normalised(train_raw), atol=1e-5)
        assert np.allclose(data.val.x.numpy(), _normalised(test_raw), atol=1e-5)
    # A row is the red, then the green, then the blue plane, each 32 rows of 32 pixels.
    red_pixel = train_raw[7, 5 * 32 + 3] / 255.0
    assert float(data.train.x[7, 0, 5, 3]) == pytest.approx((red_pixel - MEAN[0]) / STD[0])
    blue_pixel = train_raw[7, 2 * 1024 + 31 * 32 + 30] / 255.0
    assert float(data.train.x[7, 2, 31, 30]) == pytest.approx((blue_pixel - MEAN[2]) / STD[2])


def test_subsets_are_stratified(cifar: FIXTURE) -> None:
    folder = cifar[0]
    data = load_task("cifar10", {"data_dir": str(folder), "n_train": 50, "n_val": 10}).load()
    assert torch.bincount(data.train.y).tolist() == [5] * 10
    assert torch.bincount(data.val.y).tolist() == [1] * 10


def test_missing_data_and_missing_data_dir_are_clear_errors(tmp_path: Path) -> None:
    task = load_task("cifar10", {"data_dir": str(tmp_path)})
    with pytest.raises(FileNotFoundError, match=r"task\.params\.data_dir") as info:
        task.load()
    assert "data_batch_1" in str(info.value)
    with pytest.raises(SpecError, match=r"params\.data_dir"):
        load_spec(
            {
                "name": "no-data-dir",
                "task": {"name": "cifar10"},
                "constraint": {"kind": "sample_loss"},
                "methods": ["erm"],
            }
        )


class _Boom:
    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, ("true",))


def test_a_batch_may_hold_only_arrays(tmp_path: Path) -> None:
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": _Boom(), b"labels": [0]}, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="does not contain"):
        read_batch(path)


def _candidates(raw: np.ndarray) -> np.ndarray:
    """Every crop (9 × 9 offsets) and flip of one image, padded with black as torchvision's
    RandomCrop(32, padding=4) does before normalisation: (162, 3, 32, 32)."""
    padded = np.pad(raw.reshape(3, 32, 32), ((0, 0), (PADDING, PADDING), (PADDING, PADDING)))
    crops = [
        padded[:, dy : dy + 32, dx : dx + 32]
        for dy in range(2 * PADDING + 1)
        for dx in range(2 * PADDING + 1)
    ]
    crops += [c[:, :, ::-1] for c in crops]
    return _normalised(np.stack(crops))


def test_augmentation_is_a_crop_and_flip_drawn_from_the_generator(cifar: FIXTURE) -> None:
    folder, train_raw = cifar[0], cifar[1]
    task = load_task("cifar10", {"data_dir": str(folder)})
    x = task.load().train.x
    first = task.augment(x, torch.Generator().manual_seed(7))
    again = task.augment(x, torch.Generator().manual_seed(7))
    other = task.augment(x, torch.Generator().manual_seed(8))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert first.shape == x.shape
    flipped = 0
    for i in range(x.shape[0]):
        candidates = _candidates(train_raw[i])
        distance = np.abs(candidates - first[i].numpy()[None]).reshape(len(candidates), -1)
        match = int(distance.max(axis=1).argmin())
        assert distance[match].max() < 1e-5, f"image {i} is not a crop/flip of its source"
        flipped += match >= len(candidates) // 2
    assert 20 < flipped < 80  # flips with probability ½ (100 images)
    unchanged = load_task("cifar10", {"data_dir": str(folder), "augment": False})
    assert unchanged.augment(x, torch.Generator().manual_seed(7)) is x


def test_resnet18_is_the_cifar_variant_and_trains() -> None:
    model = ResNet18(10)
    # The 3×3-stem, 10-way CIFAR ResNet-18 has 11,173,962 parameters (torchvision's
    # ImageNet ResNet-18 with a 10-way head has 11,181,642: its 7×7 stem is 7,680 more).
    assert sum(p.numel() for p in model.parameters()) == 11_173_962
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    torch.manual_seed(0)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    out = model(x)
    assert out.shape == (4, 10)
    nn.functional.cross_entropy(out, y).backward()  # type: ignore[no-untyped-call]
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize(
    "params",
    [{"model": "cnn"}, {"model": "resnet18", "n_train": 20, "n_val": 10}],
)
def test_one_epoch_through_core_fit(cifar: FIXTURE, params: dict[str, Any]) -> None:
    spec = load_spec(
        {
            "name": "cifar-smoke",
            "task": {"name": "cifar10", "params": {**params, "data_dir": str(cifar[0])}},
            "constraint": {"kind": "sample_loss"},
            "methods": ["fl"],
            "grid": {"epsilon": 0.5, "dual_lr": 0.01, "seed": 0},
            "train": {"epochs": 1, "batch_size": 50, "device": "cpu"},
        }
    )
    (trial,) = spec.trials()
    result = fit(trial)
    assert result.per_sample["train_loss"].shape == (params.get("n_train", 100),)
    assert np.isfinite(result.final["val/loss_mean"])
