"""Per-constraint penalty coefficients ρ_j and the schedule that grows them (ALM, SAL).

Each constraint keeps its own ρ_j and an exponential average v̄_j of its violations
(β = ``SMOOTHING``), updated only when the constraint is observed, so a kind that observes
a different subset of its constraints in every batch (``class_loss``, per-sample
constraints) compares each constraint only with its own history. At an observation with
violation v_j:

* v_j ≤ v̄_j (the smoothed violation does not increase; the first observation counts as
  such): the observation is *accepted*;
* otherwise ρ_j ← min(ρ_j · growth, cap) (Nocedal & Wright's "increase the penalty when the
  constraint did not decrease enough", Alg. 17.4, read on the smoothed estimate);

then v̄_j ← β v̄_j + (1 − β) v_j. ρ, v̄ and the seen flags are (m,) tensors for one trial and
(K, m) for a pack of K members (``growth`` and ``cap`` then (K, 1)); they live on the
training device, so the schedule costs no host synchronisation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

SMOOTHING = 0.9
"""β of the per-constraint violation estimate v̄ ← β v̄ + (1 − β) v."""


def _read(state: Tensor, index: Tensor | None) -> Tensor:
    return state.clone() if index is None else state.index_select(-1, index)


def _write(state: Tensor, index: Tensor | None, values: Tensor) -> None:
    if index is None:
        state.copy_(values)
    else:
        state.index_copy_(-1, index, values)


class _PerConstraint:
    """Tensors of one value per constraint (``state_keys``): (m,) for one trial, (K, m) for
    a pack, kept on the training device; a member's state is its row."""

    state_keys: tuple[str, ...] = ()

    def _to(self, device: torch.device) -> None:
        for key in self.state_keys:
            value = getattr(self, key)
            if value.device != device:
                setattr(self, key, value.to(device))

    def state_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k).clone() for k in self.state_keys}

    def member_state_dict(self, member: int) -> dict[str, Any]:
        return {k: getattr(self, k)[member].clone() for k in self.state_keys}

    def _stack_members(self, states: Sequence[dict[str, Any]]) -> None:
        for key in self.state_keys:
            setattr(self, key, torch.stack([s[key] for s in states]).to(getattr(self, key)))


class PenaltySchedule(_PerConstraint):
    """ρ_j for m constraints, starting at ``rho``."""

    state_keys = ("rho", "smoothed", "seen")

    def __init__(self, rho: float, size: int) -> None:
        self.rho = torch.full((size,), float(rho), dtype=torch.float64)
        self.smoothed = torch.zeros(size, dtype=torch.float64)
        self.seen = torch.zeros(size, dtype=torch.bool)

    def read(self, index: Tensor | None, like: Tensor) -> Tensor:
        """ρ of the observed constraints, in ``like``'s dtype and device."""
        self._to(like.device)
        return _read(self.rho, index).to(like.dtype)

    def observe(
        self, index: Tensor | None, violation: Tensor, growth: float | Tensor, cap: float | Tensor
    ) -> Tensor:
        """Record an observation of the constraints at ``index`` with ``violation`` ≥ 0;
        returns which were accepted (v ≤ v̄). ρ grows where they were not."""
        self._to(violation.device)
        v = violation.to(self.rho.dtype)
        seen = _read(self.seen, index)
        smoothed = torch.where(seen, _read(self.smoothed, index), v)
        rho = _read(self.rho, index)
        accept = v <= smoothed
        grown = torch.minimum(rho * growth, torch.as_tensor(cap).to(rho))
        _write(self.rho, index, torch.where(accept, rho, grown))
        _write(self.smoothed, index, SMOOTHING * smoothed + (1 - SMOOTHING) * v)
        _write(self.seen, index, torch.ones_like(seen))
        return accept

    # -- state
    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in self.state_keys:
            value, current = state[key], getattr(self, key)
            if value.shape != current.shape:
                raise ValueError(
                    f"penalty state {key!r} has shape {tuple(value.shape)}, "
                    f"expected {tuple(current.shape)}"
                )
            setattr(self, key, value.clone().to(current.dtype))

    def load_member_state_dicts(self, states: Sequence[dict[str, Any]]) -> None:
        self._stack_members(states)


class DefectEstimate(_PerConstraint):
    """A running estimate d̄_j of each constraint's defect g_j − ε, for the penalty of
    constraints whose values are minibatch estimates of population quantities (a group's
    rate, a group's mean loss: ``ConstraintKind.batch_estimates``).

    The augmented term (ρ/2)·d² of a batch estimate d_B is biased: E[d_B²] = d² + Var(d_B),
    so descending on it also shrinks the estimate's variance across batches, which a model
    can do by moving the scores of a small group's samples together, whatever that does to
    the rate itself (measured on Adult's equalized odds with an MLP at batch 256, ~9 women
    among a batch's positives: at ρ = 10 the train eo_gap ended at 0.10–0.20, above the
    unconstrained model's 0.08, even with the dual step nearly off). With the slope
    [λ + ρ·d̄]₊ taken from the estimate of the *earlier* batches, independent of this one,
    the penalty's gradient is ∇d_B times a coefficient uncorrelated with it: unbiased for
    [λ + ρ·d]₊·∇d (up to the estimate's lag). A constraint's first observation has no
    history and uses its own value.

    ``defect_mean`` and ``defect_seen`` are (m,) for one trial, (K, m) for a pack; updated
    at the observed entries only, with β = ``SMOOTHING``, at every evaluation of the primal
    loss (twice per step under ``extragradient``, once under the other schemes).
    """

    state_keys = ("defect_mean", "defect_seen")

    def __init__(self, size: int) -> None:
        self.defect_mean = torch.zeros(size, dtype=torch.float64)
        self.defect_seen = torch.zeros(size, dtype=torch.bool)

    def coefficient(self, index: Tensor | None, defect: Tensor) -> Tensor:
        """The estimate before this batch at ``index`` (the batch's own ``defect`` where a
        constraint has none yet), in ``defect``'s dtype; then records ``defect``."""
        self._to(defect.device)
        d = defect.detach().to(self.defect_mean.dtype)
        seen = _read(self.defect_seen, index)
        before = torch.where(seen, _read(self.defect_mean, index), d)
        _write(self.defect_mean, index, SMOOTHING * before + (1 - SMOOTHING) * d)
        _write(self.defect_seen, index, torch.ones_like(seen))
        return before.to(defect.dtype)

    # -- state
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Loads the estimate; a state saved before it existed leaves it empty (each
        constraint's next observation starts it)."""
        if not all(key in state for key in self.state_keys):
            self.defect_mean.zero_()
            self.defect_seen.zero_()
            return
        for key in self.state_keys:
            setattr(self, key, state[key].clone().to(getattr(self, key).dtype))

    def load_member_state_dicts(self, states: Sequence[dict[str, Any]]) -> None:
        if all(key in s for s in states for key in self.state_keys):
            self._stack_members(states)
        else:
            size = self.defect_mean.shape[-1]
            self.defect_mean = torch.zeros(len(states), size, dtype=torch.float64)
            self.defect_seen = torch.zeros(len(states), size, dtype=torch.bool)
