"""The driver's plan: which trials train together as one Ray trial."""

from typing import Any

from dualtune.core.spec import SweepSpec
from dualtune.worker.packing import auto_pack_size, plan_units

GIB = 1 << 30


def spec(**overrides: Any) -> SweepSpec:
    doc: dict[str, Any] = {
        "name": "plan",
        "task": {"name": "digits", "params": {}},
        "constraint": {"kind": "sample_loss"},
        "methods": ["erm", "fl"],
        "grid": {"epsilon": [0.1, 0.2, 0.3], "dual_lr": [0.1, 1.0, 10.0], "lr": [0.1, 0.01]},
    }
    doc.update(overrides)
    return SweepSpec.model_validate(doc)


def sizes(s: SweepSpec, slots: int = 2, memory: int = 8 * GIB) -> list[int]:
    units = plan_units(s, s.trials(), slot_count=lambda: slots, memory=lambda _: memory)
    assert sorted(t for u in units for t in u.trial_ids) == sorted(t.trial_id for t in s.trials())
    return [len(u.trials) for u in units]


def test_pack_off_keeps_every_trial_on_its_own() -> None:
    assert sizes(spec(pack="off")) == [1] * 20


def test_pack_n_caps_the_pack_size() -> None:
    assert sizes(spec(pack=4)) == [2, 4, 4, 4, 3, 3]


def test_auto_fills_every_slot_before_growing_packs() -> None:
    assert sizes(spec(), slots=2) == [1, 1, 9, 9]
    assert sizes(spec(), slots=1) == [2, 18]


def test_auto_keeps_a_pack_within_half_the_memory_of_a_slot() -> None:
    assert auto_pack_size(40, 1, memory=10_000, per_member=1_000) == 5
    assert auto_pack_size(40, 4, memory=10**12, per_member=1) == 10
    assert auto_pack_size(100, 1, memory=10**12, per_member=1) == 64
    assert auto_pack_size(100, 1, memory=None, per_member=1) == 8  # a GPU probe that failed


def test_a_task_that_cannot_pack_runs_its_trials_one_by_one() -> None:
    pinn = spec(
        task={"name": "convection", "params": {}},
        constraint={"kind": "pinn_residual"},
        methods=["fl"],
        grid={"dual_lr": [0.01, 0.1, 1.0]},
    )
    assert sizes(pinn, slots=1) == [1, 1, 1]
