"""Exactly one driver per sweep, whatever dies when (the reconciler with the fake launcher).

A crash of the service between two durable steps is played here by stopping after the step:
the next round (a restarted service) must adopt what was started, launch what was not, stop
strays, and never let two drivers of one sweep run. The real processes, SIGKILLed at the same
points, are the fault campaign (tests/service/test_fault_campaign.py).
"""

from __future__ import annotations

import logging
import subprocess
import sys
from typing import Any

import pytest
from fastapi.testclient import TestClient

from dualtune.core.states import SweepState, TrialState
from dualtune.service.auth import new_worker_token
from dualtune.service.db.repository import Repository
from dualtune.service.errors import Unavailable
from dualtune.service.launchers import DriverState, FakeLauncher, LaunchRequest
from dualtune.service.reconciler import Reconciler, holder_is_dead, lease_owner
from tests.service.api.helpers import auth, submit


@pytest.fixture
def reconciler(client: TestClient) -> Reconciler:
    r: Reconciler = client.app.state.reconciler  # type: ignore[attr-defined]
    return r


def _sweep(client: TestClient, token: str, sweep_id: str) -> Any:
    return client.get(f"/api/v1/sweeps/{sweep_id}", headers=auth(token)).json()


def _record_launch(repo: Repository, reconciler: Reconciler, sweep_id: str) -> LaunchRequest:
    """What a service does up to ``launch.recorded``: lease, record the launch, no driver."""
    (sweep,) = [s for s in repo.claim(reconciler.owner, lease_s=30) if s.id == sweep_id]
    request = LaunchRequest(
        sweep_id=sweep_id,
        generation=sweep.generation,
        launch=sweep.launch_count + 1,
        service_url=reconciler.service_url,
        worker_token=new_worker_token(),
        tracking_uri=reconciler.tracking_uri,
    )
    repo.begin_launch(
        sweep_id,
        reconciler.owner,
        request.worker_token,
        launch=request.launch,
        submission_id=request.submission_id,
    )
    return request


def _restarted(reconciler: Reconciler, launcher: FakeLauncher) -> Reconciler:
    """A new service process on the same database and launcher (its drivers outlived the
    old one); the old process's leases are taken over as those of a dead holder."""
    return Reconciler(
        reconciler.repo,
        launcher,
        service_url=reconciler.service_url,
        tracking_uri=reconciler.tracking_uri,
        owner=reconciler.owner,  # as a holder known dead: its sweeps are claimable at once
        metrics=reconciler.metrics,
    )


def test_a_launch_recorded_but_never_started_is_launched_once_after_a_restart(
    client: TestClient,
    repo: Repository,
    reconciler: Reconciler,
    launcher: FakeLauncher,
    tenant_token: str,
) -> None:
    sweep_id = submit(client, tenant_token)["id"]
    _record_launch(repo, reconciler, sweep_id)  # then the service died: no driver
    assert _sweep(client, tenant_token, sweep_id)["status"] == SweepState.LAUNCHING
    _restarted(reconciler, launcher).step()
    (driver,) = launcher.alive(sweep_id)
    assert driver.request.launch == 2
    assert _sweep(client, tenant_token, sweep_id)["status"] == SweepState.RUNNING


def test_a_driver_started_but_not_recorded_is_adopted_not_launched_again(
    client: TestClient,
    repo: Repository,
    reconciler: Reconciler,
    launcher: FakeLauncher,
    tenant_token: str,
) -> None:
    sweep_id = submit(client, tenant_token)["id"]
    request = _record_launch(repo, reconciler, sweep_id)
    launcher.launch(request)  # ... and the service died before it recorded the reference
    again = _restarted(reconciler, launcher)
    again.step()
    again.step()
    (driver,) = launcher.for_sweep(sweep_id)
    assert driver.state == DriverState.RUNNING
    assert driver.stop_requests == 0
    assert _sweep(client, tenant_token, sweep_id)["status"] == SweepState.RUNNING
    # the adopted driver's token is the sweep's: its events count
    view = client.get(f"/api/v1/worker/sweeps/{sweep_id}", headers=auth(request.worker_token))
    assert view.status_code == 200


def test_a_stray_driver_is_stopped_and_no_launch_starts_while_it_lives(
    client: TestClient,
    repo: Repository,
    reconciler: Reconciler,
    launcher: FakeLauncher,
    tenant_token: str,
) -> None:
    sweep_id = submit(client, tenant_token)["id"]
    reconciler.step()
    (first,) = launcher.alive(sweep_id)
    # a driver of an earlier launch the database no longer names (it outlived a restart)
    stray = LaunchRequest(**{**first.request.__dict__, "launch": 7})
    launcher.launch(stray)
    launcher.exit(sweep_id, DriverState.FAILED)
    launcher.drivers[stray.submission_id].state = DriverState.RUNNING
    launcher.stop_exits = False  # a real driver takes a while to stop
    for _ in range(3):
        reconciler.step()
    assert [d.request.submission_id for d in launcher.alive(sweep_id)] == [stray.submission_id]
    assert launcher.drivers[stray.submission_id].stop_requests == 3
    launcher.drivers[stray.submission_id].state = DriverState.FAILED  # it has stopped
    reconciler.step()
    (driver,) = launcher.alive(sweep_id)
    assert driver.request.launch == 2  # the relaunch came only once the stray was gone
    text = client.get("/metrics").text
    assert "dualtune_stray_drivers_stopped_total 3.0" in text


def test_cancel_while_launching_stops_the_driver_before_closing(
    client: TestClient,
    repo: Repository,
    reconciler: Reconciler,
    launcher: FakeLauncher,
    tenant_token: str,
) -> None:
    sweep_id = submit(client, tenant_token)["id"]
    request = _record_launch(repo, reconciler, sweep_id)
    launcher.launch(request)  # started; the service does not know its reference yet
    assert (
        client.post(f"/api/v1/sweeps/{sweep_id}/cancel", headers=auth(tenant_token)).status_code
        == 202
    )
    assert _sweep(client, tenant_token, sweep_id)["status"] == SweepState.CANCELLING
    launcher.stop_exits = False
    reconciler.step()
    assert _sweep(client, tenant_token, sweep_id)["status"] == SweepState.CANCELLING
    assert launcher.drivers[request.submission_id].stop_requests == 1
    launcher.exit(sweep_id, DriverState.FAILED)
    reconciler.step()
    sweep = _sweep(client, tenant_token, sweep_id)
    assert sweep["status"] == SweepState.CANCELLED
    assert sweep["trial_counts"] == {TrialState.CANCELLED: 5}


def test_a_driver_that_outlived_its_sweep_is_stopped(
    client: TestClient, reconciler: Reconciler, launcher: FakeLauncher, tenant_token: str
) -> None:
    sweep_id = submit(client, tenant_token)["id"]
    reconciler.step()
    (driver,) = launcher.alive(sweep_id)
    client.post(f"/api/v1/sweeps/{sweep_id}/cancel", headers=auth(tenant_token))
    launcher.stop_exits = False
    reconciler.step()
    launcher.exit(sweep_id, DriverState.FAILED)
    reconciler.step()
    assert _sweep(client, tenant_token, sweep_id)["status"] == SweepState.CANCELLED
    driver.state = DriverState.RUNNING  # it came back (or never really stopped)
    before = driver.stop_requests
    reconciler.step()
    assert driver.stop_requests == before + 1


def test_one_sweep_that_raises_does_not_stop_the_round_and_is_backed_off(
    client: TestClient,
    reconciler: Reconciler,
    launcher: FakeLauncher,
    tenant_token: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    bad, good = (submit(client, tenant_token)["id"] for _ in range(2))
    reconciler.step()
    real_state = launcher.state

    def state(ref: str) -> DriverState:
        if bad in ref:
            raise RuntimeError("the launcher's state lookup broke for this one sweep")
        return real_state(ref)

    launcher.state = state  # type: ignore[method-assign]
    launcher.exit(bad)
    launcher.exit(good)
    # The reconciler's clock stands still from here: the 1 s backoff must not run out
    # between the two rounds on a busy machine (it did, once, under a full test run).
    frozen = reconciler.now()
    reconciler.now = lambda: frozen
    with caplog.at_level(logging.ERROR, logger="dualtune.reconciler"):
        reconciler.step()
    assert _sweep(client, tenant_token, good)["status"] == SweepState.RUNNING  # relaunched
    assert len(launcher.alive(good)) == 1
    assert any(bad in r.getMessage() for r in caplog.records)
    text = client.get("/metrics").text
    assert 'dualtune_reconcile_errors_total{kind="RuntimeError"} 1.0' in text
    reconciler.step()  # backed off: not tried again at once
    assert (
        'dualtune_reconcile_errors_total{kind="RuntimeError"} 1.0' in client.get("/metrics").text
    )


def test_a_sweep_whose_every_trial_failed_ends_failed_with_why(
    client: TestClient, reconciler: Reconciler, launcher: FakeLauncher, tenant_token: str
) -> None:
    sweep_id = submit(client, tenant_token)["id"]
    reconciler.step()
    (driver,) = launcher.alive(sweep_id)
    token = driver.request.worker_token
    view = client.get(f"/api/v1/worker/sweeps/{sweep_id}", headers=auth(token)).json()
    events = [
        {"trial_id": t, "status": TrialState.FAILED, "attempt": 1, "error": "boom"}
        for t in view["run_trial_ids"][:3]
    ] + [
        {"trial_id": t, "status": TrialState.DIVERGED, "attempt": 1}
        for t in view["run_trial_ids"][3:]
    ]
    client.post(
        f"/api/v1/worker/sweeps/{sweep_id}/events",
        json={"generation": 0, "events": events},
        headers=auth(token),
    )
    launcher.exit(sweep_id)
    reconciler.step()
    sweep = _sweep(client, tenant_token, sweep_id)
    assert sweep["status"] == SweepState.FAILED
    assert sweep["error"] == "no trial succeeded (3 failed, 2 diverged)"


def test_a_final_trial_state_is_final_and_a_contrary_event_is_rejected_with_its_reason(
    client: TestClient, reconciler: Reconciler, launcher: FakeLauncher, tenant_token: str
) -> None:
    sweep_id = submit(client, tenant_token)["id"]
    reconciler.step()
    token = launcher.alive(sweep_id)[0].request.worker_token
    view = client.get(f"/api/v1/worker/sweeps/{sweep_id}", headers=auth(token)).json()
    first, second = view["run_trial_ids"][:2]

    def send(*events: dict[str, Any]) -> Any:
        return client.post(
            f"/api/v1/worker/sweeps/{sweep_id}/events",
            json={"generation": 0, "events": list(events)},
            headers=auth(token),
        ).json()

    send(
        {
            "trial_id": first,
            "status": TrialState.SUCCEEDED,
            "attempt": 1,
            "metrics": {"val/loss_mean": 0.5},
        }
    )
    answer = send(
        {"trial_id": first, "status": TrialState.FAILED, "attempt": 2, "error": "late"},
        {"trial_id": second, "status": TrialState.RUNNING, "attempt": 1},
        {"trial_id": "no-such-trial", "status": TrialState.RUNNING, "attempt": 1},
    )
    assert answer["changed"] == 1
    assert [(r["index"], r["trial_id"]) for r in answer["rejected"]] == [
        (0, first),
        (2, "no-such-trial"),
    ]
    assert "final" in answer["rejected"][0]["reason"]
    trials = client.get(f"/api/v1/sweeps/{sweep_id}/trials", headers=auth(tenant_token)).json()
    kept = next(t for t in trials["items"] if t["trial_id"] == first)
    assert kept["status"] == TrialState.SUCCEEDED
    assert kept["metrics"] == {"val/loss_mean": 0.5}
    assert kept["error"] is None


def test_leases_are_per_process_even_under_one_replica_id(
    client: TestClient, repo: Repository, tenant_token: str
) -> None:
    """`serve --workers 2` runs two reconcilers under the chart's one replica id."""
    submit(client, tenant_token)
    one, other = lease_owner("pod-0"), _other_process_owner("pod-0")
    assert one != other
    assert len(repo.claim(one, lease_s=60)) == 1
    assert repo.claim(other, lease_s=60) == []


def test_the_lease_of_a_dead_process_on_this_host_is_taken_at_once(
    client: TestClient, repo: Repository, tenant_token: str
) -> None:
    submit(client, tenant_token)
    dead = _other_process_owner("embedded")
    assert holder_is_dead(dead)
    assert not holder_is_dead(lease_owner("embedded"))
    assert not holder_is_dead("pod-1@another-host:1:1.00")  # unknown: its lease runs out
    assert len(repo.claim(dead, lease_s=60)) == 1
    assert repo.claim(lease_owner("embedded"), lease_s=60) == []
    assert len(repo.claim(lease_owner("embedded"), lease_s=60, dead_owners={dead})) == 1


def test_a_launcher_that_cannot_list_its_drivers_changes_nothing(
    client: TestClient, reconciler: Reconciler, launcher: FakeLauncher, tenant_token: str
) -> None:
    sweep_id = submit(client, tenant_token)["id"]
    reconciler.step()

    def broken() -> Any:
        raise Unavailable("the Ray head does not answer")

    launcher.running_drivers = broken  # type: ignore[method-assign]
    launcher.vanish(sweep_id)
    reconciler.step()
    assert launcher.for_sweep(sweep_id) == []  # not relaunched blind
    assert _sweep(client, tenant_token, sweep_id)["status"] == SweepState.RUNNING


def _other_process_owner(replica_id: str) -> str:
    """The lease name of another process of this host, which has exited."""
    code = (
        f"from dualtune.service.reconciler import lease_owner; print(lease_owner({replica_id!r}))"
    )
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
