"""R3: schemathesis generates requests from the service's own OpenAPI schema, valid and
invalid, with a tenant token; no response may be a 5xx."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.generation import GenerationMode

from dualtune.service.api.app import create_app
from dualtune.service.auth import new_tenant_token
from dualtune.service.db.engine import make_engine
from dualtune.service.db.migrate import upgrade
from dualtune.service.db.repository import Repository
from dualtune.service.launchers import FakeLauncher
from dualtune.service.settings import Settings

TOKEN = new_tenant_token()


@pytest.fixture(scope="module")
def fuzzed_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    data_dir: Path = tmp_path_factory.mktemp("fuzz")
    engine = make_engine(f"sqlite:///{data_dir / 'dualtune.db'}")
    upgrade(engine)
    Repository(engine).create_token("fuzz", TOKEN)
    app = create_app(
        Settings(data_dir=data_dir, launcher="fake"),
        FakeLauncher(),
        engine=engine,
        reconcile=False,
    )
    yield app
    engine.dispose()


def _operations(app: Any) -> list[Any]:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    return [result.ok() for result in schema.get_all_operations()]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_request_gets_a_server_error(fuzzed_app: Any, mode: GenerationMode) -> None:
    """Every operation, with data that fits its schema and data that breaks it."""
    server_errors: list[str] = []
    operations = _operations(fuzzed_app)
    assert len(operations) >= 12

    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
        def call(case: Any) -> None:
            response = case.call(headers={"Authorization": f"Bearer {TOKEN}"})
            if response.status_code >= 500:
                server_errors.append(
                    f"{case.method} {case.formatted_path} -> {response.status_code}: "
                    f"{response.text[:200]}"
                )

        try:
            call()
        except Unsatisfiable:
            assert mode is GenerationMode.NEGATIVE  # nothing in this operation to break
    assert server_errors == []
