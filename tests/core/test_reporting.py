"""The sweep report: stopped trials count for selection like succeeded ones, every trial
entry carries its best feasible evaluation, and ``compute`` says what early stopping saved."""

import math
from typing import Any

from dualtune.core.reporting import TrialOutcome, best_feasible_metrics, build_report
from dualtune.core.spec import Selection, SweepSpec

SELECTION = Selection(
    metric="val/loss_mean", mode="min", subject_to={"train/feasible_frac": {"min": 0.9}}
)


def history(*rows: tuple[float, float]) -> list[dict[str, float]]:
    return [
        {"epoch": float(e), "val/loss_mean": loss, "train/feasible_frac": frac, "x/y": 1.0}
        for e, (loss, frac) in enumerate(rows, start=1)
    ]


def test_the_best_feasible_evaluation_is_the_best_among_those_meeting_the_bounds() -> None:
    # epoch 2 has the lowest loss but misses the bound; of the feasible 1, 3 and 4, epoch 3
    # is best, and epoch 4 (the last) is worse.
    rows = history((0.9, 0.95), (0.1, 0.5), (0.3, 0.92), (0.4, 0.99))
    best = best_feasible_metrics(rows, SELECTION)
    assert best == {
        "best_feasible/val/loss_mean": 0.3,
        "best_feasible/train/feasible_frac": 0.92,
        "best_feasible/epoch": 3.0,
    }
    assert best_feasible_metrics(rows, SELECTION, names=("x/y",))["best_feasible/x/y"] == 1.0


def test_no_feasible_evaluation_gives_none_and_ties_give_the_earliest() -> None:
    assert best_feasible_metrics(history((0.1, 0.1), (0.2, 0.2)), SELECTION) == {}
    tied = best_feasible_metrics(history((0.5, 0.95), (0.5, 0.97)), SELECTION)
    assert tied["best_feasible/epoch"] == 1.0
    unbounded = best_feasible_metrics(history((0.5, 0.1), (0.2, 0.1)), Selection())
    assert unbounded["best_feasible/epoch"] == 2.0


def spec(**extra: Any) -> SweepSpec:
    return SweepSpec.model_validate(
        {
            "name": "r",
            "task": {"name": "two_moons"},
            "constraint": {"kind": "sample_loss"},
            "methods": ["fl"],
            "grid": {"epsilon": [0.1, 0.2, 0.3]},
            "train": {"epochs": 9},
            "selection": SELECTION.model_dump(),
            **extra,
        }
    )


def outcome(trial_id: str, status: str, loss: float, epochs: int) -> TrialOutcome:
    metrics = {"val/loss_mean": loss, "train/feasible_frac": 0.95, "time/epochs": float(epochs)}
    if status == "succeeded":
        metrics |= {"best_feasible/val/loss_mean": loss - 0.1, "best_feasible/epoch": 5.0}
    return TrialOutcome(trial_id, "fl", {"epsilon": 0.1}, status, metrics)


def test_a_stopped_trial_can_be_the_best_and_compute_sums_the_epochs() -> None:
    report = build_report(
        spec(early_stopping={"grace_epochs": 3}),
        [
            outcome("a", "stopped", 0.1, 3),  # stopped early, yet the lowest loss
            outcome("b", "succeeded", 0.2, 9),
            outcome("c", "diverged", math.nan, 1),
        ],
        sweep_id="s",
    )
    (fl,) = report["methods"]
    assert (fl["succeeded"], fl["stopped"], fl["met_bounds"]) == (1, 1, 2)
    assert fl["best"]["trial_id"] == "a"
    assert (fl["best"]["status"], fl["best"]["epochs"]) == ("stopped", 3.0)
    assert report["trial_counts"]["stopped"] == 1
    compute = report["compute"]
    assert (compute["epochs_run"], compute["epochs_asked"], compute["stopped"]) == (13, 27, 1)
    assert compute["share"] == 13 / 27
    assert compute["early_stopping"]["grace_epochs"] == 3


def test_a_trial_entry_carries_its_best_feasible_evaluation() -> None:
    report = build_report(spec(), [outcome("b", "succeeded", 0.2, 9)], sweep_id="s")
    best = report["methods"][0]["best"]
    assert best["best_feasible"] == {"epoch": 5, "metrics": {"val/loss_mean": 0.1}}
    assert report["compute"]["early_stopping"] is None
