"""A member's outcome goes into a Tune report one way (``encode``) and comes out one way
(``decode``), the same for a unit of one and a pack; what a unit that ended leaves each
member (``unit_end``); the one function that makes it a trial event."""

from __future__ import annotations

import json
import math

from dualtune.core.states import TrialState
from dualtune.worker.outcomes import MEMBERS_KEY, MemberOutcome, decode, encode, unit_end

SUCCEEDED = MemberOutcome(
    "t1", TrialState.SUCCEEDED, {"val/loss_mean": 0.25}, None, "run-1", "", attempt=2
)
DIVERGED = MemberOutcome("t2", TrialState.DIVERGED, {}, "diverged at epoch 3: loss is nan", "r2")


def test_an_outcome_comes_back_as_it_went_in_through_a_json_round_trip() -> None:
    report = {"epoch": 4, **encode({o.trial_id: o for o in (SUCCEEDED, DIVERGED)})}
    # Tune keeps a result as JSON in its experiment state: a restored driver reads that.
    restored = json.loads(json.dumps(report))
    assert decode(restored) == {"t1": SUCCEEDED, "t2": DIVERGED}
    assert isinstance(restored[MEMBERS_KEY], dict)  # a nested dict, not JSON text


def test_only_finite_named_metrics_are_kept() -> None:
    outcome = MemberOutcome(
        "t", TrialState.RUNNING, {"val/a": 1.0, "val/b": math.nan, "epoch": 3.0}
    )
    assert outcome.metrics == {"val/a": 1.0}


def test_a_result_without_outcomes_or_with_a_foreign_status_decodes_safely() -> None:
    assert decode(None) == {}
    assert decode({"val/loss_mean": 0.1}) == {}
    assert decode({MEMBERS_KEY: "not a mapping"}) == {}
    (odd,) = decode({MEMBERS_KEY: {"t": {"status": "exploded"}}}).values()
    assert odd.status == TrialState.FAILED


def test_a_member_left_running_by_its_unit_ends_stopped_or_failed() -> None:
    running = MemberOutcome("t", TrialState.RUNNING, {"val/a": 0.5}, mlflow_run_id="r")
    assert unit_end("t", SUCCEEDED, error="boom") == SUCCEEDED  # its own end state stands
    stopped = unit_end("t", running, error=None)
    assert (stopped.status, stopped.metrics, stopped.error) == (
        TrialState.STOPPED,
        {"val/a": 0.5},
        None,
    )
    failed = unit_end("t", running, error="RuntimeError: x")
    assert (failed.status, failed.error, failed.mlflow_run_id) == (
        TrialState.FAILED,
        "RuntimeError: x",
        "r",
    )
    assert unit_end("t", None, error=None).status == TrialState.FAILED  # never reported


def test_the_event_of_an_outcome_carries_all_of_it() -> None:
    event = SUCCEEDED.event("sweep")
    assert (event.sweep_id, event.trial_id, event.status, event.attempt) == (
        "sweep",
        "t1",
        TrialState.SUCCEEDED,
        2,
    )
    assert (event.metrics, event.mlflow_run_id, event.error) == (
        {"val/loss_mean": 0.25},
        "run-1",
        None,
    )
    assert SUCCEEDED.event("sweep", attempt=3).attempt == 3
