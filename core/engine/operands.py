"""Python numbers as 0-d tensor operands, for the per-step elementwise ops.

An elementwise op between a tensor and a Python number wraps the number in a fresh tensor
and casts it to the tensor's dtype on every call (here that is a second dispatch and an
allocation, several times the cost of the op itself on a batch of a few hundred values).
The same op with a 0-d tensor of the tensor's dtype and device computes the identical
values: the number is rounded to that dtype either way. For half and bfloat16 it is not:
their kernels compute with the number in float32, so those dtypes keep the plain number.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

_EXACT = (torch.float32, torch.float64)
"""Dtypes whose kernels round a number operand to the dtype itself (so a 0-d tensor of
that dtype holds exactly the operand the kernel would use)."""


@functools.lru_cache(maxsize=1024)
def _constant(value: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    return torch.tensor(value, dtype=dtype, device=device)


def operand(value: float | Tensor, like: Tensor) -> float | Tensor:
    """``value`` as the second operand of an elementwise op with ``like``: a cached 0-d
    tensor of ``like``'s dtype and device for a number, ``value`` itself for a tensor (a
    pack's (K, 1) hyperparameters) or a dtype whose kernels treat numbers otherwise. The
    tensor is shared: never write into it."""
    if isinstance(value, Tensor) or like.dtype not in _EXACT:
        return value
    return _constant(float(value), like.dtype, like.device)


def zero(like: Tensor) -> Tensor:
    """A cached 0-d zero of ``like``'s dtype and device, for every dtype: 0 is exact in
    each, and so are the comparisons, clamps and sums it takes part in. Never write into
    it."""
    return _constant(0.0, like.dtype, like.device)
