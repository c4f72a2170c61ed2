"""A sweep on a Ray cluster of three nodes (head and two workers, each in its own network
namespace, token auth on) that loses a worker node mid-sweep.

The service runs with the ``ray`` launcher in the root namespace and submits the driver
through the head's Jobs API; the trials spread over both workers (the child runs' node tag
says where); when a trial on worker 1 is half-way, every process in worker 1's namespace is
killed. Ray declares the node dead, Tune retries its trial on worker 2 from the last
checkpoint in the shared storage, and the sweep ends with every trial once: once in the
service's DB, once as a finished MLflow child run, every epoch logged once.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from dualtune.service.api.app import create_app
from dualtune.service.auth import new_tenant_token
from dualtune.service.db.engine import make_engine
from dualtune.service.db.migrate import upgrade
from dualtune.service.db.repository import Repository
from dualtune.service.settings import Settings
from dualtune.worker.tracking import NODE_TAG
from tests.cluster.netns import Cluster
from tests.ports import free_port

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.xdist_group("ray")]

EPOCHS = 30
EPSILONS = (0.1, 0.2, 0.3)
SPEC: dict[str, Any] = {
    "name": "multi-node",
    "task": {"name": "two_moons"},
    "constraint": {"kind": "sample_loss"},
    "methods": ["fl"],
    "grid": {"epsilon": list(EPSILONS), "dual_lr": 0.05},
    # Small batches: about a second an epoch here, so the kill lands mid-trial.
    "train": {"epochs": EPOCHS, "batch_size": 16},
    "pack": "off",  # three Tune trials, which Tune places one by one
    "limits": {"checkpoint_every_s": 0, "max_failures": 2},
    # Every evaluation straight to MLflow: the test watches the epochs as they come.
    "runtime": {"env_vars": {"DUALTUNE_MLFLOW_FLUSH_S": "0"}},
}


class _Service:
    """The service app on the bridge's address, where the head's namespace reaches it."""

    def __init__(self, app: object, host: str, port: int) -> None:
        config = uvicorn.Config(app, host=host, port=port, log_level="warning")  # type: ignore[arg-type]
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> _Service:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def service(cluster: Cluster, tmp_path: Path) -> Iterator[tuple[httpx.Client, Settings]]:
    database = f"sqlite:///{tmp_path / 'dualtune.db'}"
    engine = make_engine(database)
    upgrade(engine)
    token = new_tenant_token()
    Repository(engine).create_token("cluster", token)
    port = free_port()
    settings = Settings(
        data_dir=tmp_path,
        database_url=database,
        launcher="ray",
        ray_address=cluster.dashboard,
        ray_auth_token=cluster.token,
        driver_data_dir=str(cluster.shared / "drivers"),
        mlflow_tracking_uri=f"sqlite:///{cluster.shared / 'mlflow.db'}",
        service_url=f"http://{cluster.net.gateway}:{port}",
        reconcile_interval_s=0.5,
    )
    with (
        _Service(create_app(settings, engine=engine), cluster.net.gateway, port),
        httpx.Client(
            base_url=f"http://{cluster.net.gateway}:{port}/api/v1",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        ) as api,
    ):
        yield api, settings
    engine.dispose()


def _trial_runs(mlflow: MlflowClient, sweep_id: str) -> list[Run]:
    experiment = mlflow.get_experiment_by_name(SPEC["name"])
    if experiment is None:
        return []
    return list(
        mlflow.search_runs(
            [experiment.experiment_id],
            filter_string=(
                f"tags.`dualtune.sweep_id` = '{sweep_id}' and tags.`dualtune.role` = 'trial'"
            ),
        )
    )


def _sweep(api: httpx.Client, sweep_id: str) -> dict[str, Any]:
    answer: dict[str, Any] = api.get(f"/sweeps/{sweep_id}").json()
    return answer


def _kill_mid_trial(
    api: httpx.Client, mlflow: MlflowClient, sweep_id: str, cluster: Cluster
) -> tuple[dict[str, int], dict[str, set[str]]]:
    """Wait until a trial on worker 1 is between epochs 3 and EPOCHS − 10, then kill worker
    1's namespace. Returns the epoch each trial running there had reached in MLflow, and
    every node each trial was seen on."""
    victim = cluster.workers[0]
    seen: dict[str, set[str]] = {}
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        runs = _trial_runs(mlflow, sweep_id)
        for run in runs:
            if NODE_TAG in run.data.tags:
                seen.setdefault(run.data.tags["dualtune.trial_id"], set()).add(
                    run.data.tags[NODE_TAG]
                )
        on_victim = {
            run.data.tags["dualtune.trial_id"]: int(run.data.metrics.get("epoch", 0))
            for run in runs
            if run.info.status == "RUNNING" and run.data.tags.get(NODE_TAG) == victim.ip
        }
        if any(3 <= epoch <= EPOCHS - 10 for epoch in on_victim.values()):
            assert victim.kill(), "worker 1's namespace had no processes to kill"
            return on_victim, seen
        sweep = _sweep(api, sweep_id)
        assert sweep["status"] in ("pending", "launching", "running"), sweep
        time.sleep(0.3)
    raise AssertionError(f"no trial ran mid-way on worker 1 ({victim.ip}) in time: {seen}")


def _tune_rows(storage: Path, trial_id: str) -> list[dict[str, Any]]:
    """What Tune recorded of ``trial_id``'s reports (``result.json`` in its trial folder on
    the shared storage), in order: each row carries the node it came from and the epoch."""
    rows: list[dict[str, Any]] = []
    for result in storage.rglob("result.json"):
        lines = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        rows += [r for r in lines if r.get("config", {}).get("trial_id") == trial_id]
    return sorted(rows, key=lambda r: r["timestamp"])


def test_a_sweep_loses_a_worker_node_and_nothing_is_lost_or_run_twice(
    cluster: Cluster, service: tuple[httpx.Client, Settings]
) -> None:
    api, settings = service
    # Token auth is on: the Jobs API the service submits to refuses a call without it.
    refused = httpx.get(f"{cluster.dashboard}/api/jobs/", timeout=10)
    assert refused.status_code in (401, 403), refused.text
    mlflow = MlflowClient(settings.resolved_tracking_uri())
    started = time.monotonic()
    created = api.post("/sweeps", json={"spec": SPEC})
    assert created.status_code == 201, created.text
    sweep_id = created.json()["id"]

    killed, seen = _kill_mid_trial(api, mlflow, sweep_id, cluster)
    killed_at = time.monotonic() - started
    deadline = time.monotonic() + 420
    while (sweep := _sweep(api, sweep_id))["status"] not in ("succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline, f"the sweep did not end after the kill: {sweep}"
        time.sleep(1)
    victim, survivor = cluster.workers
    print(  # the evidence, for whoever reads the test's output
        f"\nkilled {victim.name} ({victim.ip}) at {killed_at:.0f} s with {killed} running "
        f"there; nodes seen per trial before the kill: {seen}; sweep ended "
        f"{sweep['status']} after {time.monotonic() - started:.0f} s"
    )
    assert sweep["status"] == "succeeded", sweep["error"]
    assert sweep["trial_counts"] == {"succeeded": len(EPSILONS)}

    # Once in the DB.
    trials = api.get(f"/sweeps/{sweep_id}/trials", params={"limit": 100}).json()["items"]
    ids = [t["trial_id"] for t in trials]
    assert len(ids) == len(set(ids)) == len(EPSILONS)
    assert {t["status"] for t in trials} == {"succeeded"}

    # Once as a finished child run, every epoch logged once.
    runs = _trial_runs(mlflow, sweep_id)
    assert sorted(r.data.tags["dualtune.trial_id"] for r in runs) == sorted(ids)
    assert {r.info.status for r in runs} == {"FINISHED"}
    for run in runs:
        steps = [m.step for m in mlflow.get_metric_history(run.info.run_id, "epoch")]
        assert sorted(steps) == list(range(1, EPOCHS + 1)), (run.data.tags, steps)
        first = mlflow.get_metric_history(run.info.run_id, "train/loss_mean")
        assert [m.step for m in first].count(1) == 1

    # Both workers ran trials (the node tags), and the head none.
    nodes = {ip for found in seen.values() for ip in found} | {r.data.tags[NODE_TAG] for r in runs}
    assert nodes == {victim.ip, survivor.ip}, nodes

    # The killed node's trials were retried on the other node, resuming from their last
    # checkpoint: Tune's record of their reports goes on where the lost node's ended, not
    # from epoch 1. Every evaluation reports a checkpoint (checkpoint_every_s: 0), and Tune
    # may hand back the one before the last evaluation it recorded (the kill fell between
    # its recording the result and taking the checkpoint): that evaluation is trained
    # again, and not logged again (the epoch counts above).
    by_id = {r.data.tags["dualtune.trial_id"]: r for r in runs}
    storage = Path(settings.driver_data_dir or "") / "tune"
    attempts = {t["trial_id"]: t["attempts"] for t in trials}
    print(f"attempts per trial: {attempts}")
    assert all(attempts[t] == 1 for t in attempts if t not in killed), attempts  # none re-run
    for trial_id in killed:
        assert by_id[trial_id].data.tags[NODE_TAG] == survivor.ip
        assert attempts[trial_id] >= 2, attempts
        rows = _tune_rows(storage, trial_id)
        lost = [r["epoch"] for r in rows if r["node_ip"] == victim.ip and "epoch" in r]
        resumed = [r["epoch"] for r in rows if r["node_ip"] == survivor.ip and "epoch" in r]
        print(f"{trial_id}: epochs reported on {victim.ip}: {lost}; on {survivor.ip}: {resumed}")
        assert lost, rows
        assert resumed, rows
        assert resumed[0] > 1, (lost, resumed)  # from a checkpoint, not from scratch
        assert lost[-1] <= resumed[0] <= lost[-1] + 1, (lost, resumed)  # from the latest
