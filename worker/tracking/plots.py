"""The plots logged with each run: loss CDFs with the ε line, multiplier views, and the
sweep's comparison of each method's best trial."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

# Figures are built with the object API (no pyplot): no global state, no display backend,
# safe in Ray worker threads.


def _cdf(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.sort(np.asarray(values, dtype=np.float64))
    return x, np.arange(1, x.size + 1) / max(1, x.size)


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def _cdf_figure(
    curves: dict[str, np.ndarray],
    epsilon: float | None,
    path: Path,
    title: str,
    xlabel: str,
    size: tuple[float, float],
    legend_size: int,
) -> Path:
    """Empirical CDFs of several loss arrays on one log-scaled axis, with the ε line."""
    fig = Figure(figsize=size)
    ax = fig.subplots()
    for label, losses in curves.items():
        x, y = _cdf(losses)
        ax.step(x, y, where="post", label=label)
    if epsilon is not None:
        ax.axvline(epsilon, color="black", linestyle="--", linewidth=1, label=f"ε = {epsilon:g}")
    ax.set_xscale("symlog", linthresh=1e-3)
    ax.set_xlim(left=0)  # losses are ≥ 0: no empty negative half
    ax.set_xlabel(xlabel)
    ax.set_ylabel("share of samples ≤ loss")
    ax.set_ylim(0, 1.01)
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=legend_size)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def loss_cdf(
    per_sample: dict[str, np.ndarray], epsilon: float | None, path: Path, title: str
) -> Path:
    """Empirical CDFs of the per-sample train and val losses, with the ε line."""
    curves = {
        f"{split} (n={per_sample[f'{split}_loss'].size})": per_sample[f"{split}_loss"]
        for split in ("train", "val")
        if f"{split}_loss" in per_sample
    }
    return _cdf_figure(curves, epsilon, path, title, "per-sample loss", (6.4, 4.2), 10)


def multipliers(
    per_sample: dict[str, np.ndarray], dense: np.ndarray | None, path: Path, title: str
) -> Path:
    """Per-sample multipliers: their histogram and multiplier against loss. Constraint kinds
    with one multiplier per group, class or layer get a bar per multiplier instead."""
    lam = per_sample.get("multiplier")
    if lam is not None and "train_loss" in per_sample:
        fig = Figure(figsize=(10, 4))
        left, right = fig.subplots(1, 2)
        active = lam[lam > 0]
        left.hist(lam, bins=50, color="tab:blue")
        left.set_yscale("log")
        left.set_xlabel("λ_i")
        left.set_ylabel("samples")
        left.set_title(f"{active.size} of {lam.size} multipliers active")
        right.scatter(per_sample["train_loss"], lam, s=4, alpha=0.5)
        right.set_xlabel("per-sample train loss")
        right.set_ylabel("λ_i")
        right.set_title("multipliers point at the hard samples")
        right.grid(alpha=0.3)
    else:
        fig = Figure(figsize=(6.4, 4))
        left = fig.subplots()
        values = np.asarray(dense if dense is not None else [], dtype=np.float64).reshape(-1)
        left.bar(np.arange(values.size), values)
        left.set_xlabel("constraint")
        left.set_ylabel("λ")
        left.set_title(f"{values.size} multipliers")
    fig.suptitle(title)
    return _save(fig, path)


def compare_loss_cdf(
    curves: dict[str, np.ndarray], epsilon: float | None, path: Path, title: str
) -> Path:
    """Train-loss CDFs of each method's best trial on one axis."""
    return _cdf_figure(curves, epsilon, path, title, "per-sample train loss", (7, 4.5), 8)
