"""The commands the chart runs in the service image exist and do what the chart expects of
them: the init container waits for the schema and lets the pod start once it is current, and
`dualtune serve` / `dualtune db upgrade` take the arguments the chart passes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from service.db.engine import make_engine
from service.db.migrate import upgrade
from tests.deploy.chart import containers, render_profile


def wait_for_schema_script() -> list[str]:
    deployment = render_profile("default").one("Deployment", "demo-dualtune")
    (init,) = [
        c
        for c in containers(deployment["spec"]["template"]["spec"])
        if c["name"] == "wait-for-schema"
    ]
    command: list[str] = init["command"]
    assert command[0] == "python"
    return [sys.executable, *command[1:]]


def run_with_database(
    url: str, command: list[str], timeout: float
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DUALTUNE_DATABASE_URL": url}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


def test_wait_for_schema_lets_the_pod_start_on_a_current_schema(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'dualtune.db'}"
    upgrade(make_engine(url))

    finished = run_with_database(url, wait_for_schema_script(), timeout=60)

    assert finished.returncode == 0, finished.stderr
    assert finished.stdout == ""


def test_wait_for_schema_keeps_waiting_on_an_empty_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'dualtune.db'}"

    with pytest.raises(subprocess.TimeoutExpired) as waited:
        run_with_database(url, wait_for_schema_script(), timeout=8)

    output = waited.value.stdout
    text = output.decode() if isinstance(output, bytes) else output or ""
    assert "waiting for the schema" in text
    assert "has no dualtune schema" in text


@pytest.mark.parametrize(
    ("command", "options"),
    [(["serve"], ["--host", "--workers"]), (["db", "upgrade"], [])],
    ids=["serve", "db upgrade"],
)
def test_cli_takes_the_arguments_the_chart_passes(command: list[str], options: list[str]) -> None:
    helped = subprocess.run(
        [sys.executable, "-m", "service.cli", *command, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )

    assert helped.returncode == 0, helped.stderr
    for option in options:
        assert option in helped.stdout
