"""The hardest training samples at the end of a trial, as pictures: where the FL paper's
multipliers point, seen rather than read (``plots/hardest.png``, beside ``hardest.csv``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from dualtune.core.tasks.base import Task

HARDEST_IMAGES = 16


@dataclass(frozen=True)
class HardestSamples:
    """The ``k`` hardest training samples, hardest first.

    Attributes:
        index: each sample's row in the training split (int64).
        images: (k, H, W) grey or (k, H, W, 3) RGB, in [0, 1] (``Task.images``).
        label: each sample's label.
        loss: each sample's final training loss.
        multiplier: each sample's final multiplier; NaN for constraint kinds whose
            multipliers are not per sample.
    """

    index: np.ndarray
    images: np.ndarray
    label: np.ndarray
    loss: np.ndarray
    multiplier: np.ndarray


def hardest_order(per_sample: Mapping[str, np.ndarray]) -> np.ndarray:
    """Training rows, hardest first: by multiplier, then loss, both largest first (by loss
    alone where there are no per-sample multipliers); NaN last, ties in row order. The
    order of ``hardest.csv`` (``worker.tracking.per_sample.write_hardest``)."""
    loss = np.asarray(per_sample["train_loss"], dtype=np.float64)
    lam = _multiplier(per_sample, loss.shape[0])
    key = lam if not np.isnan(lam).all() else loss
    # np.lexsort is stable and sorts by its last key first; negating sorts largest first
    # and leaves NaN, which sorts after every number, last.
    order: np.ndarray = np.lexsort((-loss, -key))
    return order


def _multiplier(per_sample: Mapping[str, np.ndarray], n: int) -> np.ndarray:
    lam = per_sample.get("multiplier")
    if lam is None or np.shape(lam) != (n,):
        return np.full(n, np.nan)
    return np.asarray(lam, dtype=np.float64)


def hardest_samples(
    task: Task,
    train_x: Tensor,
    per_sample: Mapping[str, np.ndarray],
    k: int = HARDEST_IMAGES,
) -> HardestSamples | None:
    """The ``k`` hardest training samples (``hardest_order``) with their images, or ``None``
    when the task's inputs are not images (``Task.images`` returns ``None``). ``train_x`` is
    the training split's ``x``, on any device; only the ``k`` rows are turned into images.

    Raises:
        ValueError: ``k`` is below 1, or ``Task.images`` returned something other than
            ``k`` images (N, H, W) or (N, H, W, 3) with finite values in [0, 1].
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    order = hardest_order(per_sample)[:k]
    rows = torch.as_tensor(order, dtype=torch.int64, device=train_x.device)
    images = task.images(train_x[rows])
    if images is None:
        return None
    images = np.asarray(images)
    _check_images(type(task).__name__, images, order.size)
    loss = np.asarray(per_sample["train_loss"], dtype=np.float64)
    return HardestSamples(
        index=order.astype(np.int64),
        images=images,
        label=np.asarray(per_sample["train_label"])[order],
        loss=loss[order],
        multiplier=_multiplier(per_sample, loss.shape[0])[order],
    )


def _check_images(task_class: str, images: np.ndarray, k: int) -> None:
    grey = images.ndim == 3
    rgb = images.ndim == 4 and images.shape[-1] == 3
    if not (grey or rgb) or images.shape[0] != k:
        raise ValueError(
            f"{task_class}.images must return {k} images as (N, H, W) or (N, H, W, 3), "
            f"got shape {images.shape}"
        )
    if not np.issubdtype(images.dtype, np.floating):
        raise ValueError(f"{task_class}.images must return floats in [0, 1], got {images.dtype}")
    if images.size and not (np.isfinite(images).all() and images.min() >= 0 and images.max() <= 1):
        raise ValueError(f"{task_class}.images must return values in [0, 1]")
