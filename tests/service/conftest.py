"""Fixtures for the service: the same tests run on SQLite (WAL) and on Postgres.

Postgres tests use a database of their own per xdist worker (created on the server at
127.0.0.1:5432, dropped at the end), emptied between tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from dualtune.service.api.app import create_app
from dualtune.service.auth import new_tenant_token
from dualtune.service.db.engine import make_engine
from dualtune.service.db.migrate import upgrade
from dualtune.service.db.repository import Repository
from dualtune.service.launchers import FakeLauncher
from dualtune.service.records import Tenant
from dualtune.service.settings import Settings
from tests.scratch_db import scratch_postgres


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    with scratch_postgres("dualtune_test") as url:
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'dualtune.db'}"
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        yield url
        return
    url = request.getfixturevalue("postgres_url")
    yield url
    engine = make_engine(url)
    with engine.begin() as c:
        c.execute(
            text(
                "TRUNCATE idempotency_keys, trials, sweeps, tokens, tenants "
                "RESTART IDENTITY CASCADE"
            )
        )
    engine.dispose()


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def repo(engine: Engine) -> Repository:
    return Repository(engine)


@pytest.fixture
def launcher() -> FakeLauncher:
    return FakeLauncher()


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path,
        database_url=database_url,
        launcher="fake",
        testing=True,
        mlflow_ui_url="http://mlflow.test",
        service_url="http://service.test",
        replica_id="replica-a",
    )


@pytest.fixture
def client(settings: Settings, launcher: FakeLauncher, engine: Engine) -> Iterator[TestClient]:
    app = create_app(settings, launcher, engine=engine, reconcile=False)
    with TestClient(app) as c:
        yield c


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def tenant_token(repo: Repository) -> str:
    token = new_tenant_token()
    repo.create_token("alice", token)
    return token


@pytest.fixture
def other_token(repo: Repository) -> str:
    token = new_tenant_token()
    repo.create_token("bob", token)
    return token


@pytest.fixture
def alice(repo: Repository, tenant_token: str) -> Tenant:
    return repo.tenant_for_token(tenant_token)
