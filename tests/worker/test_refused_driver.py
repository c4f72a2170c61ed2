"""A driver whose token is revoked mid-sweep stops its Tuner and exits with status 6,
leaving no Ray process behind: a real ``python -m dualtune.worker drive`` process on a real
local Ray runtime and MLflow store, against a real service (uvicorn on loopback, SQLite;
the fake launcher, so the test starts the driver itself with the launch's token)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from dualtune.core.spec import WORKER_TOKEN_ENV
from dualtune.core.states import SweepState, TrialState
from tests.worker.served import Served, moons_spec

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.xdist_group("ray")]


def _descendants(pid: int) -> set[psutil.Process]:
    with contextlib.suppress(psutil.Error):
        return set(psutil.Process(pid).children(recursive=True))
    return set()


def _alive(processes: set[psutil.Process]) -> list[psutil.Process]:
    alive = []
    for p in processes:
        with contextlib.suppress(psutil.Error):
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                alive.append(p)
    return alive


def test_a_driver_whose_sweep_is_cancelled_stops_its_tuner_and_exits_6(
    served: Served, tmp_path: Path
) -> None:
    # Trials far longer than the test: only the refusal can end them.
    spec = moons_spec("refused", seeds=2, train={"epochs": 100_000, "batch_size": 64})
    sweep_id = served.submit(spec)
    token = served.launch(sweep_id)
    (launch,) = served.launcher.alive(sweep_id)
    env = {
        **os.environ,
        WORKER_TOKEN_ENV: token,
        "DUALTUNE_DATA_DIR": str(tmp_path / "data"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "DUALTUNE_NUM_CPUS": "2",
        "DUALTUNE_HEARTBEAT_S": "1",
    }
    log = tmp_path / "driver.log"
    with log.open("wb") as out:
        driver = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dualtune.worker",
                "drive",
                "--service-url",
                served.url,
                "--sweep-id",
                sweep_id,
                "--submission-id",
                launch.request.submission_id,
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    family: set[psutil.Process] = set()
    try:
        deadline = time.monotonic() + 300
        while True:  # both trials train
            family |= _descendants(driver.pid)
            _, trials = served.sweep(sweep_id)
            if all(t.status == TrialState.RUNNING for t in trials.values()):
                break
            assert driver.poll() is None, log.read_text()[-5000:]
            assert time.monotonic() < deadline, log.read_text()[-5000:]
            time.sleep(0.5)
        time.sleep(3)  # a few epochs in
        family |= _descendants(driver.pid)

        served.repo.request_cancel(served.tenant, sweep_id)
        while served.sweep(sweep_id)[0].status != SweepState.CANCELLED:
            served.reconciler.step()  # closes the sweep: the driver's token is void
            time.sleep(0.2)
        cancelled = time.monotonic()
        while driver.poll() is None and time.monotonic() - cancelled < 60:
            family |= _descendants(driver.pid)
            time.sleep(0.2)
        took = time.monotonic() - cancelled
        assert driver.poll() == 6, log.read_text()[-5000:]
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()

    text = log.read_text()
    assert took < 60
    assert f"submission {launch.request.submission_id}" in text
    assert "refused this driver" in text
    assert "the Tuner stopped" in text  # the stopper did it, not the watchdog
    assert len(family) >= 2, "the driver's Ray processes were never seen"
    deadline = time.monotonic() + 15
    while _alive(family) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _alive(family) == [], [p.cmdline() for p in _alive(family)]
    _, trials = served.sweep(sweep_id)
    assert {t.status for t in trials.values()} == {TrialState.CANCELLED}
