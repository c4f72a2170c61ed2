"""The early-stopping claim (issue 17), on the engine's own stop path: on the 27-config
digits grid of ``examples/early_stopping_digits.yaml`` successive halving by the sweep's
feasibility-aware rule picks the same best feasible trial as training every trial to the
end, with at most half of the epochs. The decisions are the rung board's
(``core.early_stopping.Rungs``); the sweep on Ray Tune is ``bench/early_stopping.py``."""

from collections.abc import Mapping
from pathlib import Path

import pytest

from dualtune.core.early_stopping import Rungs, rung_at
from dualtune.core.engine.fit import fit_unit
from dualtune.core.engine.result import UnitEvalReport
from dualtune.core.reporting import meets_bounds, score
from dualtune.core.spec import Selection, load_spec

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

EXAMPLE = Path("examples/early_stopping_digits.yaml")


def best_feasible(finals: Mapping[str, Mapping[str, float]], selection: Selection) -> str:
    feasible = [t for t, m in finals.items() if meets_bounds(m, selection.subject_to)]
    assert feasible, "no trial met the bounds: the claim has nothing to compare"
    return min(feasible, key=lambda t: score(finals[t], selection.metric, selection.mode))


def test_early_stopping_keeps_the_best_feasible_trial_with_at_most_half_the_epochs() -> None:
    spec = load_spec(EXAMPLE)
    assert spec.early_stopping is not None
    trials = spec.trials()
    assert len(trials) == 27
    rungs = Rungs.of(spec.early_stopping, spec.selection, spec.train.epochs, len(trials))
    assert rungs.rungs == (3, 9)

    def board(report: UnitEvalReport) -> set[str]:
        rung = rung_at(rungs.rungs, report.epoch)
        if rung is None or report.is_last or rung != report.epoch:
            return set()
        return {t for t, goes_on in rungs.decide(rung, report.metrics).items() if not goes_on}

    everything = fit_unit(trials)
    halved = fit_unit(trials, reporter=board)

    full = {t: r.final for t, r in everything.results.items()}
    stopped = {**{t: r.final for t, r in halved.results.items()}}
    stopped.update({t: r.final for t, r in halved.stopped.items()})
    assert set(stopped) == set(full)
    assert len(halved.stopped) == 27 - 3  # 27 → 9 at epoch 3 → 3 at epoch 9

    assert best_feasible(stopped, spec.selection) == best_feasible(full, spec.selection)
    epochs_run = sum(m["time/epochs"] for m in stopped.values())
    assert epochs_run <= 0.5 * 27 * spec.train.epochs
