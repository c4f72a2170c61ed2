"""Test plugins: tiny tasks (registered in-process by the tests that use them) and
distributions written to a folder, found by ``importlib.metadata`` once it is on the path."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import torch
from pydantic import Field
from torch import Tensor, nn

from dualtune.core.catalog import TASKS
from dualtune.core.catalog.registry import register_task
from dualtune.core.catalog.tasks import TaskInfo, TaskParams
from dualtune.core.tasks.base import Dataset, Split, Task


class TinyParams(TaskParams):
    n_train: Annotated[int, Field(ge=8)] = 64
    width: Annotated[int, Field(ge=1)] = 8


def _blobs(n: int, seed: int) -> Split:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.randn(n, 2, generator=g) + 2.0 * y.unsqueeze(1).float()
    return Split(x, y)


class TinyBlobs(Task):
    """Two Gaussian blobs, a one-hidden-layer MLP."""

    problem = "classification"
    params: TinyParams

    def load(self) -> Dataset:
        return Dataset(_blobs(self.params.n_train, 0), _blobs(32, 1), num_classes=2)

    def make_model(self, data: Dataset) -> nn.Module:
        return nn.Sequential(
            nn.Linear(2, self.params.width), nn.ReLU(), nn.Linear(self.params.width, 2)
        )


class WrongLossShape(TinyBlobs):
    """A loss of shape (B, 1): it would broadcast against (B,) multipliers."""

    def per_sample_loss(self, output: Tensor, y: Tensor) -> Tensor:
        return super().per_sample_loss(output, y).unsqueeze(1)


class CountedParams(TinyParams):
    loads: str = ""
    """A file each ``load`` appends the loading process's pid to."""


class CountedBlobs(TinyBlobs):
    """``TinyBlobs`` that records in ``params.loads`` which process loaded its data."""

    params: CountedParams

    def load(self) -> Dataset:
        with open(self.params.loads, "a") as f:
            f.write(f"{os.getpid()}\n")
        return super().load()


TINY = TaskInfo(
    "tiny_blobs",
    "two Gaussian blobs (a test plugin)",
    "classification",
    TinyParams,
    f"{__name__}:TinyBlobs",
)
COUNTED = TaskInfo(
    "tiny_counted",
    "two Gaussian blobs that record who loads them (a test plugin)",
    "classification",
    CountedParams,
    f"{__name__}:CountedBlobs",
)
WRONG_LOSS = TaskInfo(
    "tiny_wrong_loss",
    "a task whose loss has the wrong shape (a test plugin)",
    "classification",
    TinyParams,
    f"{__name__}:WrongLossShape",
)


@contextlib.contextmanager
def registered(info: TaskInfo) -> Iterator[str]:
    """Task ``info`` registered in this process (``dualtune.register_task``, as in a
    notebook) for the block; its name."""
    register_task(info)
    try:
        yield info.name
    finally:
        TASKS.unregister(info.name)


def write_distribution(
    folder: Path, name: str, entry_points: dict[str, str], modules: dict[str, str] | None = None
) -> Path:
    """A distribution ``name`` 0.1 installed in ``folder`` as pip would lay it out: its
    modules (name → source) and a ``<name>-0.1.dist-info`` with ``METADATA`` and
    ``entry_points.txt`` (entry point name → ``module:attribute`` in ``dualtune.tasks``)."""
    folder.mkdir(parents=True, exist_ok=True)
    for module, source in (modules or {}).items():
        (folder / f"{module}.py").write_text(source)
    info = folder / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    lines = "".join(f"{k} = {v}\n" for k, v in entry_points.items())
    (info / "entry_points.txt").write_text(f"[dualtune.tasks]\n{lines}")
    return folder


BROKEN_MODULE = 'raise RuntimeError("broken_tasks needs a GPU driver this machine lacks")\n'
"""A plugin module that raises on import."""
