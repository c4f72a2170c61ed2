"""The local launcher with real driver processes (``python -m worker drive``)."""

from __future__ import annotations

import time
from pathlib import Path

from dualtune.service.launchers import DriverState, LaunchRequest, LocalLauncher
from tests.service.stack import free_port


def _request() -> LaunchRequest:
    return LaunchRequest(
        sweep_id="sw-local0001",
        generation=0,
        launch=1,
        service_url=f"http://127.0.0.1:{free_port()}",  # nobody there: the driver waits
        worker_token="dtw_test",
        tracking_uri="sqlite:////tmp/unused-mlflow.db",
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
