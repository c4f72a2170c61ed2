"""``fashion_denoise``: Fashion-MNIST images plus fixed Gaussian noise as inputs, the clean
images as targets, and a patch transformer with an estimate after every block. Checked
against numpy closed forms (per-image MSE, PSNR = 10·log10(1/MSE) for pixels in [0, 1])
and the model's construction (zero heads: every estimate is the input)."""

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from dualtune.core.catalog import TASKS
from dualtune.core.engine.constraints import LayerDescent, layer_losses
from dualtune.core.spec import load_spec, metric_names_for
from dualtune.core.tasks.base import Split
from dualtune.core.tasks.contract import check_task
from dualtune.core.tasks.fashion_denoise import FashionDenoise
from dualtune.core.tasks.loading import load_task
from dualtune.core.tasks.readout_transformer import (
    ReadoutTransformer,
    from_patches,
    to_patches,
)
from tests.core.tasks.fixtures import require_fashion_mnist

SMALL = {"n_train": 60, "n_val": 40, "noise_std": 0.3, "ood_noise_std": 0.6, "width": 16}


@pytest.fixture
def task() -> Iterator[FashionDenoise]:
    require_fashion_mnist()
    built = load_task("fashion_denoise", SMALL)
    assert isinstance(built, FashionDenoise)
    return built


def numpy_psnr(estimate: np.ndarray, clean: np.ndarray) -> float:
    """Mean over images of 10·log10(1 / per-image MSE)."""
    mse = ((estimate.reshape(len(clean), -1) - clean) ** 2).mean(axis=1)
    return float(np.mean(10 * np.log10(1 / mse)))


def test_inputs_are_clean_targets_plus_fixed_noise_of_noise_std(task: FashionDenoise) -> None:
    data = task.load()
    assert (data.train.n, data.val.n, data.num_classes) == (60, 40, None)
    assert data.train.x.shape == (60, 1, 28, 28)
    assert data.train.y.shape == (60, 784)
    clean = data.train.y.numpy()
    assert clean.min() >= 0
    assert clean.max() <= 1
    noise = data.train.x.numpy().reshape(60, -1) - clean
    assert abs(noise.mean()) < 0.01
    assert noise.std() == pytest.approx(0.3, rel=0.02)
    # Seeded: the same noise on every load, other noise for another data_seed.
    again = load_task("fashion_denoise", {**SMALL, "width": 32}).load()
    assert torch.equal(again.train.x, data.train.x)
    other = load_task("fashion_denoise", {**SMALL, "data_seed": 1}).load()
    assert not torch.equal(other.val.x, data.val.x)


def test_per_sample_loss_is_the_per_image_mean_squared_error(task: FashionDenoise) -> None:
    rng = np.random.default_rng(0)
    output, target = rng.random((5, 784)), rng.random((5, 784))
    losses = task.per_sample_loss(torch.tensor(output), torch.tensor(target))
    assert losses.numpy() == pytest.approx(((output - target) ** 2).mean(axis=1))


def test_psnr_metrics_match_the_closed_form_per_layer(task: FashionDenoise) -> None:
    data = task.load()
    torch.manual_seed(0)
    model = task.make_model(data)
    assert isinstance(model, ReadoutTransformer)
    with torch.no_grad():  # give the heads weights: distinct estimates per layer
        for head in model.heads:
            for p in head.parameters():
                p.normal_(0.0, 0.05)
        estimates = model.forward_readouts(data.val.x).numpy()
        metrics = task.extra_metrics(model, model(data.val.x), data.val, "val")
    clean = data.val.y.numpy()
    for layer in range(4):
        expected = numpy_psnr(estimates[layer], clean)
        assert float(metrics[f"val/psnr_layer_{layer}"]) == pytest.approx(expected, rel=1e-4)
    assert float(metrics["val/psnr"]) == float(metrics["val/psnr_layer_3"])
    assert set(metrics) == {
        "val/psnr",
        *(f"val/psnr_layer_{layer}" for layer in range(4)),
        "val/ood_psnr",
        "val/ood_loss",
    }


def test_an_untrained_model_is_the_identity_so_ood_loss_is_the_ood_noise_power(
    task: FashionDenoise,
) -> None:
    data = task.load()
    torch.manual_seed(0)
    model = task.make_model(data)
    with torch.no_grad():
        first = task.extra_metrics(model, model(data.val.x), data.val, "val")
        again = task.extra_metrics(model, model(data.val.x), data.val, "val")
    # Zero heads: every estimate is the noisy input, so its PSNR is the input's.
    noisy = numpy_psnr(data.val.x.numpy(), data.val.y.numpy())
    for layer in range(4):
        assert float(first[f"val/psnr_layer_{layer}"]) == pytest.approx(noisy, rel=1e-5)
    # On clean + 0.6·N(0, 1) the identity's per-image MSE is 0.36 up to sampling (784 × 40).
    assert float(first["val/ood_loss"]) == pytest.approx(0.36, rel=0.02)
    assert float(first["val/ood_psnr"]) == pytest.approx(-10 * np.log10(0.36), abs=0.1)
    assert {k: float(v) for k, v in again.items()} == {k: float(v) for k, v in first.items()}


def test_patches_are_the_image_tiles_in_row_major_order() -> None:
    image = torch.arange(2 * 28 * 28, dtype=torch.float32).reshape(2, 1, 28, 28)
    tokens = to_patches(image, 4)
    assert tokens.shape == (2, 49, 16)
    # Token 8 is the tile of row 1, column 1 (7 tiles per row).
    assert torch.equal(tokens[1, 8], image[1, 0, 4:8, 4:8].reshape(16))
    assert torch.equal(from_patches(tokens, 4), image.reshape(2, 784))


def test_the_transformer_keeps_its_readouts_for_the_kind_and_shares_a_head_on_request() -> None:
    torch.manual_seed(0)
    model = ReadoutTransformer(28, 7, 8, 2, 3)
    x = torch.rand(4, 1, 28, 28)
    output = model(x)
    readouts = model.take_readouts(x, output)
    assert readouts.shape == (3, 4, 784)
    assert torch.equal(readouts[-1], output)
    assert torch.equal(readouts, x.reshape(1, 4, 784).expand(3, 4, 784))  # zero heads
    assert len(ReadoutTransformer(28, 7, 8, 2, 3, shared_head=True).heads) == 1
    assert len(model.heads) == 3
    with pytest.raises(ValueError, match="patch 5 does not divide image_size 28"):
        ReadoutTransformer(28, 5, 8, 2, 3)


def test_params_need_heads_that_divide_the_width() -> None:
    with pytest.raises(ValidationError, match="width 30 must be a multiple of heads 4"):
        TASKS["fashion_denoise"].params.model_validate({"width": 30, "heads": 4})


def test_the_task_meets_the_task_contract(task: FashionDenoise) -> None:
    check_task(task, TASKS["fashion_denoise"], constraint_kind="layer_descent")


def test_layer_descent_on_image_targets_has_descent_frac_but_no_accuracy(
    task: FashionDenoise,
) -> None:
    clean = torch.zeros(2, 784)
    # Readouts: sample 0's error falls at each layer (1, ½, ¼ per pixel); sample 1's rises.
    readouts = torch.stack(
        [
            torch.stack([torch.full((784,), v), torch.full((784,), w)])
            for v, w in ((1.0, 0.25), (0.5, 0.5), (0.25, 1.0))
        ]
    )
    losses = layer_losses(task, readouts, clean)
    assert losses.tolist() == [[1.0, 0.0625], [0.25, 0.25], [0.0625, 1.0]]

    class Fixed(torch.nn.Module):
        num_readouts = 3

        def forward_readouts(self, x: torch.Tensor) -> torch.Tensor:
            return readouts

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return readouts[-1]

        def take_readouts(self, x: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
            return readouts

    kind, model = LayerDescent(3, epsilon=0.0, noise_std=0.5), Fixed()
    split = Split(torch.zeros(2, 1, 28, 28), clean)
    with torch.no_grad():
        metrics = kind.extra_metrics(task, model, model(split.x), split, "val")
    assert {k: float(v) for k, v in metrics.items()} == {"val/descent_frac": 0.5}


def test_the_spec_offers_layer_descent_and_the_psnr_metrics_but_no_accuracy() -> None:
    names = metric_names_for("regression", "layer_descent", TASKS["fashion_denoise"].extra_metrics)
    assert {"val/descent_frac", "val/psnr", "val/psnr_layer_0", "val/ood_psnr"} <= set(names)
    assert not any("accuracy" in name for name in names)
    base = {
        "name": "denoise",
        "task": {"name": "fashion_denoise"},
        "constraint": {"kind": "layer_descent"},
        "methods": ["erm", "fl"],
        "grid": {"epsilon": [0.05]},
    }
    spec = load_spec({**base, "selection": {"metric": "val/psnr", "mode": "max"}})
    assert [t.method for t in spec.trials()] == ["erm", "fl"]
    with pytest.raises(ValueError, match="noisy_accuracy"):
        load_spec({**base, "selection": {"metric": "val/noisy_accuracy", "mode": "max"}})
