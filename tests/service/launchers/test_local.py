"""The local launcher with real driver processes (``python -m worker drive``)."""

from __future__ import annotations

import time
from pathlib import Path

import psutil
import pytest

from dualtune.core.spec import Runtime
from dualtune.service.launchers import DriverState, LaunchRequest, LocalLauncher
from dualtune.service.launchers.base import expand_env
from tests.ports import free_port


def _request(
    runtime: Runtime | None = None, env: dict[str, str] | None = None, launch: int = 1
) -> LaunchRequest:
    return LaunchRequest(
        sweep_id="sw-local0001",
        generation=0,
        launch=launch,
        service_url=f"http://127.0.0.1:{free_port()}",  # nobody there: the driver waits
        worker_token="dtw_test",
        tracking_uri="sqlite:////tmp/unused-mlflow.db",
        env=env or {},
        runtime=runtime or Runtime(),
    )


def _until(launcher: LocalLauncher, ref: str, state: DriverState) -> DriverState:
    deadline = time.monotonic() + 30
    while (now := launcher.state(ref)) != state and time.monotonic() < deadline:
        time.sleep(0.2)
    return now


def test_a_driver_runs_is_stopped_and_logs_to_the_data_dir(tmp_path: Path) -> None:
    launcher = LocalLauncher(log_dir=tmp_path / "logs", data_dir=tmp_path)
    ref = launcher.launch(_request())
    assert launcher.state(ref) == DriverState.RUNNING
    launcher.stop(ref)
    assert _until(launcher, ref, DriverState.FAILED) == DriverState.FAILED
    assert (tmp_path / "logs" / "dualtune-sw-local0001-g0-l1.log").exists()


def test_a_driver_from_an_earlier_service_process_is_found_by_pid(tmp_path: Path) -> None:
    first = LocalLauncher(log_dir=tmp_path / "logs", data_dir=tmp_path)
    ref = first.launch(_request())
    restarted = LocalLauncher(log_dir=tmp_path / "logs", data_dir=tmp_path)  # no child handle
    assert restarted.state(ref) == DriverState.RUNNING
    restarted.stop(ref)
    assert _until(first, ref, DriverState.FAILED) == DriverState.FAILED  # reaped by its parent
    assert restarted.state(ref) == DriverState.GONE
    assert restarted.state("local:999999:1.00") == DriverState.GONE


def test_running_drivers_finds_every_driver_by_its_command_line(tmp_path: Path) -> None:
    """Also those another service process started: a restarted service adopts or stops them."""
    first = LocalLauncher(log_dir=tmp_path / "logs", data_dir=tmp_path)
    ref = first.launch(_request())
    other = first.launch(_request(launch=2))
    restarted = LocalLauncher(log_dir=tmp_path / "logs", data_dir=tmp_path)
    try:
        found = {(d.ref, d.sweep_id, d.submission_id) for d in restarted.running_drivers()}
        assert (ref, "sw-local0001", "dualtune-sw-local0001-g0-l1") in found
        assert (other, "sw-local0001", "dualtune-sw-local0001-g0-l2") in found
        restarted.stop(other)
        assert _until(first, other, DriverState.FAILED) == DriverState.FAILED
        assert other not in {d.ref for d in restarted.running_drivers()}
    finally:
        first.stop(ref)
        first.stop(other)
        assert _until(first, ref, DriverState.FAILED) == DriverState.FAILED


def test_the_driver_inherits_only_an_allow_list_of_the_services_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DUALTUNE_DATABASE_URL", "postgresql://svc:secret@db/dualtune")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "ray-secret")
    monkeypatch.setenv("SOME_OTHER_SECRET", "x")
    monkeypatch.setenv("DUALTUNE_NUM_CPUS", "2")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "for-the-tracking-server")
    env = LocalLauncher(log_dir=tmp_path / "logs", data_dir=tmp_path).driver_env(_request())
    assert not {"DUALTUNE_DATABASE_URL", "RAY_AUTH_TOKEN", "SOME_OTHER_SECRET"} & set(env)
    assert env["DUALTUNE_NUM_CPUS"] == "2"  # the driver's own knobs pass
    assert env["MLFLOW_TRACKING_TOKEN"] == "for-the-tracking-server"
    assert env["PATH"]


def test_env_references_expand_as_ray_expands_them() -> None:
    env = {"PYTHONPATH": "/site", "HOME": "/home/u"}
    assert expand_env("/plugins:${PYTHONPATH}", env) == "/plugins:/site"
    assert expand_env("$HOME/x", env) == "/home/u/x"
    assert expand_env("a${UNSET}b", env) == "ab"  # an unset ${NAME} becomes empty
    assert expand_env("$UNSET/x", env) == "$UNSET/x"  # an unset $NAME stays


def test_the_specs_env_vars_sit_over_this_machines_and_under_dualtunes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", "/site")
    launcher = LocalLauncher(log_dir=tmp_path / "logs", data_dir=tmp_path)
    request = _request(
        Runtime(env_vars={"PYTHONPATH": "/plugins:${PYTHONPATH}", "DUALTUNE_DATA_DIR": "/x"}),
        env={"DUALTUNE_DATA_DIR": str(tmp_path / "drivers")},
    )
    env = launcher.driver_env(request)
    assert env["PYTHONPATH"] == "/plugins:/site"
    assert env["DUALTUNE_DATA_DIR"] == str(tmp_path / "drivers")  # the service's wins
    assert env["DUALTUNE_WORKER_TOKEN"] == "dtw_test"


def _environ(pid: int) -> dict[str, str]:
    """The process's environment once it runs the driver (right after the fork, /proc may
    still show the launcher's)."""
    deadline = time.monotonic() + 30
    while True:
        environ: dict[str, str] = psutil.Process(pid).environ()
        if "DUALTUNE_WORKER_TOKEN" in environ or time.monotonic() > deadline:
            return environ
        time.sleep(0.1)


def test_the_driver_process_gets_the_specs_env_vars_and_pip_is_noted(tmp_path: Path) -> None:
    launcher = LocalLauncher(log_dir=tmp_path / "logs", data_dir=tmp_path)
    runtime = Runtime(pip=["my-tasks==1.2"], env_vars={"MY_TASKS_HOME": "/data/my-tasks"})
    ref = launcher.launch(_request(runtime))
    try:
        environ = _environ(int(ref.split(":")[1]))
        assert environ["MY_TASKS_HOME"] == "/data/my-tasks"
        assert environ["DUALTUNE_WORKER_TOKEN"] == "dtw_test"
        assert environ["DUALTUNE_DATA_DIR"] == str(tmp_path)
    finally:
        launcher.stop(ref)
        assert _until(launcher, ref, DriverState.FAILED) == DriverState.FAILED
    assert launcher.logs(ref).startswith(
        "dualtune: runtime.pip (my-tasks==1.2) is not installed by the local launcher"
    )
