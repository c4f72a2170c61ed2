"""Fixtures of the plugin tests: one torch thread (as trials run), and the service's app in
this process on SQLite with the fake launcher, with a tenant's token."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from dualtune.service.api.app import create_app
from dualtune.service.auth import new_tenant_token
from dualtune.service.db.engine import make_engine
from dualtune.service.db.migrate import upgrade
from dualtune.service.db.repository import Repository
from dualtune.service.launchers import FakeLauncher
from dualtune.service.settings import Settings


@pytest.fixture
def one_thread() -> Iterator[None]:
    # Trials run on one torch thread (DUALTUNE_TORCH_THREADS); a reduction over another
    # number of threads sums in another order.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[TestClient]:
    """A client of the service's app, authenticated as a tenant."""
    url = f"sqlite:///{tmp_path / 'dualtune.db'}"
    engine = make_engine(url)
    upgrade(engine)
    token = new_tenant_token()
    Repository(engine).create_token("alice", token)
    settings = Settings(
        data_dir=tmp_path,
        database_url=url,
        launcher="fake",
        testing=True,
        mlflow_ui_url="http://mlflow.test",
        service_url="http://service.test",
        replica_id="replica-a",
    )
    app = create_app(settings, FakeLauncher(), engine=engine, reconcile=False)
    with TestClient(app, headers={"Authorization": f"Bearer {token}"}) as client:
        yield client
    engine.dispose()
