"""The ``dualtune`` commands that run or talk to the service, against a real HTTP server
(uvicorn on loopback, fake launcher): messages, tables and exit codes."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from dualtune.core.states import TrialState
from dualtune.service.api.app import create_app
from dualtune.service.cli import app
from dualtune.service.db.engine import make_engine
from dualtune.service.db.migrate import head_revision
from dualtune.service.db.repository import Repository
from dualtune.service.launchers import FakeLauncher
from dualtune.service.reconciler import Reconciler
from dualtune.service.settings import Settings
from tests.ports import free_port
from tests.service.api.helpers import small_spec
from tests.service.stack import ThreadedServer

runner = CliRunner()


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DUALTUNE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("DUALTUNE_DATABASE_URL", raising=False)
    monkeypatch.delenv("DUALTUNE_TOKEN", raising=False)
    return tmp_path


@dataclass
class Served:
    launcher: FakeLauncher
    reconciler: Reconciler
    repo: Repository


@pytest.fixture
def served(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    created = runner.invoke(app, ["token", "create", "--tenant", "alice"])
    assert created.exit_code == 0, created.output
    monkeypatch.setenv("DUALTUNE_TOKEN", created.output.strip())
    engine = make_engine(f"sqlite:///{data_dir / 'dualtune.db'}")
    launcher = FakeLauncher()
    application = create_app(
        Settings(data_dir=data_dir, launcher="fake", testing=True),
        launcher,
        engine=engine,
        reconcile=False,
    )
    server = ThreadedServer(application, free_port())
    server.start()
    monkeypatch.setenv("DUALTUNE_URL", f"http://127.0.0.1:{server.port}")
    yield Served(launcher, application.state.reconciler, application.state.repo)
    server.stop()
    engine.dispose()


def _spec_file(tmp_path: Path, **overrides: object) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(small_spec(**overrides)))
    return path


def test_db_upgrade_reports_the_revision(data_dir: Path) -> None:
    first = runner.invoke(app, ["db", "upgrade"])
    again = runner.invoke(app, ["db", "upgrade"])
    assert first.exit_code == again.exit_code == 0
    assert "(was empty)" in first.output
    assert f"(was {head_revision()})" in again.output


def test_serve_refuses_an_unmigrated_database_and_says_what_to_run(data_dir: Path) -> None:
    result = runner.invoke(app, ["serve"])
    assert result.exit_code == 1
    assert "dualtune db upgrade" in result.output
    assert "Traceback" not in result.output


def test_submit_status_trials_cancel_retry_report(served: Served, tmp_path: Path) -> None:
    submitted = runner.invoke(app, ["submit", str(_spec_file(tmp_path))])
    assert submitted.exit_code == 0, submitted.output
    sweep_id = submitted.output.split()[1].rstrip(":")
    assert sweep_id.startswith("sw-")
    assert "5 trials" in submitted.output

    status = runner.invoke(app, ["status", sweep_id])
    assert "pending" in status.output
    trials = runner.invoke(app, ["trials", sweep_id])
    assert trials.exit_code == 0
    assert trials.output.count("pending") == 5
    listed = runner.invoke(app, ["list"])
    assert sweep_id in listed.output

    cancelled = runner.invoke(app, ["cancel", sweep_id])
    assert "cancelled" in cancelled.output
    retried = runner.invoke(app, ["retry", sweep_id])
    assert retried.exit_code == 0
    assert "pending" in retried.output
    report = runner.invoke(app, ["report", sweep_id])
    assert report.exit_code == 0
    assert "erm" in report.output
    assert "fl" in report.output


def test_errors_from_the_service_are_one_line_not_a_traceback(
    served: Served, tmp_path: Path
) -> None:
    missing = runner.invoke(app, ["status", "sw-000000000000"])
    assert missing.exit_code == 1
    assert "404" in missing.output
    assert "Traceback" not in missing.output
    bad = runner.invoke(app, ["submit", str(_spec_file(tmp_path, methods=["nope"]))])
    assert bad.exit_code == 2
    assert "methods.0" in bad.output


def test_no_token_and_no_service_are_explained(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    no_token = runner.invoke(app, ["status", "sw-1"])
    assert no_token.exit_code == 1
    assert "DUALTUNE_TOKEN" in no_token.output
    monkeypatch.setenv("DUALTUNE_TOKEN", "dt_whatever")
    monkeypatch.setenv("DUALTUNE_URL", f"http://127.0.0.1:{free_port()}")
    nobody = runner.invoke(app, ["submit", str(_spec_file(tmp_path))])
    assert nobody.exit_code == 1
    assert "cannot reach the dualtune service" in nobody.output
    assert "dualtune up" in nobody.output


def test_tokens_are_listed_by_prefix_and_revoked(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = runner.invoke(app, ["token", "create", "--tenant", "bob"]).output.strip()
    listed = runner.invoke(app, ["token", "list", "--tenant", "bob"])
    assert token[:12] in listed.output
    assert token not in listed.output
    monkeypatch.setenv("DUALTUNE_TOKEN", token)
    assert runner.invoke(app, ["list"]).exit_code == 0
    revoked = runner.invoke(app, ["token", "revoke", token[:12]])
    assert revoked.exit_code == 0, revoked.output
    assert runner.invoke(app, ["token", "revoke", token[:12]]).exit_code == 1  # gone
    assert "has no tokens" in runner.invoke(app, ["token", "list", "--tenant", "bob"]).output


def test_ensure_local_token_writes_a_private_file_once(data_dir: Path) -> None:
    from dualtune.service.cli.server_commands import ensure_local_token
    from dualtune.service.db.migrate import upgrade
    from dualtune.service.db.repository import Repository

    engine = make_engine(f"sqlite:///{data_dir / 'dualtune.db'}")
    upgrade(engine)
    repo = Repository(engine)
    token = ensure_local_token(repo, data_dir)
    assert (data_dir / "token").stat().st_mode & 0o777 == 0o600
    assert ensure_local_token(repo, data_dir) == token  # kept across restarts
    assert repo.tenant_for_token(token).name == "local"
    engine.dispose()


def _fail_every_trial(served: Served, stop: threading.Event) -> None:
    """The driver's part, played by the test: every trial it runs fails; then it exits."""
    while not stop.is_set() and not served.launcher.drivers:
        served.reconciler.step()
        time.sleep(0.05)
    for driver in list(served.launcher.drivers.values()):
        request = driver.request
        view = served.repo.worker_view(request.sweep_id, request.worker_token)
        from dualtune.service.records import TrialUpdate

        served.repo.apply_events(
            request.sweep_id,
            request.worker_token,
            generation=view.sweep.generation,
            updates=[
                TrialUpdate(t, TrialState.FAILED, 1, {}, None, "ValueError: boom")
                for t in view.run_trial_ids
            ],
        )
        served.launcher.exit(request.sweep_id)
    served.reconciler.step()


def test_submit_wait_exits_non_zero_when_no_trial_succeeded(
    served: Served, tmp_path: Path
) -> None:
    stop = threading.Event()
    driver = threading.Thread(target=_fail_every_trial, args=(served, stop), daemon=True)
    driver.start()
    try:
        result = runner.invoke(app, ["submit", "--wait", str(_spec_file(tmp_path))])
    finally:
        stop.set()
        driver.join(timeout=30)
    assert result.exit_code == 1, result.output
    assert "failed" in result.output
    assert "no trial succeeded (5 failed)" in result.output


def test_token_revoke_matches_its_prefix_literally(served: Served) -> None:
    """``_`` and ``%`` are LIKE wildcards; a token prefix must not be read as a pattern."""
    served.repo.create_token("carol", "dt_literal_prefix_one")
    served.repo.create_token("carol", "dtXliteral_prefix_two")
    revoked = runner.invoke(app, ["token", "revoke", "dt_lit"])
    assert revoked.exit_code == 0, revoked.output
    prefixes = [p for p, _ in served.repo.list_tokens("carol")]
    assert prefixes == ["dtXliteral_p"]
    assert runner.invoke(app, ["token", "revoke", "dt%lit"]).exit_code == 1  # matches nothing
