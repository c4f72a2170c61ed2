"""`dualtune serve` listens on 127.0.0.1 unless `--host` says otherwise, and refuses the fake
launcher (which runs no driver) outside tests, saying so."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from dualtune.service.cli import app as cli
from dualtune.service.db.engine import make_engine
from dualtune.service.db.migrate import upgrade
from dualtune.service.settings import Settings
from tests.ports import free_port


def other_local_address() -> str | None:
    """An IPv4 address of this machine off the loopback, if it has one."""
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family == socket.AF_INET and not address.address.startswith("127."):
                return str(address.address)
    return None


@contextmanager
def serving(tmp_path: Path, *args: str) -> Iterator[tuple[int, set[str]]]:
    """`dualtune serve ARGS` on a fresh database; yields its port and the addresses it
    listens on."""
    url = f"sqlite:///{tmp_path / 'dualtune.db'}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DUALTUNE_")},
        "DUALTUNE_DATABASE_URL": url,
        "DUALTUNE_DATA_DIR": str(tmp_path),
        "DUALTUNE_LAUNCHER": "fake",
        "DUALTUNE_TESTING": "1",
        "DUALTUNE_PORT": str(port),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "dualtune.service.cli", "serve", *args],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        listening: set[str] = set()
        deadline = time.monotonic() + 60
        # A process starting up: its sockets show in the process table once it binds.
        while not listening and process.poll() is None and time.monotonic() < deadline:
            listening = {
                c.laddr.ip
                for c in psutil.Process(process.pid).net_connections(kind="inet")
                if c.status == psutil.CONN_LISTEN and c.laddr.port == port
            }
            if not listening:
                time.sleep(0.1)
        assert listening, f"serve did not listen on port {port}: {process.poll()}"
        yield port, listening
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
        assert "Traceback" not in output, output


def test_serve_listens_on_the_loopback_only_by_default(tmp_path: Path) -> None:
    with serving(tmp_path) as (port, listening):
        assert listening == {"127.0.0.1"}
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        other = other_local_address()
        if other is not None:
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection((other, port), timeout=5).close()


def test_serve_listens_where_host_says(tmp_path: Path) -> None:
    with serving(tmp_path, "--host", "0.0.0.0") as (_, listening):
        assert listening == {"0.0.0.0"}


def test_the_fake_launcher_is_refused_outside_tests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DUALTUNE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("DUALTUNE_LAUNCHER", "fake")
    monkeypatch.delenv("DUALTUNE_TESTING", raising=False)

    refused = CliRunner().invoke(cli, ["serve"])

    assert refused.exit_code == 1
    assert "DUALTUNE_LAUNCHER=fake launches no driver" in refused.output
    assert "needs DUALTUNE_TESTING=1" in refused.output
    assert "Traceback" not in refused.output
    with pytest.raises(ValidationError, match="needs DUALTUNE_TESTING=1"):
        Settings(launcher="fake")
    monkeypatch.setenv("DUALTUNE_TESTING", "1")
    assert Settings().launcher == "fake"
    assert Settings(launcher="fake", testing=True).testing


def test_invalid_settings_name_their_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DUALTUNE_LAUNCHER", "kubernetes")

    refused = CliRunner().invoke(cli, ["serve"])

    assert refused.exit_code == 1
    assert "invalid settings: DUALTUNE_LAUNCHER: Input should be 'local', 'ray' or" in (
        refused.output
    )


def test_the_ray_launcher_without_a_tracking_uri_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Drivers on Ray nodes cannot see the default MLflow store (a file in the service's data
    dir): they would log to stores of their own while the sweeps succeed."""
    monkeypatch.setenv("DUALTUNE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("DUALTUNE_LAUNCHER", "ray")
    monkeypatch.setenv("DUALTUNE_RAY_ADDRESS", "http://127.0.0.1:8265")
    monkeypatch.delenv("DUALTUNE_MLFLOW_TRACKING_URI", raising=False)
    assert CliRunner().invoke(cli, ["db", "upgrade"]).exit_code == 0

    refused = CliRunner().invoke(cli, ["serve"])

    assert refused.exit_code == 1
    assert "DUALTUNE_LAUNCHER=ray needs DUALTUNE_MLFLOW_TRACKING_URI" in refused.output
    assert "Traceback" not in refused.output
