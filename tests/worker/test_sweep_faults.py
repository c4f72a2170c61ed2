"""Faults a sweep must survive: a killed trial process, a diverging trial, an MLflow outage,
and a killed driver. All on real Ray, real MLflow, real processes and signals."""

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from dualtune import core
from dualtune.worker.crash_points import AFTER_LOG, CRASH_ENV
from dualtune.worker.driver import run_sweep
from tests.ports import free_port

from .conftest import small_spec

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.xdist_group("ray")]


def trial_processes() -> list[psutil.Process]:
    """Ray worker processes currently running a Tune function trial."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if "ImplicitFunc" in cmdline:
            found.append(proc)
    return found


def latest_checkpoint(storage: Path) -> int:
    """The highest checkpoint number under a Tune storage path (−1 if none). Tune creates
    and deletes checkpoint folders while we look, so a vanished folder is not an error."""
    latest = -1
    for _, dirs, _ in os.walk(storage, onerror=lambda _: None):
        for name in dirs:
            if name.startswith("checkpoint_") and name[11:].isdigit():
                latest = max(latest, int(name[11:]))
    return latest


def kill_trials_after_checkpoint(
    storage: Path, checkpoint: int
) -> tuple[threading.Thread, list[int]]:
    """A watcher that SIGKILLs every running trial process once a checkpoint numbered
    ``checkpoint`` (from 0) exists under ``storage``; the list collects the killed pids."""
    killed: list[int] = []

    def watch() -> None:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not killed:
            if latest_checkpoint(storage) >= checkpoint:
                for proc in trial_processes():
                    os.kill(proc.pid, signal.SIGKILL)
                    killed.append(proc.pid)
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    return watcher, killed


def test_killed_trial_process_resumes_from_checkpoint_with_identical_results(
    local_ray: None, tracking_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two faults, one after the other: the unit's process exits once after epoch 2's
    # metrics were logged and before epoch 2's checkpoint (worker.crash_points), and is
    # SIGKILLed from outside once a checkpoint from the third evaluation on exists. Metrics
    # are flushed only at the end here, so every epoch logged before a fault reaches MLflow
    # only through the checkpoints' unsent metrics (test_pack_sweep flushes at every
    # evaluation: there MLflow holds them before the fault).
    monkeypatch.setenv(CRASH_ENV, f"{AFTER_LOG}:2")
    monkeypatch.setenv("DUALTUNE_MLFLOW_FLUSH_S", "3600")
    spec = small_spec(
        task={"name": "digits"},
        methods=["rfl"],
        grid={"epsilon": 0.2, "alpha": 1.0, "dual_lr": 0.1},
        train={"epochs": 30, "batch_size": 32, "optimizer": {"name": "adam", "lr": 0.003}},
        # A checkpoint at every evaluation: the faults land between two of them.
        limits={"max_trials": 10, "max_failures": 2, "checkpoint_every_s": 0},
    )
    storage = tmp_path / "tune"
    # Checkpoints are numbered from 0: one from the third evaluation on means the trial has
    # state to resume from and epochs left to run.
    watcher, killed = kill_trials_after_checkpoint(storage, 2)
    result = run_sweep(
        spec,
        sweep_id="kill-trial",
        storage_path=storage,
        tracking_uri=tracking_uri,
        show_progress=False,
    )
    watcher.join(timeout=1)
    assert killed, "the trial process was never seen, so never killed"
    (record,) = result.trials
    assert (record.outcome.status, record.attempts) == ("succeeded", 3)

    # The trial ran on one torch thread (DUALTUNE_TORCH_THREADS); a reduction split over
    # another number of threads sums in another order (seen: loss_max 0.81819 on one thread,
    # 0.81823 on two), so the reference runs on one thread too.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        reference = core.fit(spec.trials()[0]).final
    finally:
        torch.set_num_threads(threads)
    for name, value in reference.items():
        if "/" in name and not name.startswith("time/"):
            assert record.outcome.metrics[name] == pytest.approx(value, rel=1e-6, abs=1e-6), name

    client = MlflowClient(tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name(spec.name).experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 1  # the retried trial logged into the same child run
    # A unit of one logs every epoch once, as a pack does (test_pack_sweep).
    history = client.get_metric_history(children[0].info.run_id, "val/loss_mean")
    assert sorted(m.step for m in history) == list(range(1, 31))


def test_a_diverging_trial_ends_diverged_and_the_others_finish(
    local_ray: None, tracking_uri: str, tmp_path: Path
) -> None:
    spec = small_spec(
        task={"name": "polyfit"},
        methods=["erm"],
        grid={"lr": [1e6, 1e-2]},
        train={"epochs": 4, "batch_size": 30, "optimizer": {"name": "sgd", "lr": 0.01}},
        selection={"metric": "val/loss_mean", "mode": "min"},
    )
    result = run_sweep(
        spec,
        sweep_id="diverge",
        storage_path=tmp_path / "tune",
        tracking_uri=tracking_uri,
        show_progress=False,
    )
    status = {r.outcome.params["lr"]: r.outcome.status for r in result.trials}
    assert status == {1e6: "diverged", 1e-2: "succeeded"}
    diverged = next(r for r in result.trials if r.outcome.status == "diverged")
    assert diverged.outcome.error is not None
    assert "diverged at epoch" in diverged.outcome.error
    client = MlflowClient(tracking_uri)
    assert client.get_run(diverged.mlflow_run_id or "").data.tags["dualtune.status"] == "diverged"


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'server.db'}",
            "--artifacts-destination",
            str(tmp_path / "server-artifacts"),
            "--serve-artifacts",
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    # mlflow server takes ~10 s on a quiet machine and over a minute on a loaded one.
    deadline = time.monotonic() + 180
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1):
                break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)
    yield url, proc
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_mlflow_outage_mid_sweep_every_trial_finishes_and_names_the_loss(
    local_ray: None,
    mlflow_server: tuple[str, subprocess.Popen[bytes]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, server = mlflow_server
    monkeypatch.setenv("DUALTUNE_MLFLOW_RETRY_BUDGET_S", "1")
    spec = small_spec(
        methods=["fl"],
        grid={"epsilon": [0.1, 0.3], "dual_lr": 0.1},
        train={"epochs": 20, "batch_size": 16, "optimizer": {"name": "adam", "lr": 0.01}},
        limits={"checkpoint_every_s": 0},  # the second checkpoint marks mid-sweep
    )
    storage = tmp_path / "tune"

    def stop_server_after_first_checkpoint() -> None:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if latest_checkpoint(storage) >= 1:
                os.killpg(server.pid, signal.SIGKILL)  # the server dies, mid-sweep
                server.wait()
                return
            time.sleep(0.1)

    stopper = threading.Thread(target=stop_server_after_first_checkpoint, daemon=True)
    stopper.start()
    result = run_sweep(
        spec, sweep_id="outage", storage_path=storage, tracking_uri=url, show_progress=False
    )
    stopper.join(timeout=1)
    assert server.poll() is not None, "the server was never stopped"
    assert [r.outcome.status for r in result.trials] == ["succeeded", "succeeded"]
    for record in result.trials:
        assert "not logged" in record.logging
        assert "metrics epoch 20" in record.logging


def test_a_killed_driver_started_again_finishes_without_rerunning_finished_trials(
    tmp_path: Path, tracking_uri: str
) -> None:
    spec_doc = small_spec(
        methods=["erm", "fl"],
        grid={"epsilon": [0.1, 0.2, 0.3, 0.4], "dual_lr": 0.1, "seed": [0, 1]},
        train={"epochs": 6, "batch_size": 16, "optimizer": {"name": "adam", "lr": 0.01}},
    ).model_dump(mode="json")
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec_doc))
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "DUALTUNE_NUM_CPUS": "2"}
    command = [
        sys.executable,
        "-m",
        "dualtune.worker",
        "run",
        str(spec_path),
        "--sweep-id",
        "restart",
        "--storage",
        str(tmp_path / "tune"),
        "--no-progress",
    ]
    client = MlflowClient(tracking_uri)

    def finished_children() -> dict[str, int]:
        experiment = client.get_experiment_by_name(spec_doc["name"])
        if experiment is None:
            return {}
        runs = client.search_runs([experiment.experiment_id], "tags.dualtune.trial_id != ''")
        return {
            r.data.tags["dualtune.trial_id"]: r.info.end_time or 0
            for r in runs
            if r.info.status == "FINISHED"
        }

    first = subprocess.Popen(
        command,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while len(finished_children()) < 3:
        assert first.poll() is None, "the driver ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.5)
    os.killpg(first.pid, signal.SIGKILL)  # the driver and everything it started
    first.wait()
    before = finished_children()
    assert 3 <= len(before) < 10

    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    after = finished_children()
    assert len(after) == 10
    experiment = client.get_experiment_by_name(spec_doc["name"])
    runs = client.search_runs([experiment.experiment_id], "tags.dualtune.trial_id != ''")
    assert len(runs) == 10  # one child run per trial, none created twice
    for trial_id, end_time in before.items():
        assert after[trial_id] == end_time  # finished before the kill, not run again
