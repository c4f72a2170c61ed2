"""docker/compose.yaml is a valid Compose file (against the Compose Specification's JSON
schema, which the check-jsonschema wheel vendors) and a consistent stack: the service reaches
the containers it names, with settings the service really reads."""

from __future__ import annotations

import fnmatch
import json
from importlib import resources
from typing import Any, cast
from urllib.parse import urlsplit

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml

from dualtune.service.settings import Settings
from tests.deploy.chart import ROOT

COMPOSE = ROOT / "docker" / "compose.yaml"
SPEC = json.loads(
    resources.files("check_jsonschema")
    .joinpath("builtin_schemas/vendor/compose-spec.json")
    .read_text()
)


def compose() -> dict[str, Any]:
    return cast(dict[str, Any], yaml.safe_load(COMPOSE.read_text()))


def spec_errors(document: dict[str, Any]) -> list[str]:
    validator = jsonschema.validators.validator_for(SPEC)(SPEC)
    return [error.message for error in validator.iter_errors(document)]


def test_compose_file_follows_the_compose_specification() -> None:
    assert spec_errors(compose()) == []


@pytest.mark.parametrize(
    ("service", "key", "value"),
    [("service", "enviroment", {}), ("postgres", "restart", 3), ("mlflow", "ports", "5000")],
    ids=["misspelt key", "restart as a number", "ports as a string"],
)
def test_compose_specification_catches_mistakes(service: str, key: str, value: Any) -> None:
    document = compose()
    document["services"][service][key] = value

    assert spec_errors(document) != []


def test_every_build_uses_a_dockerfile_of_the_repository() -> None:
    for name, service in compose()["services"].items():
        if build := service.get("build"):
            context = (COMPOSE.parent / build["context"]).resolve()
            assert context == ROOT, name
            assert (context / build["dockerfile"]).is_file(), name


def test_the_service_talks_to_the_stack_with_real_settings() -> None:
    services = compose()["services"]
    env = services["service"]["environment"]

    for name in env:
        assert name.removeprefix("DUALTUNE_").lower() in Settings.model_fields, name
    assert env["DUALTUNE_LAUNCHER"] == "ray"
    # `serve` listens on 127.0.0.1 by default; the other containers reach it by its name.
    command = services["service"]["command"]
    assert command[command.index("--host") + 1] == "0.0.0.0"
    for setting in [
        "DUALTUNE_RAY_ADDRESS",
        "DUALTUNE_MLFLOW_TRACKING_URI",
        "DUALTUNE_SERVICE_URL",
    ]:
        assert urlsplit(env[setting]).hostname in services, setting
    assert "@postgres:5432/" in env["DUALTUNE_DATABASE_URL"]
    # The token is the same variable everywhere, and compose refuses to start without it.
    assert env["DUALTUNE_RAY_AUTH_TOKEN"].startswith("${RAY_AUTH_TOKEN:?")
    for ray in ["ray-head", "ray-worker", "ray-gpu-worker"]:
        ray_env = services[ray]["environment"]
        assert ray_env["RAY_AUTH_MODE"] == "token"
        assert ray_env["RAY_AUTH_TOKEN"] == env["DUALTUNE_RAY_AUTH_TOKEN"]


def test_mlflow_accepts_the_hosts_that_call_it() -> None:
    services = compose()["services"]
    command = services["mlflow"]["command"]
    (allowed,) = [
        a.split("=", 1)[1].split(",") for a in command if a.startswith("--allowed-hosts")
    ]
    env = services["service"]["environment"]

    assert "--serve-artifacts" in command
    assert any(a.startswith("--backend-store-uri=postgresql://") for a in command)
    for url in [env["DUALTUNE_MLFLOW_TRACKING_URI"], env["DUALTUNE_MLFLOW_UI_URL"]]:
        host = urlsplit(url).netloc
        assert any(fnmatch.fnmatch(host, pattern) for pattern in allowed), host


def test_migrations_finish_before_the_service_starts() -> None:
    services = compose()["services"]

    assert services["migrate"]["command"] == ["dualtune", "db", "upgrade"]
    assert services["service"]["depends_on"]["migrate"] == {
        "condition": "service_completed_successfully"
    }
    assert services["ray-gpu-worker"]["profiles"] == ["gpu"]
