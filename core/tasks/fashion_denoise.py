"""Fashion-MNIST denoising with an unrolled transformer (arXiv 2601.17257's setting, on
images): the input is a clean image plus Gaussian noise, the target is the clean image, and
the model (``ReadoutTransformer``) emits an estimate after every block.

Data: stratified subsets (``n_train`` of the 60,000 training images, ``n_val`` of the
10,000 test images as val) of Debian's ``dataset-fashion-mnist``, pixels in [0, 1] and not
standardised (PSNR's peak is 1). ``x`` (N, 1, 28, 28) is clean + ``noise_std``·N(0, 1),
drawn once per image from ``data_seed`` and not clipped: the same noisy input every epoch,
so the train split's metrics measure the inputs training saw. ``y`` (N, 784) is the clean
image, flattened. The per-sample loss is the per-image mean squared error over the 784
pixels.

Metrics beyond §3.4, on each split (images in [0, 1], so PSNR = 10·log10(1 / MSE) per
image, averaged over images; an MSE below 1e-10 counts as 1e-10):

* ``psnr``: the final estimate's (the model output's);
* ``psnr_layer_<l>``: the estimate after block l, for each of the model's blocks;
* ``ood_psnr`` and ``ood_loss``: the final estimate's PSNR and mean loss on the split's
  clean images plus noise of std ``ood_noise_std`` (a level training never sees), drawn
  from a torch generator seeded with ``data_seed``: the same noise at every evaluation.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from dualtune.core.catalog.builtin_tasks import FashionDenoiseParams
from dualtune.core.tasks.base import Dataset, Split, Task, cached_by_params
from dualtune.core.tasks.fashion_mnist import read_split
from dualtune.core.tasks.models import as_tensor
from dualtune.core.tasks.readout_transformer import ReadoutTransformer
from dualtune.core.tasks.tabular import subset_pair

IMAGE_SIZE = 28
MIN_MSE = 1e-10


@functools.cache
def _images(folder: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The split's uint8 images and labels, read once per process: the model parameters
    are task parameters too, so a sweep over them loads new datasets from the same files."""
    return read_split(Path(folder), split)


@cached_by_params
def _load(params: FashionDenoiseParams) -> Dataset:
    (x_train, y_train), (x_val, y_val) = (_images(params.data_dir, s) for s in ("train", "val"))
    x_train, _ = subset_pair(x_train, y_train, params.n_train, params.data_seed)
    x_val, _ = subset_pair(x_val, y_val, params.n_val, params.data_seed)
    rng = np.random.default_rng(params.data_seed)

    def split(images: np.ndarray) -> Split:
        clean = images.astype(np.float32) / 255.0
        noise = rng.standard_normal(clean.shape).astype(np.float32)
        noisy = clean + np.float32(params.noise_std) * noise
        return Split(
            as_tensor(noisy[:, None], torch.float32),
            as_tensor(clean.reshape(len(clean), -1), torch.float32),
        )

    return Dataset(split(x_train), split(x_val), num_classes=None)


def psnr(mse: Tensor) -> Tensor:
    """PSNR in dB of images in [0, 1] with mean squared error ``mse``: 10·log10(1 / mse)."""
    return -10.0 * torch.log10(mse.clamp_min(MIN_MSE))


def _chunked(run: Callable[[Tensor], Tensor], x: Tensor, chunk: int, dim: int) -> Tensor:
    return torch.cat([run(x[i : i + chunk]) for i in range(0, x.shape[0], chunk)], dim=dim)


class FashionDenoise(Task):
    problem = "regression"
    eval_chunk = 4_096
    params: FashionDenoiseParams

    def load(self) -> Dataset:
        return _load(self.params)

    def make_model(self, data: Dataset) -> nn.Module:
        p = self.params
        return ReadoutTransformer(
            IMAGE_SIZE, p.patch, p.width, p.heads, p.blocks, shared_head=p.shared_head
        )

    def per_sample_loss(self, output: Tensor, y: Tensor) -> Tensor:
        """The per-image mean squared error over the pixels."""
        return (output.reshape(y.shape) - y).pow(2).mean(dim=1)

    def images(self, x: Tensor) -> np.ndarray:
        """The noisy inputs, clipped to [0, 1]."""
        pixels = x.detach().cpu().to(torch.float64).clamp(0.0, 1.0)
        shown: np.ndarray = pixels.numpy().reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
        return shown

    def extra_metrics(
        self, model: nn.Module, output: Tensor, split: Split, prefix: str
    ) -> dict[str, Tensor]:
        if not isinstance(model, ReadoutTransformer):
            raise ValueError(
                f"fashion_denoise metrics need its ReadoutTransformer, got {type(model).__name__}"
            )
        clean = split.y
        estimates = _chunked(model.forward_readouts, split.x, self.eval_chunk, dim=1)
        layer_psnr = psnr((estimates - clean).pow(2).mean(dim=2)).mean(dim=1)
        metrics = {f"{prefix}/psnr": layer_psnr[-1]}
        metrics.update({f"{prefix}/psnr_layer_{i}": v for i, v in enumerate(layer_psnr)})
        generator = torch.Generator().manual_seed(self.params.data_seed)
        noise = torch.randn(clean.shape, generator=generator, dtype=clean.dtype)
        noisy = clean + self.params.ood_noise_std * noise.to(clean.device)
        shaped = noisy.reshape(split.x.shape)
        ood = self.per_sample_loss(_chunked(model, shaped, self.eval_chunk, dim=0), clean)
        metrics[f"{prefix}/ood_loss"] = ood.mean()
        metrics[f"{prefix}/ood_psnr"] = psnr(ood).mean()
        return metrics
