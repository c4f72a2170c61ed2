"""How a Tune trial's end becomes a trial state: its outcome when it reported one,
``stopped`` (with its last metrics) when Tune ended it early without an error, ``failed``
for an error. The callback's events and the driver's final outcomes agree."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

from dualtune.core.spec import TrialConfig
from dualtune.core.states import TrialState
from dualtune.worker.callbacks import TrialEvents
from dualtune.worker.driver import _outcome
from dualtune.worker.events import register_sink
from dualtune.worker.outcomes import MemberOutcome, encode

from .conftest import Recorder, small_spec


def _callback(sweep_id: str) -> Recorder:
    sink = Recorder()
    register_sink(sweep_id, sink)
    return sink


def report(*members: MemberOutcome) -> dict[str, Any]:
    """A unit's report to Tune with these members' outcomes."""
    return {"epoch": 1, **encode({m.trial_id: m for m in members})}


def evaluation(trial_id: str) -> dict[str, Any]:
    running = {"val/loss_mean": 0.3, "train/loss_max": math.nan}
    return report(MemberOutcome(trial_id, TrialState.RUNNING, running))


def _run(callback: TrialEvents, unit: str, last: dict[str, Any], end: str) -> None:
    trial = SimpleNamespace(config={"trial_id": unit}, error_file="error.txt")
    callback.on_trial_start(0, [], trial)
    callback.on_trial_result(1, [], trial, last)
    getattr(callback, end)(2, [], trial)


def test_a_trial_tune_stopped_early_is_stopped_with_its_last_metrics() -> None:
    sink = _callback("sw-states-1")
    callback = TrialEvents(
        "sw-states-1", 1, metric="val/loss_mean", mode="min", show_progress=False
    )
    _run(callback, "t1", evaluation("t1"), "on_trial_complete")
    assert [(e.trial_id, e.status) for e in sink.events] == [
        ("t1", TrialState.RUNNING),
        ("t1", TrialState.STOPPED),
    ]
    assert sink.events[-1].metrics == {"val/loss_mean": 0.3}  # NaN dropped
    assert sink.events[-1].error is None


def test_a_trial_that_reported_its_outcome_keeps_it_and_an_error_is_failed() -> None:
    sink = _callback("sw-states-2")
    callback = TrialEvents(
        "sw-states-2", 2, metric="val/loss_mean", mode="min", show_progress=False
    )
    _run(
        callback,
        "done",
        report(MemberOutcome("done", TrialState.SUCCEEDED, {"val/loss_mean": 0.2})),
        "on_trial_complete",
    )
    _run(callback, "broken", evaluation("broken"), "on_trial_error")
    ends = [(e.trial_id, e.status) for e in sink.events if e.status != TrialState.RUNNING]
    assert ends == [("done", TrialState.SUCCEEDED), ("broken", TrialState.FAILED)]


def test_a_pack_tune_stopped_early_leaves_its_open_members_stopped() -> None:
    sink = _callback("sw-states-3")
    callback = TrialEvents(
        "sw-states-3",
        2,
        metric="val/loss_mean",
        mode="min",
        show_progress=False,
        units={"pack": ["a", "b"]},
    )
    last = report(
        MemberOutcome("a", TrialState.DIVERGED, error="loss is nan"),
        MemberOutcome("b", TrialState.RUNNING, {"val/loss_mean": 0.4}),
    )
    _run(callback, "pack", last, "on_trial_complete")
    ends = {e.trial_id: e.status for e in sink.events if e.status != TrialState.RUNNING}
    assert ends == {"a": TrialState.DIVERGED, "b": TrialState.STOPPED}


def test_the_driver_outcome_of_a_stopped_trial_is_stopped_and_finite() -> None:
    trial: TrialConfig = small_spec().trials()[0]
    last = evaluation(trial.trial_id)
    stopped = _outcome(trial, SimpleNamespace(metrics=last, error=None))
    assert stopped.outcome.status == TrialState.STOPPED
    assert dict(stopped.outcome.metrics) == {"val/loss_mean": 0.3}
    errored = _outcome(trial, SimpleNamespace(metrics=last, error=RuntimeError("x")))
    assert errored.outcome.status == TrialState.FAILED
    assert errored.outcome.error == "RuntimeError: x"
    assert _outcome(trial, None).outcome.status == TrialState.FAILED  # never reported
