"""Lagrange multipliers as one dense table on the training device.

Per-sample constraints need a multiplier per training sample, but a step observes only the
sampled ones. Cooper's ``IndexedMultiplier`` makes that a sparse-gradient embedding, which
rules out stateful dual optimizers and DDP all-reduce. Here the multipliers are a plain
tensor, read with ``gather`` and written with ``scatter_`` on the observed indices only, so
any dual update (GA, νPI, the RFL decay) touches exactly the observed entries.

A pack of K trials keeps one (K, m) table: every member observes the same indices (its
members share the batch order), so one ``index_select`` / ``index_copy_`` along the last
dimension serves all of them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class Multipliers:
    """λ ∈ ℝᵐ for m constraints of one kind; projected onto λ ≥ 0 for inequalities only.

    Args:
        size: number of constraints m.
        equality: whether the constraints are equalities (multipliers are then free).
        init: initial value of every multiplier (must be ≥ 0 for inequalities).
        members: the number of members of a pack (a (members, size) table), or ``None``
            for one trial's (size,) vector.
    """

    def __init__(
        self,
        size: int,
        *,
        equality: bool = False,
        init: float = 0.0,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        members: int | None = None,
    ) -> None:
        if size < 0:
            raise ValueError(f"multiplier table size must be ≥ 0, got {size}")
        if not equality and init < 0:
            raise ValueError(f"inequality multipliers must start ≥ 0, got init={init}")
        self.equality = equality
        shape = (size,) if members is None else (members, size)
        self.value = torch.full(shape, float(init), device=device, dtype=dtype)

    @property
    def size(self) -> int:
        return int(self.value.shape[-1])

    def gather(self, index: Tensor | None) -> Tensor:
        """λ at ``index`` (all entries, in order, when ``index`` is None). A copy."""
        if index is None:
            return self.value.clone()
        return self.value.index_select(-1, index)

    def project(self, values: Tensor) -> Tensor:
        """Π: onto λ ≥ 0 for inequality constraints (in place on ``values``, a fresh
        tensor the dual optimizer computed); the identity for equalities."""
        return values if self.equality else values.clamp_min_(0.0)

    def scatter_(self, index: Tensor | None, values: Tensor) -> Tensor:
        """Write projected ``values`` at ``index`` (every entry when ``index`` is None) and
        return them."""
        projected = self.project(values)
        if projected.dtype != self.value.dtype:
            projected = projected.to(self.value.dtype)
        if index is None:
            self.value.copy_(projected)
        else:
            self.value.index_copy_(-1, index, projected)
        return projected

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value.clone(), "equality": self.equality}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        value = state["value"]
        if value.shape != self.value.shape:
            raise ValueError(
                f"multiplier state has shape {tuple(value.shape)}, "
                f"expected {tuple(self.value.shape)}"
            )
        if bool(state["equality"]) != self.equality:
            raise ValueError("multiplier state is for the other constraint type")
        self.value.copy_(value)

    # -- packs
    def member_state_dict(self, member: int) -> dict[str, Any]:
        """Member ``member``'s state, in the form a single trial's table loads."""
        return {"value": self.value[member].clone(), "equality": self.equality}

    def load_member_state_dicts(self, states: list[dict[str, Any]]) -> None:
        """Load a pack's table from its members' single-trial states, in member order."""
        self.load_state_dict(
            {
                "value": torch.stack([s["value"] for s in states]),
                "equality": all(bool(s["equality"]) for s in states),
            }
        )
