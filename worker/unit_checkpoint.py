"""A unit's checkpoint: one layout for a unit of one trial and for a pack.

::

    members/<trial_id>.pt          each active member's trainer state (Trainer.state_dict)
    members/<trial_id>.final.npz   a finished member's final per-sample arrays (last only)
    members/<trial_id>.multipliers.npy   and its final multiplier table
    members/<trial_id>.hardest.npz  an image task's hardest samples (TrialResult.hardest)
    unit.json                      {"version", "diverged", "unsent", "attempt"}

``unsent`` holds each member's metrics that were buffered and not yet in MLflow when the
checkpoint was saved (``TrialRunLogger.unsent_metrics``): a unit restored from it buffers
them again, so an evaluation is logged once whether the process died before or after the
buffer was flushed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dualtune.core.engine.hardest import HardestSamples

MEMBER_DIR = "members"
UNIT_FILE = "unit.json"
FINAL_SUFFIX = ".final.npz"
MULTIPLIERS_SUFFIX = ".multipliers.npy"
HARDEST_SUFFIX = ".hardest.npz"

Unsent = list[tuple[int, dict[str, float]]]
"""A member's buffered metrics: (epoch, {name: value}) in the order they were logged."""


@dataclass(frozen=True)
class FinalArrays:
    """A finished member's last evaluation: every per-sample array, the dense multiplier
    table and an image task's hardest samples (``TrialResult.per_sample``, ``.multipliers``
    and ``.hardest``)."""

    per_sample: dict[str, np.ndarray]
    multipliers: np.ndarray | None = None
    hardest: HardestSamples | None = None


@dataclass(frozen=True)
class UnitCheckpoint:
    """What a unit saves at each evaluation and resumes from.

    Attributes:
        state: the unit's state (``core.engine.unit``: version, members, diverged).
        unsent: per member, its metrics not yet in MLflow.
        attempt: the start of the unit that saved it (1 for the first).
        finals: per finished member, its final arrays (in the last checkpoint only).
    """

    state: dict[str, Any]
    unsent: dict[str, Unsent] = field(default_factory=dict)
    attempt: int = 1
    finals: dict[str, FinalArrays] = field(default_factory=dict)


def _json_value(value: float) -> float | str:
    # JSON has no NaN or infinity; a diverging member's last metrics may hold them.
    return value if math.isfinite(value) else repr(value)


def save(directory: Path, checkpoint: UnitCheckpoint) -> None:
    members = directory / MEMBER_DIR
    members.mkdir(parents=True, exist_ok=True)
    for trial_id, state in checkpoint.state["members"].items():
        torch.save(state, members / f"{trial_id}.pt")
    for trial_id, final in checkpoint.finals.items():
        # Any: savez's own keywords would be typed against the arrays' names otherwise.
        arrays: dict[str, Any] = dict(final.per_sample)
        np.savez_compressed(members / f"{trial_id}{FINAL_SUFFIX}", **arrays)
        if final.multipliers is not None:
            np.save(members / f"{trial_id}{MULTIPLIERS_SUFFIX}", final.multipliers)
        if final.hardest is not None:
            hardest: dict[str, Any] = asdict(final.hardest)
            np.savez_compressed(members / f"{trial_id}{HARDEST_SUFFIX}", **hardest)
    meta = {
        "version": checkpoint.state["version"],
        "diverged": {t: [int(e), str(d)] for t, (e, d) in checkpoint.state["diverged"].items()},
        "stopped": sorted(checkpoint.state.get("stopped", ())),
        "unsent": {
            t: [[int(e), {k: _json_value(float(v)) for k, v in m.items()}] for e, m in items]
            for t, items in checkpoint.unsent.items()
        },
        "attempt": checkpoint.attempt,
    }
    (directory / UNIT_FILE).write_text(json.dumps(meta))


def load(directory: Path, trial_ids: Collection[str]) -> UnitCheckpoint:
    """The checkpoint in ``directory``, narrowed to ``trial_ids`` (members that finished
    since it was saved are left out of the state)."""
    meta: dict[str, Any] = json.loads((directory / UNIT_FILE).read_text())
    wanted = set(trial_ids)
    members = {
        path.stem: torch.load(path, weights_only=False)
        for path in sorted((directory / MEMBER_DIR).glob("*.pt"))
        if path.stem in wanted
    }
    state = {
        "version": meta["version"],
        "members": members,
        "diverged": {t: (int(e), str(d)) for t, (e, d) in meta["diverged"].items() if t in wanted},
        "stopped": [t for t in meta.get("stopped", ()) if t in wanted],
    }
    unsent = {
        t: [(int(e), {k: float(v) for k, v in m.items()}) for e, m in items]
        for t, items in meta.get("unsent", {}).items()
        if t in wanted
    }
    return UnitCheckpoint(state, unsent, int(meta.get("attempt", 1)))


def load_final(directory: Path, trial_id: str) -> FinalArrays | None:
    """A member's final arrays from a checkpoint, ``None`` when it holds none."""
    path = directory / MEMBER_DIR / f"{trial_id}{FINAL_SUFFIX}"
    if not path.exists():
        return None
    with np.load(path) as data:
        per_sample = {name: np.asarray(data[name]) for name in data.files}
    table = directory / MEMBER_DIR / f"{trial_id}{MULTIPLIERS_SUFFIX}"
    hardest_path = directory / MEMBER_DIR / f"{trial_id}{HARDEST_SUFFIX}"
    hardest = None
    if hardest_path.exists():
        with np.load(hardest_path) as data:
            hardest = HardestSamples(**{name: np.asarray(data[name]) for name in data.files})
    return FinalArrays(per_sample, np.load(table) if table.exists() else None, hardest)
