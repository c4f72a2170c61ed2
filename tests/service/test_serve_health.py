"""The launcher's health is checked in the background and shown, never waited on: /healthz
carries the last answer, /metrics has `dualtune_launcher_up`, and /readyz (the database and
the schema only) stays 200 and fast with a launcher that is down, raises or hangs."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from dualtune.service.api.app import create_app
from dualtune.service.db.migrate import head_revision
from dualtune.service.launchers import FakeLauncher
from dualtune.service.settings import Settings


class CountingLauncher(FakeLauncher):
    """Counts the checks; ``hang`` holds every check until the test releases it."""

    def __init__(self, *, hang: bool = False, error: Exception | None = None) -> None:
        super().__init__()
        self.checks = 0
        self.hang = hang
        self.error = error
        self.release = threading.Event()

    def check_ready(self) -> None:
        self.checks += 1
        if self.hang:
            self.release.wait()
        if self.error is not None:
            raise self.error
        super().check_ready()


@pytest.fixture
def health_settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path,
        database_url=database_url,
        launcher="fake",
        testing=True,
        launcher_check_interval_s=3600,  # one check at start; the tests ask for the others
        launcher_check_timeout_s=0.2,
        replica_id="replica-a",
    )


@contextmanager
def serving(
    settings: Settings, launcher: FakeLauncher, engine: Engine
) -> Iterator[tuple[TestClient, FastAPI]]:
    """The app, running, once its first launcher check has ended."""
    app = create_app(settings, launcher, engine=engine, reconcile=False)
    with TestClient(app) as client:
        assert app.state.launcher_health.wait_for_checks(1, timeout_s=10)
        yield client, app


def launcher_gauge(client: TestClient) -> str:
    (line,) = [
        line
        for line in client.get("/metrics").text.splitlines()
        if line.startswith("dualtune_launcher_up ")
    ]
    return line.split()[1]


def test_a_launcher_that_is_down_shows_in_healthz_and_metrics_and_readiness_stays(
    health_settings: Settings, engine: Engine
) -> None:
    launcher = CountingLauncher()
    launcher.ready = False
    with serving(health_settings, launcher, engine) as (client, app):
        health = client.get("/healthz")
        assert health.status_code == 200
        assert health.json()["status"] == "ok"
        detail = health.json()["launcher"]
        assert detail["name"] == "fake"
        assert detail["up"] is False
        assert detail["detail"] == "the fake launcher is not ready (as the test asked)"
        assert detail["checked_at"] is not None
        assert launcher_gauge(client) == "0.0"
        assert client.get("/readyz").status_code == 200

        launcher.ready = True
        app.state.launcher_health.check()
        assert client.get("/healthz").json()["launcher"]["up"] is True
        assert client.get("/healthz").json()["launcher"]["detail"] == "ready"
        assert launcher_gauge(client) == "1.0"


def test_healthz_and_readyz_never_call_the_launcher(
    health_settings: Settings, engine: Engine
) -> None:
    launcher = CountingLauncher()
    with serving(health_settings, launcher, engine) as (client, _app):
        checks = launcher.checks
        for _ in range(5):
            assert client.get("/healthz").status_code == 200
            assert client.get("/readyz").status_code == 200
        assert launcher.checks == checks == 1


def test_a_hung_launcher_check_times_out_and_readiness_stays_fast(
    health_settings: Settings, engine: Engine
) -> None:
    launcher = CountingLauncher(hang=True)
    try:
        with serving(health_settings, launcher, engine) as (client, app):
            detail = client.get("/healthz").json()["launcher"]
            assert detail["up"] is False
            assert detail["detail"] == "check_ready did not answer within 0.2 s"
            assert launcher_gauge(client) == "0.0"

            started = time.perf_counter()
            ready = client.get("/readyz")
            assert ready.status_code == 200
            assert time.perf_counter() - started < 1.0

            # The next round waits on the hung check instead of piling up another one.
            app.state.launcher_health.check()
            assert launcher.checks == 1
            detail = client.get("/healthz").json()["launcher"]
            assert detail["detail"].startswith("check_ready has not answered for ")

            launcher.hang = False
            launcher.release.set()
            app.state.launcher_health.check()
            assert client.get("/healthz").json()["launcher"]["up"] is True
            assert launcher_gauge(client) == "1.0"
    finally:
        launcher.release.set()


def test_a_launcher_check_that_raises_is_the_launcher_down(
    health_settings: Settings, engine: Engine
) -> None:
    launcher = CountingLauncher(error=RuntimeError("the head's socket closed"))
    with serving(health_settings, launcher, engine) as (client, _app):
        detail = client.get("/healthz").json()["launcher"]
        assert detail["up"] is False
        assert detail["detail"] == "RuntimeError: the head's socket closed"
        assert client.get("/readyz").status_code == 200


def test_readyz_names_the_schema_revisions(health_settings: Settings, engine: Engine) -> None:
    with serving(health_settings, FakeLauncher(), engine) as (client, _app):
        ready = client.get("/readyz").json()
    assert ready == {
        "status": "ready",
        "schema_revision": head_revision(),
        "code_revision": head_revision(),
    }


def test_metrics_carry_the_reconciler_stray_launcher_and_event_series(
    health_settings: Settings, engine: Engine
) -> None:
    with serving(health_settings, FakeLauncher(), engine) as (client, app):
        metrics = app.state.metrics
        metrics.reconcile_errors.labels("OperationalError").inc()
        metrics.strays_stopped.inc()
        metrics.events_rejected.inc(2)
        text = client.get("/metrics").text
    assert 'dualtune_reconcile_errors_total{kind="OperationalError"} 1.0' in text
    assert "dualtune_stray_drivers_stopped_total 1.0" in text
    assert "dualtune_events_rejected_total 2.0" in text
    assert "dualtune_launcher_up 1.0" in text
    for state in ("pending", "stopped"):  # every trial state, `stopped` included
        assert f'dualtune_trials{{state="{state}"}} 0.0' in text


def test_each_process_holds_leases_under_its_own_name(
    health_settings: Settings, engine: Engine
) -> None:
    app = create_app(health_settings, FakeLauncher(), engine=engine, reconcile=False)
    owner = app.state.reconciler.owner
    assert owner.startswith("replica-a@")
    assert f":{os.getpid()}:" in owner
