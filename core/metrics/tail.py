"""Tail metrics of per-sample losses, constraint satisfaction and multiplier statistics.

Pure torch, vectorised (sort / topk / bincount, no per-sample Python), on whatever device
the tensors live on; fine at n = 1,000,000. Functions return 0-d tensors so the caller
converts many of them to floats in one device synchronisation (``to_floats``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

# One definition of the group metrics (ARCHITECTURE §3.4), in group.py; dp_gap re-exported.
from dualtune.core.metrics.group import dp_gap as dp_gap
from dualtune.core.metrics.group import mean_by_group

CVAR_LEVELS = (0.01, 0.05, 0.1)
QUANTILES = (("loss_q50", 0.5), ("loss_q90", 0.9), ("loss_q99", 0.99))


def _flat(values: Tensor) -> Tensor:
    flat = values.detach().reshape(-1)
    if flat.numel() == 0:
        raise ValueError("metrics need at least one value")
    return flat


def _cvar_from_top(top_cumsum: Tensor, top: Tensor, beta: float, n: int) -> Tensor:
    """CVaR_β from the descending values' cumulative sums (Rockafellar–Uryasev):

        CVaR_β = min_t t + (1/(βn)) Σ_i [ℓ_i − t]₊ = (S_k + (βn − k) ℓ_(k+1)) / (βn),

    with ℓ_(1) ≥ ℓ_(2) ≥ …, k = ⌊βn⌋ and S_k the sum of the k largest: the mean of the top
    β-fraction, counting the boundary sample fractionally.
    """
    mass = beta * n
    k = min(n, math.floor(mass + 1e-9))
    head = top_cumsum[k - 1] if k > 0 else torch.zeros((), dtype=top_cumsum.dtype)
    frac = mass - k
    tail = top[k].to(top_cumsum.dtype) * frac if k < n and frac > 1e-12 else 0.0
    return (head + tail) / mass


def cvar(losses: Tensor, beta: float) -> Tensor:
    """CVaR_β, the mean of the worst β-fraction of the values (see ``_cvar_from_top``)."""
    if not 0.0 < beta <= 1.0:
        raise ValueError(f"CVaR level beta must be in (0, 1], got {beta}")
    flat = _flat(losses)
    n = flat.numel()
    k = min(n, math.floor(beta * n + 1e-9) + 1)
    top = torch.topk(flat, k, sorted=True).values
    return _cvar_from_top(torch.cumsum(top.to(torch.float64), 0), top, beta, n).to(flat.dtype)


def quantiles(losses: Tensor, qs: tuple[float, ...]) -> Tensor:
    """Quantiles with linear interpolation between order statistics (numpy's default)."""
    flat = torch.sort(_flat(losses)).values
    n = flat.numel()
    pos = torch.tensor(qs, dtype=torch.float64, device=flat.device) * (n - 1)
    low = pos.floor().long()
    high = pos.ceil().long().clamp_max(n - 1)
    weight = (pos - low).to(flat.dtype) if flat.is_floating_point() else (pos - low)
    return flat[low] + (flat[high] - flat[low]) * weight


def quantile(losses: Tensor, q: float) -> Tensor:
    """One quantile (see ``quantiles``)."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile q must be in [0, 1], got {q}")
    return quantiles(losses, (q,))[0]


def loss_summary(losses: Tensor, prefix: str) -> dict[str, Tensor]:
    """``{prefix}/loss_mean, loss_max, loss_q50, loss_q90, loss_q99, cvar_0.01, cvar_0.05,
    cvar_0.1`` (ARCHITECTURE §3.4), from one sort."""
    flat = _flat(losses)
    ordered = torch.sort(flat, descending=True).values
    n = ordered.numel()
    out = {f"{prefix}/loss_mean": flat.mean(), f"{prefix}/loss_max": ordered[0]}
    qs = quantiles(ordered, tuple(q for _, q in QUANTILES))
    for (name, _), value in zip(QUANTILES, qs, strict=True):
        out[f"{prefix}/{name}"] = value
    cumulative = torch.cumsum(ordered.to(torch.float64), 0)
    for beta in CVAR_LEVELS:
        out[f"{prefix}/cvar_{beta:g}"] = _cvar_from_top(cumulative, ordered, beta, n).to(
            flat.dtype
        )
    return out


def violation(values: Tensor, epsilon: float, *, equality: bool = False) -> Tensor:
    """Elementwise violation: [v − ε]₊ (inequality) or |v − ε| (equality)."""
    d = values.detach() - epsilon
    return d.abs() if equality else d.clamp_min(0.0)


def feasible_share(
    values: Tensor, epsilon: float, *, equality: bool = False, tolerance: float = 0.0
) -> Tensor:
    """Share of constraints satisfied: v ≤ ε, or |v − ε| ≤ tolerance for equalities."""
    flat = values.detach().reshape(-1)
    if flat.numel() == 0:
        return torch.ones((), device=flat.device)
    ok = (flat - epsilon).abs() <= tolerance if equality else flat <= epsilon
    return ok.float().mean()


def group_rates(positive: Tensor, groups: Tensor, num_groups: int) -> tuple[Tensor, Tensor]:
    """Positive rate of each group (float64) and the mask of groups that have samples."""
    return mean_by_group(positive, groups, num_groups)


def multiplier_stats(lam: Tensor) -> dict[str, Tensor]:
    """``lambda_mean``, ``lambda_max`` and ``lambda_active_frac`` (share of λ > 0)."""
    flat = lam.detach().reshape(-1)
    if flat.numel() == 0:
        zero = torch.zeros((), device=flat.device)
        return {"lambda_mean": zero, "lambda_max": zero, "lambda_active_frac": zero}
    return {
        "lambda_mean": flat.mean(),
        "lambda_max": flat.max(),
        "lambda_active_frac": (flat > 0).float().mean(),
    }


def to_floats(metrics: dict[str, Tensor]) -> dict[str, float]:
    """Convert 0-d tensors to floats with a single device-to-host transfer."""
    if not metrics:
        return {}
    names = list(metrics)
    stacked = torch.stack([metrics[k].detach().to(torch.float64).reshape(()) for k in names])
    return dict(zip(names, stacked.cpu().tolist(), strict=True))
