"""The plots logged with each run: loss CDFs with the ε line, multiplier views, the
hardest samples' images, and the sweep's comparison of each method's best trial and its
Pareto fronts."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
from matplotlib import ticker
from matplotlib.axes import Axes
from matplotlib.axis import Axis
from matplotlib.figure import Figure

from dualtune.core.engine.hardest import HardestSamples

# Figures are built with the object API (no pyplot): no global state, no display backend,
# safe in Ray worker threads. Every run of a sweep draws two, so they are kept cheap: fixed
# margins instead of tight_layout, and plain tick labels on log axes instead of mathtext
# (together about half the time of a figure).


CURVE_POINTS = 2_000
"""Points drawn per CDF curve: more than a figure's width in pixels, so the curve looks the
same as with every sample, while a million-sample split draws in milliseconds."""
SCATTER_POINTS = 5_000
"""Samples drawn in a multiplier-against-loss scatter: a uniform sample, plus the
``SCATTER_EXTREMES`` largest losses and multipliers (the points the plot is about)."""
SCATTER_EXTREMES = 100


def _cdf(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The empirical CDF at up to ``CURVE_POINTS`` ranks, the first and last included."""
    x = np.sort(np.asarray(values, dtype=np.float64))
    y = np.arange(1, x.size + 1) / max(1, x.size)
    if x.size <= CURVE_POINTS:
        return x, y
    keep = np.unique(np.linspace(0, x.size - 1, CURVE_POINTS).round().astype(np.int64))
    return x[keep], y[keep]


def _scatter_sample(loss: np.ndarray, lam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """At most ``SCATTER_POINTS`` (loss, λ) pairs, the same ones every time: the extremes and
    a uniform sample of the rest (so the cloud's density is the data's)."""
    if loss.size <= SCATTER_POINTS:
        return loss, lam
    k = SCATTER_EXTREMES
    top = np.union1d(np.argpartition(loss, -k)[-k:], np.argpartition(lam, -k)[-k:])
    sample = np.random.default_rng(0).choice(loss.size, SCATTER_POINTS - top.size, replace=False)
    keep = np.union1d(top, sample)
    return loss[keep], lam[keep]


def _save(fig: Figure, path: Path, **margins: float) -> Path:
    fig.subplots_adjust(**margins)
    fig.savefig(path, dpi=110)
    return path


def _plain_log_labels(axis: Axis) -> None:
    """Tick labels 0.001, 0.1, 1, 100 on a log axis, without mathtext."""
    axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(ticker.NullFormatter())


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
    _plain_log_labels(ax.xaxis)
    ax.set_xlim(left=0)  # losses are ≥ 0: no empty negative half
    ax.set_xlabel(xlabel)
    ax.set_ylabel("share of samples ≤ loss")
    ax.set_ylim(0, 1.01)
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=legend_size)
    ax.grid(alpha=0.3)
    return _save(fig, path, left=0.1, right=0.97, bottom=0.12, top=0.92)


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
        _plain_log_labels(left.yaxis)
        left.set_xlabel("λ_i")
        left.set_ylabel("samples")
        left.set_title(f"{active.size} of {lam.size} multipliers active")
        shown_loss, shown_lam = _scatter_sample(per_sample["train_loss"], lam)
        right.scatter(shown_loss, shown_lam, s=4, alpha=0.5)
        right.set_xlabel("per-sample train loss")
        right.set_ylabel("λ_i")
        right.set_title("multipliers point at the hard samples")
        if shown_lam.size < lam.size:
            right.text(
                0.98,
                0.97,
                f"{shown_lam.size:,} of {lam.size:,} samples shown",
                transform=right.transAxes,
                ha="right",
                va="top",
                fontsize=8,
            )
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
    if lam is not None and "train_loss" in per_sample:
        return _save(fig, path, left=0.07, right=0.98, bottom=0.13, top=0.85, wspace=0.22)
    return _save(fig, path, left=0.11, right=0.97, bottom=0.12, top=0.86)


def compare_loss_cdf(
    curves: dict[str, np.ndarray], epsilon: float | None, path: Path, title: str
) -> Path:
    """Train-loss CDFs of each method's best trial on one axis."""
    return _cdf_figure(curves, epsilon, path, title, "per-sample train loss", (7, 4.5), 8)


ERM_COLOUR = "black"
FEASIBLE_COLOUR = "tab:green"


def _better(direction: str) -> str:
    return "lower is better" if direction == "min" else "higher is better"


def _shade_feasible(ax: Axes, bound: Mapping[str, float | None] | None) -> None:
    """The bound's side(s) as dashed lines and the feasible band between them shaded, the
    view widened to show the lines."""
    if not bound or (bound.get("min") is None and bound.get("max") is None):
        return
    low, high = bound.get("min"), bound.get("max")
    for edge in (low, high):
        if edge is not None:
            ax.axvline(edge, color=FEASIBLE_COLOUR, linestyle="--", linewidth=1)
    left, right = ax.get_xlim()
    sides = [f"≥ {low:g}" if low is not None else "", f"≤ {high:g}" if high is not None else ""]
    ax.axvspan(
        left if low is None else low,
        right if high is None else high,
        color=FEASIBLE_COLOUR,
        alpha=0.12,
        linewidth=0,
        label=f"feasible ({' '.join(s for s in sides if s)})",
    )
    ax.set_xlim(left, right)


def pareto(section: Mapping[str, Any], path: Path, title: str) -> Path | None:
    """The report's ``pareto`` section: every trial's constraint metric (x) against its
    selection metric (y), a colour per method (ERM in black squares), each method's front as
    a step line through its trials on it (ringed), the feasible region shaded. ``None``
    (nothing written) when no trial has both metrics."""
    methods = [m for m in section["methods"] if m["points"]]
    if not methods:
        return None
    x_axis, y_axis = section["x"], section["y"]
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    # A front point's level holds until the next point on the side its domination reaches.
    where: Literal["pre", "post"] = "post" if x_axis["direction"] == "min" else "pre"
    others = iter(f"C{i}" for i in itertools.count() if i != 7)  # C7 is grey: the ERM's look
    for entry in methods:
        erm = entry["method"] == "erm"
        colour = ERM_COLOUR if erm else next(others)
        points = entry["points"]
        by_id = {p["trial_id"]: p for p in points}
        front = [by_id[t] for t in entry["front"]]
        ax.scatter(
            [p["x"] for p in points],
            [p["y"] for p in points],
            s=30 if erm else 18,
            marker="s" if erm else "o",
            color=colour,
            alpha=0.55,
            label=f"{entry['method']} ({len(front)} of {len(points)} on its front)",
            zorder=3,
        )
        ax.step(
            [p["x"] for p in front],
            [p["y"] for p in front],
            where=where,
            color=colour,
            linestyle="--" if erm else "-",
            linewidth=1.4,
            zorder=2,
        )
        ax.scatter(
            [p["x"] for p in front],
            [p["y"] for p in front],
            s=70 if erm else 55,
            marker="s" if erm else "o",
            facecolors="none",
            edgecolors=colour,
            linewidths=1.2,
            zorder=4,
        )
    _shade_feasible(ax, x_axis.get("bound"))
    ax.set_xlabel(f"{x_axis['metric']} ({_better(x_axis['direction'])})")
    ax.set_ylabel(f"{y_axis['metric']} ({_better(y_axis['mode'])})")
    ax.set_title(title)
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path, left=0.11, right=0.97, bottom=0.12, top=0.92)


HARDEST_COLUMNS = 8


def _caption(label: object, loss: float, lam: float) -> str:
    shown = "–" if math.isnan(lam) else f"{lam:.3g}"
    return f"label {label}\nloss {loss:.3g}\nλ {shown}"


def hardest(samples: HardestSamples, path: Path, title: str) -> Path:
    """The hardest samples' images in a grid, hardest first, each with its row above it and
    its label, loss and multiplier under it."""
    k = samples.index.size
    columns = max(1, min(k, HARDEST_COLUMNS))
    rows = max(1, math.ceil(k / columns))
    # Inches: a square image per cell, its three-line caption and row number around it.
    cell, around, heading = 1.1, 0.65, 0.45
    height = heading + rows * (cell + around)
    fig = Figure(figsize=(max(3.0, 1.2 * columns), height))
    axes = fig.subplots(rows, columns, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= k:
            ax.set_axis_off()
            continue
        picture = samples.images[i]
        ax.imshow(
            picture,
            cmap="gray" if picture.ndim == 2 else None,
            vmin=0.0,
            vmax=1.0,
            interpolation="nearest",
        )
        ax.set_xlabel(
            _caption(samples.label[i], float(samples.loss[i]), float(samples.multiplier[i])),
            fontsize=7,
            linespacing=1.1,
        )
        ax.set_title(f"#{int(samples.index[i])}", fontsize=7, pad=2)
    fig.suptitle(title, fontsize=9)
    return _save(
        fig,
        path,
        left=0.02,
        right=0.98,
        bottom=0.5 / height,
        top=1 - (heading + 0.15) / height,
        wspace=0.1,
        hspace=around / cell,
    )
