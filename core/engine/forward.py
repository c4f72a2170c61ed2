"""Forward passes over a whole data split, in chunks, for evaluation."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

EVAL_CHUNK = 65_536


def forward_split(
    model: nn.Module,
    x: Tensor,
    chunk: int = EVAL_CHUNK,
    forward: Callable[[Tensor], Tensor] | None = None,
    *,
    dim: int = 0,
) -> Tensor:
    """The model's outputs on a whole split in chunks of ``chunk`` rows, in eval mode and
    without gradients; ``forward`` replaces ``model.__call__`` (e.g. every readout), and
    ``dim`` is the dimension of its output that runs over samples."""
    run = forward or model
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return torch.cat([run(x[i : i + chunk]) for i in range(0, x.shape[0], chunk)], dim=dim)
    finally:
        model.train(was_training)


@contextmanager
def running_statistics_kept(model: nn.Module) -> Iterator[None]:
    """Forward passes inside leave the model's buffers (BatchNorm's running mean, variance
    and batch count) as they were: a step's second evaluation of the same batch
    (primal-first, extragradient) must not move them a second time."""
    saved = [(b, b.detach().clone()) for b in model.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in saved:
                buffer.copy_(value)
