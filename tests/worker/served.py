"""A real service for the driver's tests: the app on SQLite, served over loopback HTTP by
uvicorn in a thread, with the fake launcher. Its reconciler is stepped by the test: a
"launch" mints a worker token that the test (or a driver process it starts) drives with."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from dualtune.service.api.app import create_app
from dualtune.service.db.engine import make_engine
from dualtune.service.db.migrate import upgrade
from dualtune.service.db.repository import Repository
from dualtune.service.launchers import FakeLauncher
from dualtune.service.reconciler import Reconciler
from dualtune.service.records import Sweep, Tenant, Trial
from dualtune.service.settings import Settings
from tests.ports import free_port
from tests.service.stack import ThreadedServer


@dataclass
class Served:
    url: str
    app: FastAPI
    repo: Repository
    launcher: FakeLauncher
    tenant: Tenant
    tenant_token: str
    server: ThreadedServer
    """Stop and start it again (same port) for an outage."""

    @property
    def reconciler(self) -> Reconciler:
        reconciler: Reconciler = self.app.state.reconciler
        return reconciler

    def submit(self, spec: dict[str, Any]) -> str:
        response = httpx.post(
            f"{self.url}/api/v1/sweeps",
            json={"spec": spec},
            headers={"Authorization": f"Bearer {self.tenant_token}"},
            timeout=30,
        )
        assert response.status_code == 201, response.text
        sweep_id: str = response.json()["id"]
        return sweep_id

    def launch(self, sweep_id: str) -> str:
        """One reconcile round launches the sweep (the fake launcher records the request);
        the worker token its driver would get."""
        self.reconciler.step()
        (driver,) = self.launcher.alive(sweep_id)
        return driver.request.worker_token

    def sweep(self, sweep_id: str) -> tuple[Sweep, dict[str, Trial]]:
        sweep, trials = self.repo.all_trials(self.tenant, sweep_id)
        return sweep, {t.trial_id: t for t in trials}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    engine = make_engine(f"sqlite:///{tmp_path / 'dualtune.db'}")
    upgrade(engine)
    repo = Repository(engine)
    tenant_token = "dt_worker_tests"
    tenant = repo.create_token("tenant", tenant_token)
    launcher = FakeLauncher()
    port = free_port()
    app = create_app(
        Settings(
            data_dir=tmp_path,
            launcher="fake",
            testing=True,
            service_url=f"http://127.0.0.1:{port}",
        ),
        launcher,
        engine=engine,
        reconcile=False,
    )
    server = ThreadedServer(app, port)
    server.start()
    yield Served(f"http://127.0.0.1:{port}", app, repo, launcher, tenant, tenant_token, server)
    if server.thread is not None and server.thread.is_alive():
        server.stop()
    engine.dispose()


def moons_spec(name: str, seeds: int, **overrides: Any) -> dict[str, Any]:
    """ERM on two moons, one trial per seed."""
    spec: dict[str, Any] = {
        "name": name,
        "task": {"name": "two_moons", "params": {"n_train": 128, "n_val": 64}},
        "constraint": {"kind": "sample_loss"},
        "methods": ["erm"],
        "grid": {"seed": list(range(seeds))},
        "train": {"epochs": 2, "batch_size": 64},
    }
    spec.update(overrides)
    return spec
