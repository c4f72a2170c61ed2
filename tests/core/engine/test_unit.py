"""A unit of one trial is the unpacked trainer behind the unit interface: the same result
as ``fit``, the unit state layout around the trial's own state, divergence recorded
rather than raised, and a resume from any evaluation that ends where an uninterrupted run
ends."""

import copy
from typing import Any

import numpy as np
import pytest

from dualtune.core.engine.errors import Diverged
from dualtune.core.engine.fit import fit, fit_unit
from dualtune.core.engine.pack_trainer import PackTrainer
from dualtune.core.engine.result import UnitEvalReport
from dualtune.core.engine.unit import UNIT_STATE_VERSION, SingleTrainer, unit_trainer
from dualtune.core.spec import SweepSpec, TrialConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def digits_trial(**grid: Any) -> TrialConfig:
    doc: dict[str, Any] = {
        "name": "unit",
        "task": {"name": "digits", "params": {"hidden": [16]}},
        "constraint": {"kind": "sample_loss"},
        "methods": ["fl"],
        "grid": {"epsilon": 0.2, "dual_lr": 0.5, "seed": 0, **grid},
        "train": {"epochs": 3, "batch_size": 256, "optimizer": {"name": "adam", "lr": 0.01}},
    }
    return SweepSpec.model_validate(doc).trials()[0]


def without_time(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if not k.startswith("time/")}


def test_a_unit_of_one_trains_unpacked_and_a_larger_one_as_a_pack() -> None:
    one = digits_trial()
    assert isinstance(unit_trainer([one]), SingleTrainer)
    two = SweepSpec.model_validate(
        {
            "name": "unit",
            "task": {"name": "digits", "params": {"hidden": [16]}},
            "constraint": {"kind": "sample_loss"},
            "methods": ["fl"],
            "grid": {"epsilon": [0.1, 0.2], "dual_lr": 0.5, "seed": 0},
            "train": {"epochs": 1},
        }
    ).trials()
    assert isinstance(unit_trainer(two), PackTrainer)


def test_a_unit_of_one_gives_exactly_what_fit_gives() -> None:
    trial = digits_trial()
    alone = fit(trial)
    unit = fit_unit([trial])
    assert not unit.diverged
    result = unit.results[trial.trial_id]
    assert [without_time(h) for h in result.history] == [without_time(h) for h in alone.history]
    np.testing.assert_array_equal(result.per_sample["multiplier"], alone.per_sample["multiplier"])
    assert result.multipliers is not None
    assert alone.multipliers is not None
    np.testing.assert_array_equal(result.multipliers, alone.multipliers)


def test_an_image_task_hands_back_its_hardest_samples_as_images() -> None:
    result = fit(digits_trial())
    assert result.hardest is not None
    assert result.hardest.images.shape == (16, 8, 8)
    lam = result.per_sample["multiplier"]
    # The largest multipliers of the run, in order (the hardest.csv order).
    np.testing.assert_array_equal(result.hardest.multiplier, np.sort(lam)[::-1][:16])


def test_its_state_is_the_unit_layout_and_resumes_exactly() -> None:
    trial = digits_trial()
    states: list[dict[str, Any]] = []

    def keep(report: UnitEvalReport) -> None:
        # A copy, as a checkpoint on disk is: the state views live optimizer tensors.
        states.append(copy.deepcopy(report.state_dict()))

    uninterrupted = fit_unit([trial], reporter=keep)
    first = states[0]
    assert first["version"] == UNIT_STATE_VERSION
    assert set(first["members"]) == {trial.trial_id}
    assert first["diverged"] == {}
    assert first["members"][trial.trial_id]["epoch"] == 1
    # Each resume gets its own copy: a loaded optimizer state may alias the given tensors.
    resumed = fit_unit([trial], resume=copy.deepcopy(first))
    final = resumed.results[trial.trial_id].final
    assert without_time(final) == without_time(uninterrupted.results[trial.trial_id].final)
    # The same trial's state as ``fit`` takes it resumes the same way.
    again = fit(trial, resume=first["members"][trial.trial_id])
    assert without_time(again.final) == without_time(final)


def test_a_diverging_member_is_recorded_not_raised_and_fit_raises_it() -> None:
    trial = digits_trial(lr=1e12)
    unit = fit_unit([trial])
    assert unit.results == {}
    assert isinstance(unit.diverged[trial.trial_id], Diverged)
    with pytest.raises(Diverged):
        fit(trial)


def test_a_state_for_another_trial_is_refused() -> None:
    trial, other = digits_trial(), digits_trial(epsilon=0.3)
    state = SingleTrainer(other).state_dict()
    with pytest.raises(ValueError, match="unit state is for trials"):
        SingleTrainer(trial).load_state_dict(state)
