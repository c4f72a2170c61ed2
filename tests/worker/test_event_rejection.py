"""What the service refuses never blocks the stream: a poisoned event is answered alone and
dropped, a batch refused whole is dropped, and non-finite metrics never leave the driver.
Against a real service (uvicorn on loopback, SQLite) through the driver's real sink."""

from __future__ import annotations

import math
import time

import httpx
import numpy as np
import pytest

from dualtune.core.reporting import TrialOutcome, build_report
from dualtune.core.spec import WORKER_TOKEN_ENV, load_spec
from dualtune.core.states import SweepState, TrialState
from dualtune.service.launchers import DriverState
from dualtune.worker import driver
from dualtune.worker.drive import drive_sweep
from dualtune.worker.events import TrialEvent, finite_metrics
from dualtune.worker.service_link import ServiceEventSink, ServiceLink
from tests.worker.served import Served, moons_spec


def _sink(s: Served, sweep_id: str, token: str) -> tuple[ServiceLink, ServiceEventSink, list[str]]:
    link = ServiceLink(s.url, sweep_id, token)
    sweep = link.fetch()
    return link, ServiceEventSink(link, sweep.generation), sweep.run_trial_ids


def _trial_ids(s: Served, sweep_id: str, token: str) -> list[str]:
    link = ServiceLink(s.url, sweep_id, token)
    ids = link.fetch().run_trial_ids
    link.close()
    return ids


def test_a_poisoned_event_among_good_ones_is_reported_the_rest_land_and_the_sweep_completes(
    served: Served,
) -> None:
    sweep_id = served.submit(moons_spec("poisoned", seeds=3))
    token = served.launch(sweep_id)
    link, sink, (a, b, c) = _sink(served, sweep_id, token)

    def done(trial_id: str, loss: float) -> TrialEvent:
        return TrialEvent(
            sweep_id, trial_id, TrialState.SUCCEEDED, metrics={"val/loss_mean": loss}
        )

    for trial_id in (a, b, c):
        sink.emit(TrialEvent(sweep_id, trial_id, TrialState.RUNNING))
    sink.emit(done(a, 0.1))
    sink.emit(done("no-such-trial", 0.0))  # poisoned: the sweep has no such trial
    sink.emit(done(b, 0.2))
    sink.emit(TrialEvent(sweep_id, a, TrialState.FAILED, error="late"))  # final is final
    sink.emit(done(c, 0.3))
    assert sink.close(timeout_s=30)  # every event answered: applied or rejected
    link.close()

    _, trials = served.sweep(sweep_id)
    assert {t: trials[t].status for t in (a, b, c)} == dict.fromkeys(
        (a, b, c), TrialState.SUCCEEDED
    )
    assert trials[a].metrics == {"val/loss_mean": 0.1}  # the late failure changed nothing
    assert trials[c].metrics == {"val/loss_mean": 0.3}
    rejected = {(r.trial_id, r.status): r.reason for r in sink.rejected_events}
    assert set(rejected) == {("no-such-trial", TrialState.SUCCEEDED), (a, TrialState.FAILED)}
    assert "no-such-trial" in rejected["no-such-trial", TrialState.SUCCEEDED]
    assert rejected[a, TrialState.FAILED]  # a reason, whatever its words

    served.launcher.exit(sweep_id)  # the driver ended
    served.reconciler.step()
    sweep, _ = served.sweep(sweep_id)
    assert sweep.status == SweepState.SUCCEEDED


def test_a_non_finite_metric_sent_past_the_driver_is_refused_alone(served: Served) -> None:
    """The driver never sends one; a batch that does (written here by hand, JSON's NaN
    extension) gets that event refused and the others applied."""
    sweep_id = served.submit(moons_spec("nan-by-hand", seeds=2))
    token = served.launch(sweep_id)
    a, b = _trial_ids(served, sweep_id, token)
    body = (
        '{"generation": 0, "events": ['
        f'{{"trial_id": "{a}", "status": "succeeded", "attempt": 1, '
        '"metrics": {"val/loss_mean": NaN}}, '
        f'{{"trial_id": "{b}", "status": "succeeded", "attempt": 1, '
        '"metrics": {"val/loss_mean": 0.5}}]}'
    )
    answer = httpx.post(
        f"{served.url}/api/v1/worker/sweeps/{sweep_id}/events",
        content=body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    (rejected,) = answer.json()["rejected"]
    assert rejected["index"] == 0
    assert "val/loss_mean" in rejected["reason"] or "metrics" in rejected["reason"]
    _, trials = served.sweep(sweep_id)
    assert trials[a].status == TrialState.PENDING
    assert trials[b].status == TrialState.SUCCEEDED


def test_a_batch_refused_whole_is_dropped_and_later_events_flow(served: Served) -> None:
    sweep_id = served.submit(moons_spec("whole-batch", seeds=2))
    token = served.launch(sweep_id)
    a, b = _trial_ids(served, sweep_id, token)
    # While the service is down the first batch waits; it then goes out with an envelope
    # the service refuses as a whole (an MLflow run id longer than any).
    served.server.stop()
    link = ServiceLink(served.url, sweep_id, token)
    sink = ServiceEventSink(link, 0)
    sink.tracking("1", "r" * 500)
    sink.emit(TrialEvent(sweep_id, a, TrialState.RUNNING))
    time.sleep(1.5)
    served.server.start()
    deadline = time.monotonic() + 30
    while not sink.rejected_events:
        assert time.monotonic() < deadline, "the refused batch was never answered"
        time.sleep(0.1)
    sink.emit(TrialEvent(sweep_id, b, TrialState.SUCCEEDED, metrics={"val/loss_mean": 0.4}))
    assert sink.close(timeout_s=30)
    link.close()

    (rejected,) = sink.rejected_events
    assert (rejected.trial_id, rejected.status) == (a, TrialState.RUNNING)
    assert "422" in rejected.reason
    _, trials = served.sweep(sweep_id)
    assert trials[a].status == TrialState.PENDING  # dropped with its batch
    assert trials[b].status == TrialState.SUCCEEDED


def test_the_one_filter_keeps_named_finite_numbers_only() -> None:
    values = {
        "val/loss_mean": 0.5,
        "val/accuracy": np.float32(0.75),
        "train/steps": np.int64(3),
        "train/loss_max": math.nan,
        "train/cvar_0.1": math.inf,
        "val/loss_max": -math.inf,
        "val/feasible": True,
        "val/name": "x",
        "epoch": 3.0,  # not a metric name (split/name)
    }
    assert finite_metrics(values) == {
        "val/loss_mean": 0.5,
        "val/accuracy": 0.75,
        "train/steps": 3.0,
    }


def test_the_sink_drops_non_finite_metrics_before_they_are_sent(served: Served) -> None:
    sweep_id = served.submit(moons_spec("sink-nan", seeds=1))
    token = served.launch(sweep_id)
    link, sink, (a,) = _sink(served, sweep_id, token)
    metrics = {"val/loss_mean": math.nan, "val/accuracy": 0.9, "train/loss_max": math.inf}
    sink.emit(TrialEvent(sweep_id, a, TrialState.SUCCEEDED, metrics=metrics))
    assert sink.close(timeout_s=30)
    link.close()
    assert sink.rejected_events == []
    _, trials = served.sweep(sweep_id)
    assert trials[a].status == TrialState.SUCCEEDED
    assert trials[a].metrics == {"val/accuracy": 0.9}


def test_the_final_replay_sends_finite_metrics_only(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``drive`` replays every trial's outcome at the end: an outcome holding NaN and inf
    (as Tune's last result may) reaches the service without them, and the sweep closes."""
    sweep_id = served.submit(moons_spec("replay-nan", seeds=2))
    token = served.launch(sweep_id)
    spec = load_spec(moons_spec("replay-nan", seeds=2))
    metrics = {"val/loss_mean": math.nan, "val/accuracy": 0.8, "train/loss_max": -math.inf}

    def ran(spec_doc: object, *, sweep_id: str, only: list[str], **_: object) -> object:
        outcomes = [TrialOutcome(t, "erm", {}, TrialState.SUCCEEDED, dict(metrics)) for t in only]
        records = [driver.TrialRecord(o, None, "", 1) for o in outcomes]
        report = build_report(spec, outcomes, sweep_id=sweep_id)
        return driver.SweepResult(sweep_id, spec, records, report, None, "", "")

    monkeypatch.setattr(driver, "run_sweep", ran)
    monkeypatch.setenv(WORKER_TOKEN_ENV, token)
    assert drive_sweep(served.url, sweep_id, storage=None, ray_address=None) == 0

    _, trials = served.sweep(sweep_id)
    assert [t.status for t in trials.values()] == [TrialState.SUCCEEDED] * 2
    assert [t.metrics for t in trials.values()] == [{"val/accuracy": 0.8}] * 2
    served.launcher.exit(sweep_id, DriverState.EXITED)
    served.reconciler.step()
    assert served.sweep(sweep_id)[0].status == SweepState.SUCCEEDED
