"""Feasibility-aware successive halving (ARCHITECTURE §3.1 early_stopping): rungs at
grace·rf^k epochs below the budget; at a rung a trial goes on only in the top 1/rf of those
that reached it, feasible ones first, the others by least violation, then by the metric.
Trials arriving one by one are never stopped when they would make the cut once the whole
rung's cohort has arrived."""

import itertools
import json
import math

import pytest

from dualtune.core.early_stopping import Rungs, kept, rung_at, rung_epochs, standing
from dualtune.core.spec import EarlyStopping, Selection

FEASIBLE_FIRST = Selection(
    metric="val/loss_mean", mode="min", subject_to={"train/feasible_frac": {"min": 0.9}}
)


@pytest.mark.parametrize(
    ("grace", "factor", "epochs", "rungs"),
    [
        (1, 3, 27, (1, 3, 9)),  # 27 itself is the budget, not a rung
        (1, 3, 28, (1, 3, 9, 27)),
        (5, 3, 100, (5, 15, 45)),
        (2, 2, 20, (2, 4, 8, 16)),
        (3, 1.5, 10, (3, 4, 7)),  # 3, 4.5 → 4, 6.75 → 7, 10.1 past the budget
        (9, 3, 10, (9,)),
    ],
)
def test_rungs_are_grace_times_powers_of_the_factor_below_the_budget(
    grace: int, factor: float, epochs: int, rungs: tuple[int, ...]
) -> None:
    assert rung_epochs(grace, factor, epochs) == rungs


def test_an_evaluation_decides_the_highest_rung_it_has_passed() -> None:
    rungs = (2, 6, 18)
    assert [rung_at(rungs, e) for e in (1, 2, 5, 6, 17, 20)] == [None, 2, 2, 6, 6, 18]


def test_the_top_third_of_nine_goes_on_at_factor_three() -> None:
    assert [kept(n, 3) for n in (1, 2, 3, 5, 6, 9, 27)] == [1, 1, 1, 1, 2, 3, 9]
    assert kept(10, 2.5) == 4


def test_feasible_trials_rank_ahead_then_least_violation_then_the_metric() -> None:
    trials = {
        "feasible-worse-metric": {"train/feasible_frac": 0.95, "val/loss_mean": 0.9},
        "feasible-best-metric": {"train/feasible_frac": 0.91, "val/loss_mean": 0.2},
        "nearly-feasible": {"train/feasible_frac": 0.85, "val/loss_mean": 0.05},
        "far-infeasible": {"train/feasible_frac": 0.10, "val/loss_mean": 0.01},
        "missing-bound-metric": {"val/loss_mean": 0.0},
    }
    order = sorted(trials, key=lambda t: standing(trials[t], FEASIBLE_FIRST))
    assert order == [
        "feasible-best-metric",
        "feasible-worse-metric",
        "nearly-feasible",
        "far-infeasible",
        "missing-bound-metric",
    ]


def test_mode_max_ranks_the_largest_first_and_a_missing_metric_last() -> None:
    rule = Selection(metric="val/accuracy", mode="max")
    a, b, c = ({"val/accuracy": 0.9}, {"val/accuracy": 0.7}, {"val/accuracy": math.nan})
    assert sorted([b, c, a], key=lambda m: standing(m, rule)) == [a, b, c]


def _rungs(factor: float = 3.0, trials: int = 9) -> Rungs:
    stopping = EarlyStopping(grace_epochs=1, reduction_factor=factor)
    return Rungs.of(stopping, Selection(metric="val/loss_mean"), epochs=27, trials=trials)


def test_trials_that_reach_a_rung_together_are_halved_as_one_cohort() -> None:
    """A pack's members at a rung are all recorded before any is judged: synchronous
    successive halving keeps exactly the best ⌊n/rf⌋."""
    losses = [0.9, 0.1, 0.5, 0.3, 0.7, 0.2, 0.8, 0.4, 0.6]
    members = {f"t{i}": {"val/loss_mean": v} for i, v in enumerate(losses)}
    decisions = _rungs().decide(1, members)
    assert {t for t, go in decisions.items() if go} == {"t1", "t5", "t3"}  # 0.1, 0.2, 0.3


def test_trials_that_arrive_one_by_one_are_stopped_once_the_cut_is_full_ahead() -> None:
    """A cohort of 6 at factor 3 keeps 2: an arrival is stopped when 2 recorded trials
    already rank ahead of it."""
    rungs = _rungs(trials=6)
    arrivals = [0.5, 0.6, 0.4, 0.9, 0.1, 0.45]
    goes_on = [
        rungs.decide(1, {f"t{i}": {"val/loss_mean": v}})[f"t{i}"] for i, v in enumerate(arrivals)
    ]
    # ahead of each: 0; 1 (0.5); 0; 3; 0; 2 (0.1, 0.4)
    assert goes_on == [True, True, True, False, True, False]


def test_no_arrival_order_stops_a_trial_that_makes_the_full_cohorts_cut() -> None:
    """Independent truth, over every order of arrival of 6 trials (factor 2, so the cut is
    the best 3): a trial goes on exactly when fewer than 3 of those recorded before it rank
    ahead of it, so the best 3 of all 6 always go on; ASHA's cut at ⌊n/2⌋ of the n recorded
    so far stops one of them in some orders."""
    values = [0.3, 0.1, 0.4, 0.2, 0.5, 0.6]
    best3 = {f"t{i}" for i in (0, 1, 3)}
    asha_lost = 0
    for order in itertools.permutations(range(6)):
        rungs = _rungs(factor=2.0, trials=6)
        seen: list[float] = []
        for i in order:
            seen.append(values[i])
            expected = sorted(seen).index(values[i]) < 3
            goes_on = rungs.decide(1, {f"t{i}": {"val/loss_mean": values[i]}})[f"t{i}"]
            assert goes_on is expected
            if f"t{i}" in best3:
                assert goes_on
                asha_lost += sorted(seen).index(values[i]) >= max(1, len(seen) // 2)
    assert asha_lost > 0


def test_a_later_rungs_cohort_is_those_not_stopped_before() -> None:
    rungs = _rungs(trials=9)
    rungs.decide(1, {f"t{i}": {"val/loss_mean": 0.1 * i} for i in range(9)})  # 3 go on
    assert rungs.cohort(3) == 3
    assert rungs.decide(3, {"t2": {"val/loss_mean": 0.5}}) == {"t2": True}
    assert rungs.decide(3, {"t0": {"val/loss_mean": 0.1}}) == {"t0": True}
    assert rungs.decide(3, {"t1": {"val/loss_mean": 0.9}}) == {"t1": False}  # cut of 1 full


def test_a_decision_once_made_is_kept_when_asked_again() -> None:
    """A unit resumed after a crash asks again at a rung it passed: the answer is the same
    even though more trials have been recorded since."""
    rungs = _rungs()
    assert rungs.decide(1, {"a": {"val/loss_mean": 0.5}}) == {"a": True}
    rungs.decide(1, {f"b{i}": {"val/loss_mean": 0.1 * i} for i in range(5)})
    assert rungs.decide(1, {"a": {"val/loss_mean": 0.5}}) == {"a": True}
    assert rungs.decide(1, {"a": {"val/loss_mean": 0.01}}) == {"a": True}  # not re-recorded


def test_the_records_survive_a_round_trip_through_json() -> None:
    rungs = _rungs(trials=6)
    rungs.decide(1, {f"t{i}": {"val/loss_mean": 0.1 * i} for i in range(6)})
    rungs.decide(3, {"t0": {}})  # a missing metric: an infinite score
    again = _rungs(trials=6)
    again.load_json(json.loads(json.dumps(rungs.to_json())))
    assert again.standings == rungs.standings
    assert again.decisions == rungs.decisions
    assert again.decide(1, {"t5": {"val/loss_mean": 0.0}}) == {"t5": False}


def test_unset_ranking_fields_fall_back_to_the_selection() -> None:
    selection = Selection(metric="val/accuracy", mode="max", subject_to=FEASIBLE_FIRST.subject_to)
    assert EarlyStopping().rule(selection) == selection
    own = EarlyStopping(metric="train/loss_mean", mode="min", subject_to={})
    assert own.rule(selection) == Selection(metric="train/loss_mean", mode="min")
