"""The embedded stack's Ray head: one ``ray start --head --block`` for the life of ``dualtune
up``, which every sweep's driver joins (``DUALTUNE_RAY_ADDRESS``, passed on by the local
launcher) instead of starting a Ray runtime of its own. Each sweep still gets its own Tune
experiment and its own Ray job.

Ray's token authentication is on (as for a runtime ``ray.init`` starts): the head, and each
driver through the launcher (``driver_env``), read the token from ``<data dir>/ray_auth_token``
(mode 600, made once).

It runs as a child process in a session of its own (a Ctrl-C on the terminal reaches ``up``,
which stops the head after the service), with the same allow-listed environment as the
drivers (``base.allowed_driver_env``): trial processes are the head's children, and must not
see the service's database URL or tokens either. Linux stops it (SIGTERM, which ``ray start
--block`` turns into stopping every Ray process it started) when ``up`` dies, even by
SIGKILL. If it does not start, ``start`` says why and returns ``None``: the drivers then
start their own runtime, as they did before the stack had a head.

No ``import ray`` here (ARCHITECTURE §2): the head is the ``ray`` command next to this
Python.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from dualtune.service.launchers.base import RAY_ADDRESS_ENV, allowed_driver_env

log = logging.getLogger("dualtune.launchers.local_ray_head")

START_TIMEOUT_S = 60.0
STOP_GRACE_S = 10.0
ADDRESS_FILE = "ray_current_cluster"
"""What ``ray start`` writes in its temp dir once every process of the head is up (its GCS
answers before the raylet has started: too early for a driver)."""
MAX_TEMP_DIR_CHARS = 40
"""Ray puts its Unix sockets under ``<temp dir>/session_<date>_<pid>/sockets/``, and a
socket's path may not be longer than 107 bytes: a longer data dir gets a short temp dir
(``/tmp/dualtune-ray-<hash of the data dir>``)."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _started(address_file: Path, port: int) -> bool:
    try:
        return address_file.read_text().strip().endswith(f":{port}")
    except OSError:
        return False


def _die_with_parent() -> None:
    """In the head's process: ask Linux to SIGTERM it when ``up`` dies."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def ray_executable(python: str = sys.executable) -> str | None:
    beside = Path(python).with_name("ray")
    return str(beside) if beside.exists() else shutil.which("ray")


class LocalRayHead:
    """A Ray head on 127.0.0.1 for the drivers of this machine's stack."""

    def __init__(self, data_dir: Path, *, num_cpus: int | None = None) -> None:
        self.data_dir = data_dir
        self.num_cpus = num_cpus or int(os.environ.get("DUALTUNE_NUM_CPUS") or os.cpu_count() or 1)
        self.address: str | None = None
        self.temp_dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.data_dir / "logs" / "ray-head.log"

    @property
    def token_path(self) -> Path:
        return self.data_dir / "ray_auth_token"

    def _auth_env(self) -> dict[str, str]:
        if not self.token_path.is_file():
            fd = os.open(self.token_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.token_path)}

    def driver_env(self) -> dict[str, str]:
        """What a driver needs to join the head: its address and the token's file; empty
        while the head is not running (the driver then starts its own runtime)."""
        if self.address is None:
            return {}
        return {RAY_ADDRESS_ENV: self.address, **self._auth_env()}

    def _temp_dir(self) -> Path:
        preferred = self.data_dir / "ray"
        if len(str(preferred)) > MAX_TEMP_DIR_CHARS:
            # One per data dir, so that a stack restarted after a SIGKILL reuses it.
            digest = hashlib.sha256(str(self.data_dir.resolve()).encode()).hexdigest()[:12]
            preferred = Path(tempfile.gettempdir()) / f"dualtune-ray-{digest}"
        preferred.mkdir(parents=True, exist_ok=True)
        return preferred

    def start(self, timeout_s: float = START_TIMEOUT_S) -> str | None:
        """Start the head and wait until it answers; its address (``127.0.0.1:PORT``), or
        ``None`` (logged, with where to look) when it did not start."""
        executable = ray_executable()
        if executable is None:
            log.warning("no `ray` command here: each sweep's driver starts its own Ray")
            return None
        port = free_port()
        self.temp_dir = self._temp_dir()
        ready_file = self.temp_dir / ADDRESS_FILE
        ready_file.unlink(missing_ok=True)  # a stopped stack's head wrote one too
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {
            **allowed_driver_env(os.environ),
            "DUALTUNE_DATA_DIR": str(self.data_dir),
            "RAY_USAGE_STATS_ENABLED": "0",
            **self._auth_env(),
        }
        command = [
            executable,
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={port}",
            f"--num-cpus={self.num_cpus}",
            "--include-dashboard=false",
            "--disable-usage-stats",
            f"--temp-dir={self.temp_dir}",
        ]
        with self.log_path.open("ab") as out:
            try:
                self._process = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                    preexec_fn=_die_with_parent,
                )
            except OSError as exc:
                log.warning("the Ray head did not start (%s): drivers start their own", exc)
                return None
        deadline = time.monotonic() + timeout_s
        while not _started(ready_file, port):
            if self._process.poll() is not None or time.monotonic() > deadline:
                log.warning(
                    "the Ray head did not start (see %s): each sweep's driver starts its own Ray",
                    self.log_path,
                )
                self.stop()
                return None
            time.sleep(0.2)
        self.address = f"127.0.0.1:{port}"
        return self.address

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def stop(self) -> None:
        """Stop the head and every process under it (its raylet, GCS, workers): SIGTERM to
        ``ray start``, which stops them in order, then SIGKILL to what is left after
        ``STOP_GRACE_S``. Idempotent."""
        process, self._process, self.address = self._process, None, None
        if process is None:
            return
        try:
            root = psutil.Process(process.pid)
            family = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            family = []
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        _, alive = psutil.wait_procs(family, timeout=STOP_GRACE_S)
        for p in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=STOP_GRACE_S)
