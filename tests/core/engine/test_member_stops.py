"""A unit's reporter may stop members at an evaluation (early stopping): a stopped member
ends with exactly what its trial had at that epoch, the others go on exactly as if it had
never been stopped, a unit state after a stop says who stopped, and nothing stops at the
last evaluation (the trial has finished by then)."""

from collections.abc import Collection
from typing import Any

import numpy as np
import pytest

from dualtune.core.engine.fit import fit, fit_unit
from dualtune.core.engine.result import UnitEvalReport, UnitReporter
from dualtune.core.spec import SweepSpec, TrialConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def pack_of_three(epochs: int = 4) -> list[TrialConfig]:
    doc: dict[str, Any] = {
        "name": "stops",
        "task": {"name": "digits", "params": {"hidden": [16]}},
        "constraint": {"kind": "sample_loss"},
        "methods": ["fl"],
        "grid": {"epsilon": [0.1, 0.2, 0.5], "dual_lr": 0.5, "seed": 0},
        "train": {"epochs": epochs, "batch_size": 256, "optimizer": {"name": "adam", "lr": 0.01}},
    }
    return SweepSpec.model_validate(doc).trials()


def stopping(at: dict[str, int], states: list[dict[str, Any]] | None = None) -> UnitReporter:
    """A reporter that stops each member of ``at`` at its epoch (and keeps the states)."""

    def reporter(report: UnitEvalReport) -> Collection[str]:
        if states is not None:
            states.append(report.state_dict())
        return {t for t, epoch in at.items() if epoch == report.epoch}

    return reporter


def untimed(history: list[dict[str, float]]) -> list[dict[str, float]]:
    return [{k: v for k, v in h.items() if not k.startswith("time/epoch_s")} for h in history]


def close(a: list[dict[str, float]], b: list[dict[str, float]]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        for key in y:
            if key.startswith("time/") and key != "time/epochs":
                continue
            assert x[key] == pytest.approx(y[key], rel=1e-4, abs=1e-6), key


def test_a_stopped_member_ends_with_what_its_trial_had_and_the_others_go_on() -> None:
    trials = pack_of_three()
    first, middle, last = (t.trial_id for t in trials)
    result = fit_unit(trials, reporter=stopping({first: 1, middle: 2}))
    assert set(result.stopped) == {first, middle}
    assert set(result.results) == {last}

    # Stopped at epoch k: the trial trained alone for k epochs (an independent run).
    for trial, k in ((trials[0], 1), (trials[1], 2)):
        alone = fit(
            trial.model_copy(update={"train": trial.train.model_copy(update={"epochs": k})})
        )
        stopped = result.stopped[trial.trial_id]
        close(stopped.history, alone.history)
        assert stopped.final["time/epochs"] == k
        assert stopped.multipliers is not None
        assert alone.multipliers is not None
        np.testing.assert_allclose(stopped.multipliers, alone.multipliers, rtol=1e-4, atol=1e-6)

    # The member left trains to the end exactly as in the pack nobody stopped.
    untouched = fit_unit(trials).results[last]
    close(result.results[last].history, untouched.history)
    np.testing.assert_allclose(
        result.results[last].per_sample["train_loss"],
        untouched.per_sample["train_loss"],
        rtol=1e-4,
        atol=1e-6,
    )


def test_a_unit_of_one_that_is_stopped_ends_there() -> None:
    (trial,) = pack_of_three()[:1]
    result = fit_unit([trial], reporter=stopping({trial.trial_id: 2}))
    assert set(result.stopped) == {trial.trial_id}
    assert not result.results
    assert [h["epoch"] for h in result.stopped[trial.trial_id].history] == [1.0, 2.0]


def test_nothing_stops_at_the_last_evaluation() -> None:
    trials = pack_of_three(epochs=2)
    result = fit_unit(trials, reporter=stopping({t.trial_id: 2 for t in trials}))
    assert not result.stopped
    assert set(result.results) == {t.trial_id for t in trials}


def test_a_state_after_a_stop_names_the_stopped_and_resumes_the_others() -> None:
    trials = pack_of_three()
    first = trials[0].trial_id
    states: list[dict[str, Any]] = []
    full = fit_unit(trials, reporter=stopping({first: 1}, states))
    after_stop = states[1]  # epoch 2: the first member stopped at epoch 1
    assert after_stop["stopped"] == [first]
    assert first not in after_stop["members"]

    resumed = fit_unit(trials, resume=after_stop)
    assert set(resumed.results) == set(full.results)
    assert not resumed.stopped  # stopped before the state: already ended, not again
    for trial_id, done in full.results.items():
        close(resumed.results[trial_id].history, done.history)
