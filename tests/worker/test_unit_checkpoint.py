"""A unit's checkpoint holds each member's state, who diverged, each member's metrics not
yet in MLflow and, at the end, each finished member's final arrays; one layout for a unit
of one and a pack."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from dualtune.core.engine.hardest import HardestSamples
from dualtune.core.engine.unit import UNIT_STATE_VERSION
from dualtune.worker import unit_checkpoint
from dualtune.worker.unit_checkpoint import FinalArrays, UnitCheckpoint


def _state() -> dict[str, object]:
    return {
        "version": UNIT_STATE_VERSION,
        "members": {"a": {"w": torch.arange(3.0)}, "b": {"w": torch.ones(2)}},
        "diverged": {"c": (2, "loss is nan")},
    }


def test_a_checkpoint_loads_back_narrowed_to_the_members_still_to_run(tmp_path: Path) -> None:
    unsent = {"a": [(3, {"val/loss_mean": 0.5, "train/loss_max": math.inf})], "b": []}
    unit_checkpoint.save(tmp_path, UnitCheckpoint(_state(), unsent, attempt=2))
    assert sorted(p.name for p in (tmp_path / "members").iterdir()) == ["a.pt", "b.pt"]
    back = unit_checkpoint.load(tmp_path, ["a", "c"])
    assert list(back.state["members"]) == ["a"]
    assert torch.equal(back.state["members"]["a"]["w"], torch.arange(3.0))
    assert back.state["diverged"] == {"c": (2, "loss is nan")}
    assert back.unsent == {"a": [(3, {"val/loss_mean": 0.5, "train/loss_max": math.inf})]}
    assert back.attempt == 2


def test_the_final_arrays_of_each_finished_member_are_kept(tmp_path: Path) -> None:
    per_sample = {"train_loss": np.array([0.1, 0.9]), "train_label": np.array([0, 1])}
    final = FinalArrays(per_sample, np.array([[0.5]]))
    unit_checkpoint.save(tmp_path, UnitCheckpoint(_state(), finals={"a": final}))
    loaded = unit_checkpoint.load_final(tmp_path, "a")
    assert loaded is not None
    assert set(loaded.per_sample) == {"train_loss", "train_label"}
    np.testing.assert_array_equal(loaded.per_sample["train_loss"], per_sample["train_loss"])
    assert loaded.multipliers is not None
    np.testing.assert_array_equal(loaded.multipliers, [[0.5]])
    assert unit_checkpoint.load_final(tmp_path, "b") is None


def test_an_image_tasks_hardest_samples_travel_with_the_final_arrays(tmp_path: Path) -> None:
    hardest = HardestSamples(
        index=np.array([4, 1]),
        images=np.zeros((2, 8, 8)),
        label=np.array([3, 7]),
        loss=np.array([2.5, 1.5]),
        multiplier=np.array([0.9, 0.4]),
    )
    final = FinalArrays({"train_loss": np.array([0.1, 1.5])}, None, hardest)
    unit_checkpoint.save(tmp_path, UnitCheckpoint(_state(), finals={"a": final}))
    loaded = unit_checkpoint.load_final(tmp_path, "a")
    assert loaded is not None
    assert loaded.hardest is not None
    for name in ("index", "images", "label", "loss", "multiplier"):
        np.testing.assert_array_equal(getattr(loaded.hardest, name), getattr(hardest, name))
