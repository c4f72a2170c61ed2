"""Per-sample tables: the parquet files and ``hardest.csv`` of a trial's child run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

HARDEST_ROWS = 100


def split_frame(per_sample: dict[str, np.ndarray], split: str) -> pd.DataFrame:
    """Columns ``index, loss, multiplier, label`` and ``group`` (one attribute) or
    ``group_{attribute}`` (several). ``multiplier`` is NaN where samples have none (val, and
    constraint kinds whose multipliers are not per sample)."""
    losses = np.asarray(per_sample[f"{split}_loss"])
    n = losses.shape[0]
    lam = per_sample.get("multiplier") if split == "train" else None
    frame = pd.DataFrame(
        {
            "index": np.arange(n, dtype=np.int64),
            "loss": losses,
            "multiplier": np.asarray(lam, dtype=losses.dtype)
            if lam is not None and lam.shape == (n,)
            else np.full(n, np.nan, dtype=losses.dtype),
            "label": np.asarray(per_sample[f"{split}_label"]),
        }
    )
    prefix = f"{split}_group_"
    attributes = sorted(k.removeprefix(prefix) for k in per_sample if k.startswith(prefix))
    for attribute in attributes:
        column = "group" if len(attributes) == 1 else f"group_{attribute}"
        frame[column] = np.asarray(per_sample[prefix + attribute])
    return frame


def write_split(
    per_sample: dict[str, np.ndarray], split: str, epoch: int, directory: Path
) -> Path:
    path = directory / f"{split}_epoch{epoch:04d}.parquet"
    split_frame(per_sample, split).to_parquet(path, index=False)
    return path


def write_hardest(per_sample: dict[str, np.ndarray], directory: Path) -> Path:
    """The training samples with the largest multipliers (largest losses where there are no
    per-sample multipliers), hardest first: where the FL paper's multipliers point."""
    frame = split_frame(per_sample, "train")
    key = "multiplier" if frame["multiplier"].notna().any() else "loss"
    hardest = frame.sort_values([key, "loss"], ascending=False, kind="stable").head(HARDEST_ROWS)
    path = directory / "hardest.csv"
    hardest.to_csv(path, index=False)
    return path
