"""The driver's link to a real service (uvicorn on loopback): it fetches its sweep, and its
events wait out a service outage and arrive once the service is back."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import Engine

from dualtune.core.spec import load_spec
from dualtune.service.api.app import create_app
from dualtune.service.db.engine import make_engine
from dualtune.service.db.migrate import upgrade
from dualtune.service.db.repository import Repository
from dualtune.service.launchers import FakeLauncher
from dualtune.service.records import NewTrial, Tenant
from dualtune.service.settings import Settings
from dualtune.worker.events import TrialEvent
from dualtune.worker.service_link import ServiceEventSink, ServiceLink, ServiceRejectedError
from tests.ports import free_port
from tests.service.stack import ThreadedServer as Server


def _launched_sweep(
    tmp_path: Path, sweep_id: str, worker_token: str, trials: list[NewTrial], spec: dict[str, Any]
) -> tuple[Repository, Tenant, Engine, FastAPI]:
    """A sweep stored and launched (its worker token minted), and the service app over it."""
    engine = make_engine(f"sqlite:///{tmp_path / 'dualtune.db'}")
    upgrade(engine)
    repo = Repository(engine)
    tenant = repo.create_token("t", "dt_" + sweep_id)
    repo.create_sweep(tenant, sweep_id=sweep_id, name=sweep_id, spec=spec, trials=trials)
    repo.claim("r", lease_s=60)
    repo.begin_launch(sweep_id, "r", worker_token, launch=1, submission_id=f"{sweep_id}-1")
    app = create_app(
        Settings(data_dir=tmp_path, launcher="fake", testing=True),
        FakeLauncher(),
        engine=engine,
        reconcile=False,
    )
    return repo, tenant, engine, app


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[Repository, str, str]]:
    spec = {
        "name": "link",
        "task": {"name": "two_moons"},
        "constraint": {"kind": "sample_loss"},
        "methods": ["erm"],
        "grid": {"seed": [0, 1]},
    }
    loaded = load_spec(spec)
    trials = [NewTrial(t.trial_id, t.index, t.method, dict(t.params)) for t in loaded.trials()]
    repo, _, engine, app = _launched_sweep(
        tmp_path, "sw-link000001", "dtw_link", trials, loaded.model_dump(mode="json")
    )
    port = free_port()
    server = Server(app, port)
    server.start()
    yield repo, f"http://127.0.0.1:{port}", "dtw_link"
    server.stop()
    engine.dispose()
    del app


def test_the_driver_fetches_its_sweep(service: tuple[Repository, str, str]) -> None:
    _, url, token = service
    link = ServiceLink(url, "sw-link000001", token)
    sweep = link.fetch()
    link.close()
    assert sweep.spec["name"] == "link"  # as stored: the driver validates it (preflight)
    assert sweep.generation == 0
    assert len(sweep.run_trial_ids) == 2
    assert sweep.experiment_name == "sw-link000001"


def test_a_driver_whose_check_refuses_the_sweep_fails_it_with_the_message(
    service: tuple[Repository, str, str],
) -> None:
    repo, url, token = service
    link = ServiceLink(url, "sw-link000001", token)
    assert link.fail(0, "task 'x' breaks the task contract: " + "x" * 30_000)
    link.close()
    tenant = repo.tenant_for_token("dt_sw-link000001")
    sweep, trials = repo.all_trials(tenant, "sw-link000001")
    assert sweep.status == "failed"
    assert sweep.error is not None
    assert sweep.error.startswith("task 'x' breaks the task contract: xxx")
    assert sweep.error.endswith("... (cut)")  # kept under the service's limit
    assert {t.status for t in trials} == {"failed"}


def test_a_revoked_token_is_rejected_not_retried(service: tuple[Repository, str, str]) -> None:
    _, url, _ = service
    link = ServiceLink(url, "sw-link000001", "dtw_wrong")
    with pytest.raises(ServiceRejectedError):
        link.fetch(budget_s=5)
    link.close()


def test_events_sent_during_an_outage_arrive_when_the_service_is_back(
    tmp_path: Path,
) -> None:
    repo, tenant, engine, app = _launched_sweep(
        tmp_path,
        "sw-outage00001",
        "dtw_outage",
        [NewTrial("a", 0, "erm", {}), NewTrial("b", 1, "erm", {})],
        {},
    )
    server = Server(app, free_port())

    link = ServiceLink(f"http://127.0.0.1:{server.port}", "sw-outage00001", "dtw_outage")
    sink = ServiceEventSink(link, 0)
    sink.emit(TrialEvent("sw-outage00001", "a", "running"))
    sink.emit(TrialEvent("sw-outage00001", "a", "succeeded", metrics={"train/loss_mean": 0.1}))
    sink.tracking("3", "parent-run")
    time.sleep(1.5)  # the service is down: the first delivery fails and backs off
    server.start()
    sink.emit(TrialEvent("sw-outage00001", "b", "diverged", error="loss is nan"))
    assert sink.close(timeout_s=60)
    link.close()
    server.stop()

    sweep, trials = repo.all_trials(tenant, "sw-outage00001")
    assert {t.trial_id: t.status for t in trials} == {"a": "succeeded", "b": "diverged"}
    assert trials[0].metrics == {"train/loss_mean": 0.1}
    assert trials[1].error == "loss is nan"
    assert sweep.mlflow_parent_run_id == "parent-run"
    engine.dispose()
