"""The reconciler with the fake launcher: launch, events, close, relaunch, cancel, retry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from dualtune.service.db.repository import Repository
from dualtune.service.launchers import DriverState, FakeLauncher
from dualtune.service.reconciler import Reconciler
from tests.service.api.helpers import auth, submit


@pytest.fixture
def reconciler(client: TestClient) -> Reconciler:
    r: Reconciler = client.app.state.reconciler  # type: ignore[attr-defined]
    return r


def _driver_token(launcher: FakeLauncher, sweep_id: str) -> str:
    return launcher.for_sweep(sweep_id)[-1].request.worker_token


def _events(client: TestClient, sweep_id: str, token: str, generation: int, *events: Any) -> Any:
    response = client.post(
        f"/api/v1/worker/sweeps/{sweep_id}/events",
        json={"generation": generation, "events": list(events)},
        headers=auth(token),
    )
    assert response.status_code == 200, response.text
    return response.json()["changed"]


def _finish_all(
    client: TestClient, sweep_id: str, token: str, generation: int = 0, status: str = "succeeded"
) -> None:
    view = client.get(f"/api/v1/worker/sweeps/{sweep_id}", headers=auth(token)).json()
    for i, trial_id in enumerate(view["run_trial_ids"]):
        _events(
            client,
            sweep_id,
            token,
            generation,
            {
                "trial_id": trial_id,
                "status": status,
                "attempt": 1,
                "metrics": {"train/cvar_0.1": 1.0 / (i + 1), "val/loss_mean": 0.5},
                "mlflow_run_id": f"run{i}",
            },
        )


def _sweep(client: TestClient, token: str, sweep_id: str) -> Any:
    return client.get(f"/api/v1/sweeps/{sweep_id}", headers=auth(token)).json()


def test_a_pending_sweep_is_launched_with_a_token_scoped_to_it(
    client: TestClient, reconciler: Reconciler, launcher: FakeLauncher, tenant_token: str
) -> None:
    sweep_id = submit(client, tenant_token)["id"]
    other_id = submit(client, tenant_token)["id"]
    reconciler.step()
    assert _sweep(client, tenant_token, sweep_id)["status"] == "running"
    (driver,) = launcher.for_sweep(sweep_id)
    assert driver.request.service_url == "http://service.test"
    token = driver.request.worker_token
    view = client.get(f"/api/v1/worker/sweeps/{sweep_id}", headers=auth(token)).json()
    assert view["generation"] == 0
    assert len(view["run_trial_ids"]) == 5
    assert view["spec"]["name"] == "moons-fl"
    # scoped: the token opens only its own sweep
    other = client.get(f"/api/v1/worker/sweeps/{other_id}", headers=auth(token))
    assert other.status_code == 401


def test_events_are_idempotent_and_a_final_state_is_never_undone(
    client: TestClient, reconciler: Reconciler, launcher: FakeLauncher, tenant_token: str
) -> None:
    sweep_id = submit(client, tenant_token)["id"]
    reconciler.step()
    token = _driver_token(launcher, sweep_id)
    trial_id = client.get(f"/api/v1/sweeps/{sweep_id}/trials", headers=auth(tenant_token)).json()[
        "items"
    ][0]["trial_id"]
    running = {"trial_id": trial_id, "status": "running", "attempt": 1}
    done = {
        "trial_id": trial_id,
        "status": "succeeded",
        "attempt": 1,
        "metrics": {"train/loss_mean": 0.25},
        "mlflow_run_id": "abc",
    }
    assert _events(client, sweep_id, token, 0, running) == 1
    assert _events(client, sweep_id, token, 0, running) == 0
    assert _events(client, sweep_id, token, 0, done) == 1
    assert _events(client, sweep_id, token, 0, done) == 0  # a replay changes nothing
    assert _events(client, sweep_id, token, 0, running) == 0  # late: the final state stays
    trial = client.get(
        f"/api/v1/sweeps/{sweep_id}/trials",
        params={"status": "succeeded"},
        headers=auth(tenant_token),
    ).json()["items"][0]
    assert trial["metrics"] == {"train/loss_mean": 0.25}
    assert trial["mlflow_run_id"] == "abc"
    assert trial["mlflow_run_url"] is None  # no MLflow experiment reported yet
    assert trial["attempts"] == 1


def test_a_sweep_whose_trials_are_all_final_closes_when_its_driver_exits(
    client: TestClient, reconciler: Reconciler, launcher: FakeLauncher, tenant_token: str
) -> None:
    sweep_id = submit(client, tenant_token)["id"]
    reconciler.step()
    token = _driver_token(launcher, sweep_id)
    _events_parent = client.post(
        f"/api/v1/worker/sweeps/{sweep_id}/events",
        json={"generation": 0, "mlflow_experiment_id": "7", "mlflow_parent_run_id": "parent"},
        headers=auth(token),
    )
    assert _events_parent.status_code == 200
    _finish_all(client, sweep_id, token)
    reconciler.step()
    assert _sweep(client, tenant_token, sweep_id)["status"] == "running"  # driver still up
    launcher.exit(sweep_id)
    reconciler.step()
    sweep = _sweep(client, tenant_token, sweep_id)
    assert sweep["status"] == "succeeded"
    assert sweep["trial_counts"] == {"succeeded": 5}
    assert sweep["mlflow"]["parent_run_url"] == (
        "http://mlflow.test/#/experiments/7/runs/parent?workflowType=machine_learning"
    )
    assert sweep["mlflow"]["experiment_url"] == (
        "http://mlflow.test/#/experiments/7/runs?viewStateShareKey=dualtune&workflowType=machine_learning"
    )
    assert sweep["best_trial"]["metrics"]["val/loss_mean"] == 0.5
    # the finished sweep's token is revoked
    late = client.get(f"/api/v1/worker/sweeps/{sweep_id}", headers=auth(token))
    assert late.status_code == 401


def test_the_report_names_the_best_trial_of_every_method(
    client: TestClient, reconciler: Reconciler, launcher: FakeLauncher, tenant_token: str
) -> None:
    spec_id = submit(client, tenant_token)["id"]
    reconciler.step()
    _finish_all(client, spec_id, _driver_token(launcher, spec_id))
    report = client.get(f"/api/v1/sweeps/{spec_id}/report", headers=auth(tenant_token)).json()
    assert [m["method"] for m in report["methods"]] == ["erm", "fl"]
    trials = client.get(f"/api/v1/sweeps/{spec_id}/trials", headers=auth(tenant_token)).json()[
        "items"
    ]
    fl = [t for t in trials if t["method"] == "fl"]
    best_fl = min(fl, key=lambda t: t["metrics"]["val/loss_mean"])  # selection: val/loss_mean
    entry = report["methods"][1]
    assert entry["best"]["trial_id"] == best_fl["trial_id"]
    assert entry["best"]["mlflow_run_id"] == best_fl["mlflow_run_id"]
    assert report["trial_counts"]["succeeded"] == 5
    assert entry["vs_erm"]["train/cvar_0.1"] == pytest.approx(
        best_fl["metrics"]["train/cvar_0.1"] / trials[0]["metrics"]["train/cvar_0.1"]
    )


def test_a_vanished_driver_is_relaunched_and_the_old_token_stops_working(
    client: TestClient, reconciler: Reconciler, launcher: FakeLauncher, tenant_token: str
) -> None:
    sweep_id = submit(client, tenant_token)["id"]
    reconciler.step()
    old = _driver_token(launcher, sweep_id)
    launcher.vanish(sweep_id)
    reconciler.step()
    (driver,) = launcher.for_sweep(sweep_id)
    assert driver.request.launch == 2
    assert client.get(f"/api/v1/worker/sweeps/{sweep_id}", headers=auth(old)).status_code == 401
    assert _sweep(client, tenant_token, sweep_id)["status"] == "running"


def test_a_sweep_whose_driver_keeps_dying_fails_with_a_reason(
    client: TestClient, reconciler: Reconciler, launcher: FakeLauncher, tenant_token: str
) -> None:
    sweep_id = submit(client, tenant_token)["id"]
    for _ in range(reconciler.max_launches):
        reconciler.step()
        launcher.exit(sweep_id, DriverState.FAILED)
    reconciler.step()
    sweep = _sweep(client, tenant_token, sweep_id)
    assert sweep["status"] == "failed"
    assert "3 driver launches" in sweep["error"]
    assert sweep["trial_counts"] == {"failed": 5}


def test_a_refused_launch_is_retried_after_a_backoff_and_not_counted_as_a_launch(
    client: TestClient, reconciler: Reconciler, launcher: FakeLauncher, tenant_token: str
) -> None:
    sweep_id = submit(client, tenant_token)["id"]
    launcher.fail_launches = 2
    # The reconciler's clock stands still between steps: on a loaded machine two steps can
    # be a whole backoff apart.
    start = datetime.now(UTC)
    reconciler.now = lambda: start
    reconciler.step()
    sweep = _sweep(client, tenant_token, sweep_id)
    assert sweep["status"] == "pending"
    assert "refused" in sweep["error"]
    reconciler.step()  # within the backoff: not tried again
    assert launcher.fail_launches == 1
    later = start + timedelta(seconds=1.5)
    reconciler.now = lambda: later
    reconciler.step()  # refused again, backoff doubles to 2 s
    assert launcher.fail_launches == 0
    reconciler.step()
    assert launcher.drivers == {}
    even_later = start + timedelta(seconds=5)
    reconciler.now = lambda: even_later
    reconciler.step()
    sweep = _sweep(client, tenant_token, sweep_id)
    assert sweep["status"] == "running"
    assert sweep["error"] is None
    (driver,) = launcher.for_sweep(sweep_id)
    assert driver.request.launch == 1  # refusals started no driver


def test_a_launcher_that_keeps_refusing_fails_the_sweep_with_its_reason(
    client: TestClient, reconciler: Reconciler, launcher: FakeLauncher, tenant_token: str
) -> None:
    sweep_id = submit(client, tenant_token)["id"]
    launcher.fail_launches = 100
    for minute in range(reconciler.max_launch_failures + 1):
        at = datetime.now(UTC) + timedelta(minutes=minute)
        reconciler.now = lambda at=at: at
        reconciler.step()
    sweep = _sweep(client, tenant_token, sweep_id)
    assert sweep["status"] == "failed"
    assert "the launcher refused 8 launches" in sweep["error"]
    assert sweep["trial_counts"] == {"failed": 5}


def test_cancel_stops_the_driver_and_marks_unfinished_trials_cancelled(
    client: TestClient, reconciler: Reconciler, launcher: FakeLauncher, tenant_token: str
) -> None:
    sweep_id = submit(client, tenant_token)["id"]
    reconciler.step()
    token = _driver_token(launcher, sweep_id)
    trials = client.get(f"/api/v1/sweeps/{sweep_id}/trials", headers=auth(tenant_token)).json()
    first, second = (t["trial_id"] for t in trials["items"][:2])
    _events(client, sweep_id, token, 0, {"trial_id": first, "status": "succeeded", "attempt": 1})
    _events(client, sweep_id, token, 0, {"trial_id": second, "status": "running", "attempt": 1})
    launcher.stop_exits = False  # a real driver takes a while to stop
    response = client.post(f"/api/v1/sweeps/{sweep_id}/cancel", headers=auth(tenant_token))
    assert response.status_code == 202
    assert response.json()["status"] == "cancelling"
    reconciler.step()
    (driver,) = launcher.for_sweep(sweep_id)
    assert driver.stop_requests == 1
    assert _sweep(client, tenant_token, sweep_id)["status"] == "cancelling"
    driver.state = DriverState.FAILED  # it stopped
    reconciler.step()
    sweep = _sweep(client, tenant_token, sweep_id)
    assert sweep["status"] == "cancelled"
    assert sweep["trial_counts"] == {"succeeded": 1, "cancelled": 4}
    # a late event from the stopped driver changes nothing
    again = client.post(f"/api/v1/sweeps/{sweep_id}/cancel", headers=auth(tenant_token))
    assert again.status_code == 202
    assert again.json()["trial_counts"] == {"succeeded": 1, "cancelled": 4}


def test_retry_reruns_only_failed_diverged_and_cancelled_trials_in_a_new_generation(
    client: TestClient, reconciler: Reconciler, launcher: FakeLauncher, tenant_token: str
) -> None:
    sweep_id = submit(client, tenant_token)["id"]
    reconciler.step()
    token = _driver_token(launcher, sweep_id)
    ids = [
        t["trial_id"]
        for t in client.get(
            f"/api/v1/sweeps/{sweep_id}/trials", headers=auth(tenant_token)
        ).json()["items"]
    ]
    outcome = ["succeeded", "failed", "diverged", "succeeded", "succeeded"]
    for trial_id, status in zip(ids, outcome, strict=True):
        _events(client, sweep_id, token, 0, {"trial_id": trial_id, "status": status, "attempt": 1})
    launcher.exit(sweep_id)
    reconciler.step()
    assert _sweep(client, tenant_token, sweep_id)["status"] == "succeeded"

    retried = client.post(f"/api/v1/sweeps/{sweep_id}/retry", headers=auth(tenant_token))
    assert retried.status_code == 202
    assert retried.json()["generation"] == 1
    assert retried.json()["trial_counts"] == {"succeeded": 3, "pending": 2}
    reconciler.step()
    token = _driver_token(launcher, sweep_id)
    view = client.get(f"/api/v1/worker/sweeps/{sweep_id}", headers=auth(token)).json()
    assert view["generation"] == 1
    assert view["run_trial_ids"] == [ids[1], ids[2]]
    # an event of the old generation is ignored
    assert (
        _events(client, sweep_id, token, 0, {"trial_id": ids[1], "status": "failed", "attempt": 1})
        == 0
    )
    _finish_all(client, sweep_id, token, generation=1)
    launcher.exit(sweep_id)
    reconciler.step()
    sweep = _sweep(client, tenant_token, sweep_id)
    assert sweep["status"] == "succeeded"
    assert sweep["trial_counts"] == {"succeeded": 5}
    attempts = {
        t["trial_id"]: t["attempts"]
        for t in client.get(
            f"/api/v1/sweeps/{sweep_id}/trials", headers=auth(tenant_token)
        ).json()["items"]
    }
    assert attempts == {ids[0]: 1, ids[1]: 2, ids[2]: 2, ids[3]: 1, ids[4]: 1}
    attempts = {
        t["trial_id"]: t["attempts"]
        for t in client.get(
            f"/api/v1/sweeps/{sweep_id}/trials", headers=auth(tenant_token)
        ).json()["items"]
    }
    assert attempts == {ids[0]: 1, ids[1]: 2, ids[2]: 2, ids[3]: 1, ids[4]: 1}


def test_two_replicas_never_hold_the_same_sweep(
    repo: Repository, client: TestClient, tenant_token: str
) -> None:
    for i in range(6):
        submit(client, tenant_token, None)
        del i
    a = repo.claim("replica-a", lease_s=60)
    b = repo.claim("replica-b", lease_s=60)
    assert len(a) == 6
    assert b == []
    repo.release("replica-a")
    assert len(repo.claim("replica-b", lease_s=60)) == 6


def test_an_expired_lease_is_taken_over(
    repo: Repository, client: TestClient, tenant_token: str
) -> None:
    submit(client, tenant_token)
    assert len(repo.claim("replica-a", lease_s=-1)) == 1  # claimed, but already expired
    assert len(repo.claim("replica-b", lease_s=60)) == 1


def test_metrics_count_requests_states_and_launches(
    client: TestClient, reconciler: Reconciler, tenant_token: str
) -> None:
    submit(client, tenant_token)
    reconciler.step()
    text = client.get("/metrics").text
    assert 'dualtune_sweeps{state="running"} 1.0' in text
    assert 'dualtune_trials{state="pending"} 5.0' in text
    assert (
        'dualtune_http_requests_total{method="POST",route="/api/v1/sweeps",status="201"} 1.0'
        in text
    )
    assert "dualtune_launch_latency_seconds_count 1.0" in text
    assert 'dualtune_driver_launches_total{outcome="launched"} 1.0' in text


def test_a_launcher_that_is_down_launches_nothing_is_counted_and_leaves_the_api_ready(
    client: TestClient, reconciler: Reconciler, launcher: FakeLauncher, tenant_token: str
) -> None:
    """Without the launcher's list of running drivers no launch is safe (one might already
    run): the round changes nothing, says why in /metrics, and the API stays in service."""
    sweep_id = submit(client, tenant_token)["id"]
    launcher.ready = False
    reconciler.step()
    assert _sweep(client, tenant_token, sweep_id)["status"] == "pending"
    assert launcher.drivers == {}
    assert client.get("/readyz").status_code == 200
    assert 'dualtune_reconcile_errors_total{kind="Unavailable"} 1.0' in client.get("/metrics").text
    launcher.ready = True
    reconciler.step()
    assert _sweep(client, tenant_token, sweep_id)["status"] == "running"


def test_one_round_looks_at_every_active_sweep(
    client: TestClient, reconciler: Reconciler, launcher: FakeLauncher, tenant_token: str
) -> None:
    ids = [submit(client, tenant_token)["id"] for _ in range(60)]
    assert reconciler.step() == 60
    assert {d.request.sweep_id for d in launcher.drivers.values()} == set(ids)


def test_driver_logs_are_served_once_a_driver_ran(
    client: TestClient, reconciler: Reconciler, tenant_token: str
) -> None:
    sweep_id = submit(client, tenant_token)["id"]
    before = client.get(f"/api/v1/sweeps/{sweep_id}/logs", headers=auth(tenant_token))
    assert before.status_code == 404
    assert "no driver yet" in before.json()["detail"]
    reconciler.step()
    after = client.get(f"/api/v1/sweeps/{sweep_id}/logs", headers=auth(tenant_token))
    assert after.status_code == 200
    assert after.text == f"fake driver dualtune-{sweep_id}-g0-l1\n"
