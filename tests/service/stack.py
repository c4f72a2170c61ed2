"""The embedded stack as a real process (``dualtune up``) for end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import uvicorn

from tests.ports import free_port


class Stack:
    """``dualtune up --no-ui`` in ``data_dir``; ``kill()`` SIGKILLs it and every child."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Stack:
        env = {
            **os.environ,
            "DUALTUNE_RECONCILE_INTERVAL_S": "0.5",
            "DUALTUNE_NUM_CPUS": "2",
        }
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._log = (self.data_dir / "stack.log").open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dualtune.service.cli",
                "up",
                "--no-ui",
                "--data-dir",
                str(self.data_dir),
                "--port",
                str(self.port),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            assert self.process.poll() is None, (self.data_dir / "stack.log").read_text()
            time.sleep(0.3)
        raise AssertionError("the stack did not become ready in 60 s")

    @property
    def token(self) -> str:
        return (self.data_dir / "token").read_text().strip()

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=f"{self.url}/api/v1",
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=30,
        )

    def kill(self) -> None:
        """SIGKILL the service and all its children (drivers, Ray, trials) at once."""
        assert self.process is not None
        root = psutil.Process(self.process.pid)
        family = [root, *root.children(recursive=True)]
        for p in family:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        psutil.wait_procs(family, timeout=30)
        self.process.wait()
        self._log.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill()


def wait_for(
    client: httpx.Client, sweep_id: str, predicate: Any, timeout_s: float = 600
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        sweep: dict[str, Any] = client.get(f"/sweeps/{sweep_id}").json()
        if predicate(sweep):
            return sweep
        if time.monotonic() > deadline:
            raise AssertionError(f"sweep never reached the expected state: {sweep}")
        time.sleep(0.5)


def final(sweep: dict[str, Any]) -> bool:
    return sweep["status"] in ("succeeded", "failed", "cancelled")


class ThreadedServer:
    """An app served by uvicorn in a thread of the test process (start, stop, start again)."""

    def __init__(self, app: object, port: int) -> None:
        self.app, self.port = app, port
        self.thread: threading.Thread | None = None
        self.server: uvicorn.Server | None = None

    def start(self) -> None:
        self.server = uvicorn.Server(
            uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning")  # type: ignore[arg-type]
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self) -> None:
        assert self.server is not None
        assert self.thread is not None
        self.server.should_exit = True
        self.thread.join(timeout=10)
