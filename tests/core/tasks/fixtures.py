"""Data for the real-data loader tests.

Fashion-MNIST comes from Debian's ``dataset-fashion-mnist``: its tests skip with the
install hint when the files are missing, and fail instead where the environment sets
``DUALTUNE_REQUIRE_DATASETS=1`` (CI does), so a missing install step cannot hide behind a
skip. CIFAR-10 is not shipped anywhere, so its tests write small batches in the real file
format.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def require_fashion_mnist() -> Path:
    """The Debian Fashion-MNIST folder; skips (or fails, under DUALTUNE_REQUIRE_DATASETS=1)
    when its files are missing."""
    missing = [f for f in FASHION_MNIST_FILES if not (FASHION_MNIST_DIR / f).is_file()]
    if missing:
        message = (
            f"Fashion-MNIST files missing from {FASHION_MNIST_DIR} ({', '.join(missing)}): "
            "apt-get install dataset-fashion-mnist"
        )
        if os.environ.get("DUALTUNE_REQUIRE_DATASETS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return FASHION_MNIST_DIR


def write_cifar_batches(
    folder: Path, per_batch: int = 20, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Write ``data_batch_1..5`` and ``test_batch`` into ``folder`` as the python version of
    CIFAR-10 has them: a protocol-2 pickle of a dict with bytes keys, ``b'data'`` a uint8
    (N, 3072) array and ``b'labels'`` a list of ints. Labels cycle through 0..9. Returns the
    raw train and test ``(data, labels)``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    written: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name in names:
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = np.arange(per_batch) % 10
        batch = {
            b"batch_label": name.encode(),
            b"labels": [int(v) for v in labels],
            b"data": data,
            b"filenames": [f"{name}_{i}.png".encode() for i in range(per_batch)],
        }
        # The real files were pickled by numpy 1.x, whose arrays name numpy.core; numpy 2
        # writes numpy._core. Name the old module, as the real files do.
        blob = pickle.dumps(batch, protocol=2).replace(
            b"numpy._core.multiarray", b"numpy.core.multiarray"
        )
        (folder / name).write_bytes(blob)
        written[name] = (data, labels)
    train_data = np.concatenate([written[n][0] for n in names[:5]])
    train_labels = np.concatenate([written[n][1] for n in names[:5]])
    return train_data, train_labels, *written["test_batch"]
