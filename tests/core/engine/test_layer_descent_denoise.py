"""``layer_descent`` on the task it was written for: an unrolled transformer denoiser
(``fashion_denoise``, arXiv 2601.17257's setting on Fashion-MNIST images).

The objective is the final estimate's loss; descent is the constraint. Each block has its
own estimate head, so ERM never trains the intermediate heads and nothing orders their
estimates: the claim is checkable here, where on digits' shared readout ERM already
descends (docs/layer_descent.md). Mutation check: with FL's dual step a no-op
(``FL.dual_error`` returning ``None``) this test fails (docs/layer_descent.md).
"""

import itertools
from collections.abc import Callable, Iterator

import pytest
import torch

from dualtune.core.engine.constraints import layer_losses
from dualtune.core.engine.trainer import Trainer
from dualtune.core.spec import TrialConfig
from tests.core.tasks.fixtures import require_fashion_mnist

MakeTrial = Callable[..., TrialConfig]

TASK = {"name": "fashion_denoise", "params": {"n_train": 1000, "n_val": 500}}
TRAIN = {"epochs": 10, "batch_size": 64, "optimizer": {"name": "adam", "lr": 0.01}}
SEEDS = (0, 1, 2)


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def train(config: TrialConfig) -> tuple[dict[str, float], list[float], float]:
    """Train a trial: its final metrics, the per-layer mean val losses, and the val loss of
    the noisy input itself (the estimate of a denoiser that does nothing)."""
    trainer = Trainer(config)
    while trainer.epoch < config.train.epochs:
        trainer.train_epoch()
    metrics = trainer.evaluate()
    model, val = trainer.model, trainer.data.val
    with torch.no_grad():
        readouts = model.forward_readouts(val.x)  # type: ignore[operator]
        means = layer_losses(trainer.task, readouts, val.y).mean(dim=1)
        untouched = trainer.task.per_sample_loss(val.x.reshape(val.n, -1), val.y).mean()
    return metrics, means.tolist(), float(untouched)


def descends(layers: list[float]) -> bool:
    return all(b < a for a, b in itertools.pairwise(layers))


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_fl_descends_layer_by_layer_where_erm_does_not(trial: MakeTrial, seed: int) -> None:
    """At ε = 0.05: FL's per-layer mean val loss falls at every block and more val images
    descend at every block than under ERM; ERM's intermediate estimates are the noisy input
    (untrained zero heads), so its layers do not descend. Both reach the same final
    estimate (ERM's objective is FL's). FL buys descent partly by making its first
    estimate worse than the noisy input: the constraint bounds ratios, not levels."""
    require_fashion_mnist()
    constraint = {"kind": "layer_descent"}
    grid = {"seed": seed}
    fl, fl_layers, noisy = train(
        trial(
            "fl",
            task=TASK,
            constraint=constraint,
            grid={**grid, "epsilon": 0.05, "dual_lr": 0.5},
            train=TRAIN,
        )
    )
    erm, erm_layers, _ = train(
        trial("erm", task=TASK, constraint=constraint, grid=grid, train=TRAIN)
    )

    assert descends(fl_layers), fl_layers
    assert fl["val/descent_frac"] > erm["val/descent_frac"], (fl, erm)
    assert not descends(erm_layers), erm_layers
    assert erm_layers[:-1] == pytest.approx([noisy] * (len(erm_layers) - 1))
    # The same denoiser at the end: final val PSNR within 0.5 dB, well above the input's.
    assert abs(fl["val/psnr"] - erm["val/psnr"]) < 0.5
    assert fl["val/psnr"] > 10 * torch.log10(torch.tensor(1 / noisy)).item() + 5
    # Descent bought from below: FL's first estimate is worse than doing nothing.
    assert fl_layers[0] > noisy
