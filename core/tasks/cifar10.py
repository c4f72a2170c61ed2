"""CIFAR-10: 50,000 training and 10,000 test images (32×32 RGB, 10 balanced classes) from
the python version's pickled batches, which the user provides (no package ships them).
The test batch is the val split.

``data_dir`` is the ``cifar-10-batches-py`` folder (``data_batch_1`` … ``data_batch_5``,
``test_batch``) or its parent. Each batch is a pickled dict with bytes keys: ``b'data'``, a
uint8 array (N, 3072) of the red, green and blue 32×32 planes row by row, and
``b'labels'``, N class indices. Pixels are scaled to [0, 1] and normalised per channel with
the usual CIFAR-10 statistics (mean (0.4914, 0.4822, 0.4465), std (0.247, 0.243, 0.261)),
the ones the Feasible Learning code uses. Training batches are augmented with a random
crop (32, padding 4, black padding) and a horizontal flip, as torchvision's
``RandomCrop(32, padding=4)`` + ``RandomHorizontalFlip()`` do, vectorised on the batch's
device. ResNet-18 on all of it is a GPU workload; ``n_train``/``n_val`` take stratified
subsets for small budgets.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from dualtune.core.catalog.builtin_tasks import Cifar10Params
from dualtune.core.tasks.base import Dataset, Split, Task, cached_by_params
from dualtune.core.tasks.models import as_tensor
from dualtune.core.tasks.tabular import subset_pair
from dualtune.core.tasks.vision_models import ResNet18, small_cnn

TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
FOLDER = "cifar-10-batches-py"
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.247, 0.243, 0.261)
PADDING = 4
CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles a CIFAR batch and nothing else: a pickle can run any callable it names,
    so only what a batch needs (numpy arrays, and ``_codecs.encode`` for bytes written by
    protocol 2) may be looked up."""

    ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("_codecs", "encode"),
        }
    )

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"a CIFAR batch does not contain {module}.{name}")
        return super().find_class(module, name)


def batches_folder(data_dir: str) -> Path:
    """The folder holding the six batch files: ``data_dir`` or its ``cifar-10-batches-py``."""
    root = Path(data_dir)
    for folder in (root, root / FOLDER):
        if all((folder / name).is_file() for name in (*TRAIN_FILES, TEST_FILE)):
            return folder
    raise FileNotFoundError(
        f"CIFAR-10 batches not found in {root} or {root / FOLDER} (task.params.data_dir): "
        f"expected {', '.join(TRAIN_FILES)} and {TEST_FILE}. No package ships CIFAR-10; "
        "fetch the python version (cifar-10-python.tar.gz) yourself, unpack it and set "
        "data_dir to the cifar-10-batches-py folder or its parent"
    )


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 of one pickled batch."""
    with path.open("rb") as f:
        batch = _BatchUnpickler(f, encoding="bytes").load()
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise ValueError(f"{path} is not a CIFAR-10 batch (a dict with b'data' and b'labels')")
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{path}: b'data' must be uint8 (N, 3072), got {data.dtype} {data.shape}")
    if labels.shape != (data.shape[0],) or labels.min() < 0 or labels.max() >= len(CLASSES):
        raise ValueError(f"{path}: b'labels' must be N class indices in 0..{len(CLASSES) - 1}")
    return data.reshape(-1, 3, 32, 32), labels


def normalise(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 3, 32, 32) → float32, scaled to [0, 1] and standardised per channel."""
    mean = np.asarray(MEAN, dtype=np.float32)[:, None, None]
    std = np.asarray(STD, dtype=np.float32)[:, None, None]
    result: np.ndarray = (images.astype(np.float32) / 255.0 - mean) / std
    return result


def random_crop_flip(x: Tensor, generator: torch.Generator, fill: Tensor) -> Tensor:
    """Each image of (N, C, H, W) padded by ``PADDING`` with the per-channel ``fill``, cropped
    back to H×W at a uniform offset, and mirrored left-right with probability ½. The random
    numbers come from ``generator`` (CPU); the work happens on ``x``'s device."""
    n, c, h, w = x.shape
    offsets = torch.randint(0, 2 * PADDING + 1, (n, 2), generator=generator).to(x.device)
    flips = (torch.rand(n, generator=generator) < 0.5).to(x.device)
    padded = fill.to(x).reshape(1, c, 1, 1).expand(n, c, h + 2 * PADDING, w + 2 * PADDING)
    padded = padded.clone()
    padded[:, :, PADDING : PADDING + h, PADDING : PADDING + w] = x
    rows = offsets[:, :1] + torch.arange(h, device=x.device)
    ahead = torch.arange(w, device=x.device)
    cols = offsets[:, 1:] + torch.where(flips[:, None], w - 1 - ahead, ahead)
    picked = padded[
        torch.arange(n, device=x.device)[:, None, None], :, rows[:, :, None], cols[:, None]
    ]
    return picked.permute(0, 3, 1, 2).contiguous()  # advanced indexing put channels last


@cached_by_params
def _load(params: Cifar10Params) -> Dataset:
    folder = batches_folder(params.data_dir)
    parts = [read_batch(folder / name) for name in TRAIN_FILES]
    x_train = np.concatenate([images for images, _ in parts])
    y_train = np.concatenate([labels for _, labels in parts])
    x_val, y_val = read_batch(folder / TEST_FILE)
    x_train, y_train = subset_pair(x_train, y_train, params.n_train, params.data_seed)
    x_val, y_val = subset_pair(x_val, y_val, params.n_val, params.data_seed)
    return Dataset(
        Split(as_tensor(normalise(x_train), torch.float32), as_tensor(y_train, torch.int64)),
        Split(as_tensor(normalise(x_val), torch.float32), as_tensor(y_val, torch.int64)),
        num_classes=len(CLASSES),
    )


class Cifar10(Task):
    problem = "classification"
    eval_chunk = 1_024
    params: Cifar10Params

    def __init__(self, params: Cifar10Params) -> None:
        super().__init__(params)
        # The normalised value of a black pixel: torchvision pads the raw image with 0.
        self._fill = torch.tensor([-m / s for m, s in zip(MEAN, STD, strict=True)])

    def load(self) -> Dataset:
        return _load(self.params)

    def make_model(self, data: Dataset) -> nn.Module:
        if self.params.model == "cnn":
            return small_cnn(3, 32, len(CLASSES))
        return ResNet18(len(CLASSES))

    def pack_blocker(self) -> str | None:
        if self.params.model == "cnn":
            return None
        return "ResNet-18's BatchNorm updates its running statistics in place"

    def augment(self, x: Tensor, generator: torch.Generator) -> Tensor:
        if not self.params.augment:
            return x
        return random_crop_flip(x, generator, self._fill)

    def images(self, x: Tensor) -> np.ndarray:
        """The 32×32 RGB images of (N, 3, 32, 32) ``x``: ``normalise`` undone, channels last."""
        mean = np.asarray(MEAN, dtype=np.float64)[:, None, None]
        std = np.asarray(STD, dtype=np.float64)[:, None, None]
        pixels = x.detach().cpu().to(torch.float64).numpy().reshape(-1, 3, 32, 32)
        rgb: np.ndarray = (pixels * std + mean).clip(0.0, 1.0).transpose(0, 2, 3, 1)
        return rgb
