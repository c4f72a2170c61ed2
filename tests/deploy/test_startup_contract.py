"""The commands the chart runs in the service image exist and do what the chart expects of
them. With an external database the init container waits for the schema (the hook Job
migrates) and lets the pod start once this code runs on it (current, or one revision ahead:
a `helm rollback` after an upgrade); with the bundled Postgres the init container waits for
the database, then migrates it under an advisory lock, one pod at a time (a no-op on a
schema one revision ahead). `dualtune serve` / `dualtune db upgrade` take the arguments the
chart passes. The scripts run outside the repository, as in the image: only the installed
`dualtune` package is importable."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from dualtune.service.db.engine import make_engine
from dualtune.service.db.migrate import (
    check_schema,
    current_revision,
    head_revision,
    known_revisions,
    upgrade,
)
from dualtune.service.db.migrations.lineage import LINEAGE
from tests.deploy.chart import containers, render_profile
from tests.scratch_db import scratch_postgres


def init_script(profile: str, name: str) -> list[str]:
    deployment = render_profile(profile).one("Deployment", "demo-dualtune")
    (init,) = [c for c in containers(deployment["spec"]["template"]["spec"]) if c["name"] == name]
    command: list[str] = init["command"]
    assert command[0] == "python"
    return [sys.executable, *command[1:]]


def wait_for_schema_script() -> list[str]:
    return init_script("external-postgres-values", "wait-for-schema")


def migrate_script() -> list[str]:
    return init_script("default", "migrate")


def database_env(url: str) -> dict[str, str]:
    # The image has `dualtune` on PATH; here it is next to this interpreter.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, "PATH": path, "DUALTUNE_DATABASE_URL": url}


def run_with_database(
    url: str, command: list[str], timeout: float
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        env=database_env(url),
        cwd=tempfile.gettempdir(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_with_database(url: str, command: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        command,
        env=database_env(url),
        cwd=tempfile.gettempdir(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.fixture
def empty_postgres() -> Iterator[str]:
    with scratch_postgres("dualtune_deploy") as url:
        yield url


def test_wait_for_schema_lets_the_pod_start_on_a_current_schema(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'dualtune.db'}"
    upgrade(make_engine(url))

    finished = run_with_database(url, wait_for_schema_script(), timeout=60)

    assert finished.returncode == 0, finished.stderr
    assert finished.stdout == ""


def as_if_the_next_release_migrated(url: str) -> None:
    """What the next release's migration leaves: a revision this code does not know, whose
    recorded parent is this code's head."""
    engine = make_engine(url)
    upgrade(engine)
    with engine.begin() as c:
        c.execute(LINEAGE.insert().values(revision="next1", down_revision=head_revision()))
        c.execute(text("UPDATE alembic_version SET version_num = 'next1'"))
    engine.dispose()


def test_wait_for_schema_lets_a_rolled_back_pod_start_on_the_next_release_s_schema(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'dualtune.db'}"
    as_if_the_next_release_migrated(url)

    finished = run_with_database(url, wait_for_schema_script(), timeout=60)

    assert finished.returncode == 0, finished.stdout + finished.stderr


def test_wait_for_schema_keeps_waiting_on_a_schema_behind_the_code(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'dualtune.db'}"
    previous = known_revisions()[1]
    engine = make_engine(url)
    upgrade(engine, previous)
    engine.dispose()

    with pytest.raises(subprocess.TimeoutExpired) as waited:
        run_with_database(url, wait_for_schema_script(), timeout=8)

    output = waited.value.stdout
    text_ = output.decode() if isinstance(output, bytes) else output or ""
    assert f"is at revision {previous}; this dualtune needs revision {head_revision()}" in text_


def test_migrate_of_a_rolled_back_pod_passes_on_the_next_release_s_schema(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'dualtune.db'}"
    as_if_the_next_release_migrated(url)

    finished = run_with_database(url, migrate_script(), timeout=120)

    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert "nothing to do" in finished.stdout
    engine = make_engine(url)
    assert current_revision(engine) == "next1"
    engine.dispose()


def test_wait_for_schema_keeps_waiting_on_an_empty_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'dualtune.db'}"

    with pytest.raises(subprocess.TimeoutExpired) as waited:
        run_with_database(url, wait_for_schema_script(), timeout=8)

    output = waited.value.stdout
    text = output.decode() if isinstance(output, bytes) else output or ""
    assert "waiting for the schema" in text
    assert "has no dualtune schema" in text


def test_migrate_brings_an_empty_database_to_the_schema_and_is_idempotent(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'dualtune.db'}"

    first = run_with_database(url, migrate_script(), timeout=120)
    second = run_with_database(url, migrate_script(), timeout=120)

    assert first.returncode == 0, first.stderr
    assert "(was empty)" in first.stdout
    assert second.returncode == 0, second.stderr
    assert "(was empty)" not in second.stdout
    check_schema(make_engine(url))


def test_migrate_waits_for_the_database_to_accept_connections() -> None:
    url = "postgresql://dualtune:secret@127.0.0.1:1/dualtune"  # nothing listens on port 1

    with pytest.raises(subprocess.TimeoutExpired) as waited:
        run_with_database(url, migrate_script(), timeout=8)

    output = waited.value.stdout
    text_ = output.decode() if isinstance(output, bytes) else output or ""
    assert "waiting for the database" in text_


@pytest.mark.postgres
def test_migrate_waits_for_the_advisory_lock_of_another_pod(empty_postgres: str) -> None:
    (key,) = re.findall(r"pg_advisory_lock\((\d+)\)", migrate_script()[-1])
    engine = make_engine(empty_postgres)
    try:
        with engine.connect() as other_pod:
            other_pod.execute(text(f"SELECT pg_advisory_lock({key})"))
            other_pod.commit()
            migrate = start_with_database(empty_postgres, migrate_script())
            try:
                time.sleep(6)
                assert migrate.poll() is None, migrate.communicate()[0]
                assert current_revision(engine) is None
            finally:
                other_pod.execute(text(f"SELECT pg_advisory_unlock({key})"))
                other_pod.commit()
            output, _ = migrate.communicate(timeout=120)
        assert migrate.returncode == 0, output
        check_schema(engine)
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_replicas_starting_together_all_migrate_cleanly(empty_postgres: str) -> None:
    pods = [start_with_database(empty_postgres, migrate_script()) for _ in range(3)]
    outputs = [pod.communicate(timeout=180)[0] for pod in pods]

    assert [pod.returncode for pod in pods] == [0, 0, 0], outputs
    assert sum("(was empty)" in output for output in outputs) == 1, outputs
    engine = make_engine(empty_postgres)
    check_schema(engine)
    engine.dispose()


@pytest.mark.parametrize(
    ("command", "options"),
    [
        (["serve"], ["--host", "--workers"]),
        (["db", "upgrade"], []),
        (["db", "downgrade"], ["REVISION"]),
    ],
    ids=["serve", "db upgrade", "db downgrade"],
)
def test_cli_takes_the_arguments_the_chart_passes(command: list[str], options: list[str]) -> None:
    helped = subprocess.run(
        [sys.executable, "-m", "dualtune.service.cli", *command, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )

    assert helped.returncode == 0, helped.stderr
    for option in options:
        assert option in helped.stdout
