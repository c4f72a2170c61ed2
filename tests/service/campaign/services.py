"""Service processes under test: the embedded stack (``dualtune up``) and ``dualtune serve``
replicas, each with a log file of its own per start, killed by the test or left to die.

Unlike ``tests.service.stack.Stack`` nothing here kills a service's children: the drivers a
service started live in their own process groups and must outlive it, as they do when a
pod or a machine loses the service process.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

from dualtune.service.faults import CRASH_ENV

CLI = [sys.executable, "-m", "dualtune.service.cli"]
FAST = {
    "DUALTUNE_RECONCILE_INTERVAL_S": "0.5",
    "DUALTUNE_NUM_CPUS": "2",
}


class ServiceProcess:
    """One service (``argv``) on ``port``; ``start`` again after it died restarts it there."""

    def __init__(self, name: str, argv: list[str], port: int, env: Mapping[str, str], logs: Path):
        self.name, self.argv, self.port = name, argv, port
        self.env = dict(env)
        self.logs = logs
        self.url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.log_files: list[Path] = []

    def start(self, *, crash_at: str | None = None, ready_s: float = 90) -> ServiceProcess:
        env = {**os.environ, **self.env}
        env.pop(CRASH_ENV, None)
        if crash_at:
            env[CRASH_ENV] = crash_at
        self.logs.mkdir(parents=True, exist_ok=True)
        log_path = self.logs / f"{self.name}-{len(self.log_files) + 1}.log"
        self.log_files.append(log_path)
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=self.logs,  # not the checkout: `python -m` would import from there first
            )
        deadline = time.monotonic() + ready_s
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited at start:\n{log_path.read_text()}")
            time.sleep(0.3)
        raise AssertionError(f"{self.name} not ready in {ready_s:.0f} s:\n{log_path.read_text()}")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_exit(self, timeout_s: float) -> int | None:
        """The return code once the process has ended by itself, None if still alive."""
        assert self.process is not None
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        """SIGKILL the service process alone (its drivers run on)."""
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def log_text(self) -> str:
        return "\n".join(
            f"===== {p.name} =====\n{p.read_text(errors='replace')}"
            for p in self.log_files
            if p.is_file()
        )


def embedded(data_dir: Path, port: int, logs: Path) -> ServiceProcess:
    """``dualtune up --no-ui`` on ``data_dir`` (SQLite, local launcher, MLflow on SQLite)."""
    argv = [*CLI, "up", "--no-ui", "--data-dir", str(data_dir), "--port", str(port)]
    return ServiceProcess("up", argv, port, FAST, logs)


def replica(name: str, port: int, env: Mapping[str, str], logs: Path) -> ServiceProcess:
    """``dualtune serve`` as the replica ``name`` (settings from ``env``'s ``DUALTUNE_*``)."""
    argv = [*CLI, "serve", "--host", "127.0.0.1"]
    settings = {**FAST, **env, "DUALTUNE_REPLICA_ID": name, "DUALTUNE_PORT": str(port)}
    return ServiceProcess(name, argv, port, settings, logs)


def cli(*args: str, env: Mapping[str, str], cwd: Path) -> str:
    """A ``dualtune`` command's output; fails the test with its output when it fails."""
    done = subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env, "COLUMNS": "300"},
        cwd=cwd,
        timeout=120,
    )
    assert done.returncode == 0, f"dualtune {' '.join(args)}: {done.stdout}{done.stderr}"
    return done.stdout


def stop_drivers(pids: set[int]) -> None:
    """SIGKILL the process groups of drivers left behind (each driver leads its group)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
