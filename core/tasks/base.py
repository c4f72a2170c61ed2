"""The contract between a task and the trainer.

A task owns its data (train and val splits as tensors, with sample indices implied by
position), its model, its per-sample loss and, for ``sample_loss`` constraints, the
per-sample constraint function and optional objective. The trainer owns everything else.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, Literal, TypeVar

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from dualtune.core.catalog.tasks import TaskParams


@dataclass(frozen=True)
class Split:
    """One data split held in memory. Sample ``i`` is row ``i``: its index is its position."""

    x: Tensor
    y: Tensor
    groups: dict[str, Tensor] = field(default_factory=dict)
    """Group code (int64, 0..G−1) per sample, for each protected attribute."""

    @property
    def n(self) -> int:
        return int(self.y.shape[0])

    def to(self, device: torch.device) -> Split:
        return Split(
            self.x.to(device),
            self.y.to(device),
            {k: v.to(device) for k, v in self.groups.items()},
        )


@dataclass(frozen=True)
class Dataset:
    train: Split
    val: Split
    num_classes: int | None
    """Number of classes (classification) or ``None`` (regression)."""
    group_names: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """For each protected attribute, the name of each group code."""

    def to(self, device: torch.device) -> Dataset:
        return Dataset(
            self.train.to(device), self.val.to(device), self.num_classes, self.group_names
        )


class Task(ABC):
    """A learning task: data, a model, and the per-sample loss.

    Subclasses set ``problem`` and implement ``load`` and ``make_model``; classification
    tasks get cross-entropy and regression tasks squared error by default.
    """

    problem: ClassVar[Literal["classification", "regression"]]
    eval_chunk: ClassVar[int] = 65_536
    """Rows per forward pass when a whole split is evaluated: large for small models, small
    for image models (a ResNet-18 on 50 000 CIFAR images in one pass takes ~65 GiB)."""

    def __init__(self, params: TaskParams) -> None:
        self.params = params

    @abstractmethod
    def load(self) -> Dataset:
        """Load (or generate) the data. Deterministic given the task parameters."""

    @abstractmethod
    def make_model(self, data: Dataset) -> nn.Module:
        """A freshly initialised model; the caller seeds torch's RNG beforehand."""

    def pack_blocker(self) -> str | None:
        """Why trials of this task cannot train as a pack (``None``: they can). A pack runs
        its members' forward passes under ``torch.func.vmap``: models with in-place buffer
        updates (BatchNorm) or losses that need input derivatives cannot."""
        return None

    def per_sample_loss(self, output: Tensor, y: Tensor) -> Tensor:
        """ℓ_i for each row: the loss metrics and ERM are computed from."""
        if self.problem == "classification":
            return F.cross_entropy(output, y, reduction="none")
        return (output.reshape(y.shape) - y).pow(2)

    def sample_constraint(self, output: Tensor, y: Tensor) -> Tensor:
        """g_i for ``sample_loss`` constraints (g_i ≤ ε); the loss itself by default."""
        return self.per_sample_loss(output, y)

    def objective(self, model: nn.Module) -> Tensor | None:
        """The task's own objective under ``sample_loss`` constraints; ``None`` means 0."""
        del model
        return None

    def augment(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """A training batch's inputs after random augmentation (none by default). Draw every
        random number from ``generator`` (the trial's batch-order generator, on the CPU), so
        that a resumed trial sees the same augmentations."""
        del generator
        return x

    def images(self, x: Tensor) -> np.ndarray | None:
        """Model inputs ``x`` (rows of a split's ``x``) as pictures a person can look at:
        (N, H, W) grey or (N, H, W, 3) RGB, float in [0, 1], for ``plots/hardest.png``.
        ``None`` (the default): the inputs are not images."""
        del x
        return None

    def extra_metrics(
        self, model: nn.Module, output: Tensor, split: Split, prefix: str
    ) -> dict[str, Tensor]:
        """Metrics beyond ARCHITECTURE §3.4, named ``<prefix>/<name>``; each name must be
        listed in the catalog's ``TaskInfo.extra_metrics``. Called without gradients."""
        del model, output, split, prefix
        return {}

    def predictions(self, output: Tensor) -> Tensor:
        """Hard predictions (class index) for accuracy and positive rates."""
        return output.argmax(dim=-1)

    def positive_score(self, output: Tensor) -> Tensor:
        """Differentiable score in [0, 1] of predicting the positive class (class 1)."""
        return torch.softmax(output, dim=-1)[..., 1]


P = TypeVar("P", bound=TaskParams)


def cached_by_params(load: Callable[[P], Dataset]) -> Callable[[P], Dataset]:
    """Cache a loader per parameter values (params hold lists, so they are not hashable):
    trials of one sweep in one process load their data once. The ``Dataset`` is frozen and
    the trainer copies tensors to its device, so sharing it is safe."""
    cache: dict[str, Dataset] = {}

    @functools.wraps(load)
    def cached(params: P) -> Dataset:
        key = f"{type(params).__name__}:{params.model_dump_json()}"
        if key not in cache:
            cache[key] = load(params)
        return cache[key]

    return cached
