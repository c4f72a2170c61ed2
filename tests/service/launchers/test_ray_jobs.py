"""The ray launcher against a real local Ray head (``ray start --head``, Jobs API on
loopback, token auth on as Ray 2.6x has it for local clusters)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from mlflow.tracking import MlflowClient

from dualtune.core.spec import Runtime
from dualtune.service.api.app import create_app
from dualtune.service.auth import new_tenant_token
from dualtune.service.db.engine import make_engine
from dualtune.service.db.migrate import upgrade
from dualtune.service.db.repository import Repository
from dualtune.service.errors import Unavailable
from dualtune.service.launchers import DriverState, LaunchRequest, RayJobsLauncher
from dualtune.service.launchers.ray_jobs import default_ray_token as default_token
from dualtune.service.settings import Settings
from tests.ports import free_port
from tests.ray_jobs import wait_for_job_agent
from tests.service.stack import ThreadedServer, final, wait_for

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.xdist_group("ray")]


def _ray() -> str:
    ray = Path(sys.executable).with_name("ray")
    return str(ray) if ray.exists() else (shutil.which("ray") or "ray")


@pytest.fixture
def jobs_api() -> Iterator[str]:
    """A Ray head of its own for each test (own temp dir, own ports), stopped by killing
    exactly its processes: `ray stop` would stop every Ray on the machine, and a head shared
    between tests would share their fate."""
    dashboard = free_port()
    temp_dir = tempfile.mkdtemp(prefix="rayjobs-", dir="/tmp")  # Ray's socket paths are short
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    subprocess.run(
        [
            _ray(),
            "start",
            "--head",
            f"--temp-dir={temp_dir}",
            f"--port={free_port()}",
            f"--dashboard-port={dashboard}",
            "--dashboard-host=127.0.0.1",
            # Every port of its own: the agents' defaults (52365, ...) would collide with any
            # other Ray on the machine, and a head whose job agent cannot bind takes no jobs.
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
            f"--metrics-export-port={free_port()}",
            "--include-dashboard=true",
            "--num-cpus=1",
            "--disable-usage-stats",
        ],
        check=True,
        capture_output=True,
        env=env,
    )
    address = f"http://127.0.0.1:{dashboard}"
    try:
        wait_for_job_agent(address, default_token())
        yield address
    finally:  # also when the head never took a job: leave nothing running
        head = [
            p
            for p in psutil.process_iter(["cmdline"])
            if any(temp_dir in part or f"={dashboard}" in part for part in p.info["cmdline"] or [])
        ]
        with contextlib.suppress(psutil.NoSuchProcess):  # the agents rename themselves `ray::…`
            head += [child for p in list(head) for child in p.children(recursive=True)]
        for p in head:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        psutil.wait_procs(head, timeout=30)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _request(launch: int = 1) -> LaunchRequest:
    # The service URL leads nowhere: the driver waits for it, so the job stays running.
    return LaunchRequest(
        sweep_id="sw-rayjobs01",
        generation=0,
        launch=launch,
        service_url=f"http://127.0.0.1:{free_port()}",
        worker_token="dtw_test",
        tracking_uri="sqlite:////tmp/unused-mlflow.db",
    )


def test_the_specs_runtime_becomes_the_jobs_runtime_env(jobs_api: str) -> None:
    """Read back from the Jobs API as Ray stored it. The requirement is one this environment
    already has (nothing is downloaded), and the job is stopped at once."""
    launcher = RayJobsLauncher(jobs_api, runtime_env={"env_vars": {"CLUSTER_WIDE": "1"}})
    runtime = Runtime(pip=["psutil"], env_vars={"MY_TASKS_HOME": "/data/my-tasks"})
    request = LaunchRequest(
        sweep_id="sw-rayjobs02",
        generation=0,
        launch=1,
        service_url=f"http://127.0.0.1:{free_port()}",
        worker_token="dtw_test",
        tracking_uri="sqlite:////tmp/unused-mlflow.db",
        env={"DUALTUNE_DATA_DIR": "/srv/dualtune"},
        runtime=runtime,
    )
    ref = launcher.launch(request)
    try:
        info = launcher._jobs().get_job_info(ref)
    finally:
        launcher.stop(ref)
    assert info.runtime_env["pip"]["packages"] == ["psutil"]
    assert info.runtime_env["env_vars"] == {
        "MY_TASKS_HOME": "/data/my-tasks",
        "CLUSTER_WIDE": "1",
        "DUALTUNE_DATA_DIR": "/srv/dualtune",
        "DUALTUNE_WORKER_TOKEN": "dtw_test",
        "MLFLOW_TRACKING_URI": "sqlite:////tmp/unused-mlflow.db",
    }


def _until(launcher: RayJobsLauncher, ref: str, state: DriverState) -> DriverState:
    deadline = time.monotonic() + 60
    while (now := launcher.state(ref)) != state and time.monotonic() < deadline:
        time.sleep(0.5)
    return now


def test_a_wrong_token_is_refused_with_a_clear_message(jobs_api: str) -> None:
    with pytest.raises(Unavailable, match="uthentication failed"):
        RayJobsLauncher(jobs_api, token="not-the-token").check_ready()


def test_submit_status_logs_stop_and_idempotent_resubmission(jobs_api: str) -> None:
    launcher = RayJobsLauncher(jobs_api)  # the token from ~/.ray/auth_token, as Ray wrote it
    launcher.check_ready()
    request = _request()
    ref = launcher.launch(request)
    assert ref == "dualtune-sw-rayjobs01-g0-l1"  # derived from the sweep, generation, launch
    assert launcher.state(ref) == DriverState.RUNNING
    assert launcher.launch(request) == ref  # the same launch again adopts the job
    found = [d for d in launcher.running_drivers() if d.sweep_id == "sw-rayjobs01"]
    assert [(d.ref, d.submission_id) for d in found] == [(ref, ref)]  # one job, one driver
    deadline = time.monotonic() + 60
    while "worker drive" not in launcher.logs(ref) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert "--sweep-id sw-rayjobs01" in launcher.logs(ref)
    assert "dtw_test" not in launcher.logs(ref)  # the token travels in the environment
    launcher.stop(ref)
    assert _until(launcher, ref, DriverState.FAILED) == DriverState.FAILED
    launcher.stop(ref)  # idempotent
    assert [d for d in launcher.running_drivers() if d.sweep_id == "sw-rayjobs01"] == []
    relaunch = launcher.launch(_request(launch=2))
    assert relaunch != ref
    launcher.stop(relaunch)
    assert launcher.state("dualtune-no-such-job") == DriverState.GONE


def test_a_sweep_runs_end_to_end_as_a_ray_job(jobs_api: str, tmp_path: Path) -> None:
    """The service with the ray launcher: the driver runs as a job on the cluster, reports
    back over HTTP, and logs to MLflow."""
    database = f"sqlite:///{tmp_path / 'dualtune.db'}"
    engine = make_engine(database)
    upgrade(engine)
    token = new_tenant_token()
    Repository(engine).create_token("ray", token)
    port = free_port()
    settings = Settings(
        data_dir=tmp_path,
        database_url=database,
        launcher="ray",
        ray_address=jobs_api,
        driver_data_dir=str(tmp_path / "drivers"),
        mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        service_url=f"http://127.0.0.1:{port}",
        reconcile_interval_s=0.5,
    )
    server = ThreadedServer(create_app(settings, engine=engine), port)
    server.start()
    try:
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}/api/v1",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        ) as api:
            spec = {
                "name": "on-ray",
                "task": {"name": "two_moons"},
                "constraint": {"kind": "sample_loss"},
                "methods": ["erm", "fl"],
                "grid": {"epsilon": 0.2, "dual_lr": 0.05},
                "train": {"epochs": 3},
            }
            sweep_id = api.post("/sweeps", json={"spec": spec}).json()["id"]
            sweep = wait_for(api, sweep_id, final, timeout_s=300)
    finally:
        server.stop()
        engine.dispose()
    assert sweep["status"] == "succeeded", sweep["error"]
    logs = RayJobsLauncher(jobs_api).logs(f"dualtune-{sweep_id}-g0-l1")
    assert sweep["trial_counts"] == {"succeeded": 2}
    parent = MlflowClient(settings.resolved_tracking_uri()).get_run(
        sweep["mlflow"]["parent_run_id"]
    )
    assert parent.data.tags["dualtune.sweep_id"] == sweep_id
    assert (tmp_path / "drivers" / "tune" / sweep_id).is_dir()  # the driver's data dir
    assert f"sweep {sweep_id} generation 0: 2 trials" in logs
