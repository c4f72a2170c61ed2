"""Fashion-MNIST: the official 60,000 training and 10,000 test images (28×28 grey, 10
balanced classes), read from the IDX files Debian's ``dataset-fashion-mnist`` installs in
``/usr/share/datasets/fashion-mnist``. The test set is the val split.

Pixels are scaled to [0, 1] and standardised with the training split's mean and standard
deviation (one scalar each). ``x`` is stored as (N, 1, 28, 28); the MLP flattens it.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from dualtune.core.catalog.builtin_tasks import FashionMnistParams
from dualtune.core.tasks.base import Dataset, Split, Task, cached_by_params
from dualtune.core.tasks.models import as_tensor
from dualtune.core.tasks.tabular import subset_pair
from dualtune.core.tasks.vision_models import image_mlp, small_cnn

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "val": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049
CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


def _read_bytes(folder: Path, name: str) -> bytes:
    if (folder / f"{name}.gz").is_file():
        with gzip.open(folder / f"{name}.gz", "rb") as f:
            return f.read()
    if (folder / name).is_file():
        return (folder / name).read_bytes()
    raise FileNotFoundError(
        f"Fashion-MNIST file {name}(.gz) not found in {folder} (task.params.data_dir); "
        "install Debian's copy with `apt-get install dataset-fashion-mnist` (it fills "
        "/usr/share/datasets/fashion-mnist) or point data_dir at a folder holding the four "
        "IDX files"
    )


def read_idx(data: bytes, magic: int, name: str) -> np.ndarray:
    """The uint8 array of an IDX file: big-endian magic (0x0000 08 ndim), then one
    big-endian uint32 per dimension, then the values."""
    if len(data) < 4 or int(np.frombuffer(data, dtype=">u4", count=1)[0]) != magic:
        raise ValueError(f"{name} is not an IDX file of the expected type (magic {magic})")
    ndim = magic & 0xFF
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    offset = 4 + 4 * ndim
    expected = offset + int(np.prod(dims))
    if len(data) != expected:
        raise ValueError(f"{name} holds {len(data)} bytes; its header {dims} needs {expected}")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)


def read_split(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) and labels (N,) of ``train`` or ``val`` (the official test set)."""
    images_name, labels_name = FILES[split]
    images = read_idx(_read_bytes(folder, images_name), IMAGES_MAGIC, images_name)
    labels = read_idx(_read_bytes(folder, labels_name), LABELS_MAGIC, labels_name)
    if len(images) != len(labels):
        raise ValueError(f"{images_name} has {len(images)} images but {len(labels)} labels")
    return images, labels


@cached_by_params
def _load(params: FashionMnistParams) -> Dataset:
    folder = Path(params.data_dir)
    (x_train, y_train), (x_val, y_val) = (read_split(folder, s) for s in ("train", "val"))
    x_train, y_train = subset_pair(x_train, y_train, params.n_train, params.data_seed)
    x_val, y_val = subset_pair(x_val, y_val, params.n_val, params.data_seed)
    scaled = x_train.astype(np.float32) / 255.0
    mean, std = float(scaled.mean()), float(scaled.std())

    def split(images: np.ndarray, labels: np.ndarray) -> Split:
        x = (images.astype(np.float32) / 255.0 - mean) / std
        return Split(
            as_tensor(x[:, None], torch.float32), as_tensor(labels.astype(np.int64), torch.int64)
        )

    return Dataset(split(x_train, y_train), split(x_val, y_val), num_classes=len(CLASSES))


class FashionMnist(Task):
    problem = "classification"
    eval_chunk = 4_096
    params: FashionMnistParams

    def load(self) -> Dataset:
        return _load(self.params)

    def make_model(self, data: Dataset) -> nn.Module:
        if self.params.model == "cnn":
            return small_cnn(1, 28, len(CLASSES))
        return image_mlp((1, 28, 28), self.params.hidden, len(CLASSES))

    def images(self, x: Tensor) -> np.ndarray:
        """The 28×28 images of (N, 1, 28, 28) ``x``, on the batch's common range: the
        standardisation is one affine map for the whole set and its constants are not kept,
        so its darkest pixel (the black background) is shown black and its brightest white,
        which keeps every image's contrast relative to the others."""
        pixels = x.detach().cpu().to(torch.float64).numpy().reshape(-1, 28, 28)
        if pixels.size == 0:
            return pixels
        low, high = float(pixels.min()), float(pixels.max())
        if high <= low:
            return np.zeros_like(pixels)
        scaled: np.ndarray = (pixels - low) / (high - low)
        return scaled
