"""The spec's ``runtime`` on the service's side: a plugin task is accepted with
``runtime.pip``, the runtime travels to the launcher, becomes a Ray job's runtime_env, and a
driver whose check refuses the sweep fails it with the check's message."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from dualtune.core.spec import Runtime
from dualtune.service.errors import LauncherError
from dualtune.service.launchers import DriverState, FakeLauncher, LaunchRequest
from dualtune.service.launchers.ray_jobs import job_runtime_env
from dualtune.service.reconciler import Reconciler
from tests.service.api.helpers import auth, small_spec, submit


def plugin_spec(**runtime: Any) -> dict[str, Any]:
    return small_spec(task={"name": "my_task", "params": {"width": 3}}, runtime=runtime)


@pytest.fixture
def reconciler(client: TestClient) -> Reconciler:
    r: Reconciler = client.app.state.reconciler  # type: ignore[attr-defined]
    return r


def _request(runtime: Runtime, env: dict[str, str] | None = None) -> LaunchRequest:
    return LaunchRequest(
        sweep_id="sw-1",
        generation=0,
        launch=1,
        service_url="http://service.test",
        worker_token="dtw_x",
        tracking_uri="sqlite:///m.db",
        env=env or {},
        runtime=runtime,
    )


def test_an_unknown_task_needs_runtime_pip(client: TestClient, tenant_token: str) -> None:
    refused = client.post(
        "/api/v1/sweeps", json={"spec": plugin_spec()}, headers=auth(tenant_token)
    )
    assert refused.status_code == 422
    error = refused.json()["errors"][0]
    assert error["field"] == "spec.task.name"
    assert "unknown task 'my_task'; valid tasks: " in error["message"]
    accepted = submit(client, tenant_token, plugin_spec(pip=["my-tasks==1.2"]))
    assert accepted["spec"]["runtime"]["pip"] == ["my-tasks==1.2"]
    assert accepted["spec"]["task"] == {"name": "my_task", "params": {"width": 3}}


def test_the_reconciler_hands_the_specs_runtime_to_the_launcher(
    client: TestClient, reconciler: Reconciler, launcher: FakeLauncher, tenant_token: str
) -> None:
    runtime = {"pip": ["my-tasks==1.2"], "env_vars": {"MY_TASKS_HOME": "/data"}}
    sweep_id = submit(client, tenant_token, plugin_spec(**runtime))["id"]
    plain_id = submit(client, tenant_token)["id"]
    reconciler.step()
    (driver,) = launcher.for_sweep(sweep_id)
    assert driver.request.runtime == Runtime.model_validate(runtime)
    (plain,) = launcher.for_sweep(plain_id)
    assert plain.request.runtime == Runtime()


def test_a_ray_jobs_runtime_env_merges_the_launchers_the_specs_and_dualtunes() -> None:
    runtime = Runtime(pip=["my-tasks==1.2", "shared"], env_vars={"A": "spec", "B": "spec"})
    base = {"pip": ["shared", "ops-tools"], "env_vars": {"B": "ops"}, "working_dir": "s3://x"}
    env = job_runtime_env(base, _request(runtime, env={"DUALTUNE_DATA_DIR": "/srv"}))
    assert env["pip"] == ["shared", "ops-tools", "my-tasks==1.2"]
    assert env["working_dir"] == "s3://x"
    assert env["env_vars"] == {
        "A": "spec",
        "B": "ops",  # the launcher's configuration wins over the spec
        "DUALTUNE_DATA_DIR": "/srv",
        "DUALTUNE_WORKER_TOKEN": "dtw_x",
        "MLFLOW_TRACKING_URI": "sqlite:///m.db",
    }
    assert base == {
        "pip": ["shared", "ops-tools"],
        "env_vars": {"B": "ops"},
        "working_dir": "s3://x",
    }
    as_dict = job_runtime_env({"pip": {"packages": ["a"], "pip_check": True}}, _request(runtime))
    assert as_dict["pip"] == {"packages": ["a", "my-tasks==1.2", "shared"], "pip_check": True}
    assert "pip" not in job_runtime_env({}, _request(Runtime()))
    assert job_runtime_env({"uv": ["a"]}, _request(runtime))["uv"] == [
        "a",
        "my-tasks==1.2",
        "shared",
    ]
    with pytest.raises(LauncherError, match="uses conda"):
        job_runtime_env({"conda": "env.yaml"}, _request(runtime))
    with pytest.raises(LauncherError, match="cannot be added to"):
        job_runtime_env({"pip": "requirements.txt"}, _request(runtime))


def _fail(client: TestClient, sweep_id: str, token: str, generation: int, error: str) -> Any:
    response = client.post(
        f"/api/v1/worker/sweeps/{sweep_id}/failure",
        json={"generation": generation, "error": error},
        headers=auth(token),
    )
    return response


def test_a_driver_that_refuses_the_sweep_fails_it_and_it_is_not_relaunched(
    client: TestClient, reconciler: Reconciler, launcher: FakeLauncher, tenant_token: str
) -> None:
    sweep_id = submit(client, tenant_token, plugin_spec(pip=["my-tasks==1.2"]))["id"]
    reconciler.step()
    (driver,) = launcher.for_sweep(sweep_id)
    token = driver.request.worker_token
    message = "task 'my_task' is not registered where the sweep runs (runtime.pip: my-tasks)"
    assert _fail(client, sweep_id, token, 1, message).json()["changed"] == 0  # not its generation
    assert _fail(client, sweep_id, token, 0, message).json()["changed"] == 1
    sweep = client.get(f"/api/v1/sweeps/{sweep_id}", headers=auth(tenant_token)).json()
    assert sweep["status"] == "failed"
    assert sweep["error"] == message
    trials = client.get(f"/api/v1/sweeps/{sweep_id}/trials", headers=auth(tenant_token)).json()
    assert {(t["status"], t["attempts"], t["error"]) for t in trials["items"]} == {
        ("failed", 0, message)
    }
    # The driver exits non-zero; the reconciler leaves the failed sweep alone.
    launcher.exit(sweep_id, DriverState.FAILED)
    reconciler.step()
    assert len(launcher.for_sweep(sweep_id)) == 1
    again = client.get(f"/api/v1/sweeps/{sweep_id}", headers=auth(tenant_token)).json()
    assert (again["status"], again["error"]) == ("failed", message)
    # The sweep's token is revoked with it.
    assert _fail(client, sweep_id, token, 0, message).status_code == 401


def test_a_cancelling_sweep_is_not_failed_by_its_driver(
    client: TestClient, reconciler: Reconciler, launcher: FakeLauncher, tenant_token: str
) -> None:
    launcher.stop_exits = False
    sweep_id = submit(client, tenant_token)["id"]
    reconciler.step()
    token = launcher.for_sweep(sweep_id)[0].request.worker_token
    assert (
        client.post(f"/api/v1/sweeps/{sweep_id}/cancel", headers=auth(tenant_token)).status_code
        == 202
    )
    assert _fail(client, sweep_id, token, 0, "too late").json()["changed"] == 0
    sweep = client.get(f"/api/v1/sweeps/{sweep_id}", headers=auth(tenant_token)).json()
    assert sweep["status"] == "cancelling"
