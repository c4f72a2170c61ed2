"""The embedded default: the driver as a child process on this machine, with local Ray.

Each driver gets its own process group, so stopping it takes down the Ray runtime and trial
processes it started. A driver started by an earlier service process (the service was
restarted, or another replica on this machine) is found again in the process table by the
``--sweep-id`` and ``--submission-id`` on its command line, and known by pid and start time.

The driver inherits only an allow-list of this process's environment
(``base.allowed_driver_env``): never the service's database URL or Ray token. Under
``dualtune up`` the launcher knows the stack's Ray head (``local_ray_head``) and hands its
address and token file to every driver (``DUALTUNE_RAY_ADDRESS``, ``RAY_AUTH_*``), which
joins it rather than start a runtime of its own; without one, each driver starts its own.

The spec's ``runtime.env_vars`` reach the driver (and, through its local Ray, the trials);
``runtime.pip`` is not installed here: the driver runs in this machine's environment, and
says so in its log.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import psutil

from dualtune.service.errors import LauncherError, Unavailable
from dualtune.service.launchers.base import (
    DriverInfo,
    DriverState,
    LaunchRequest,
    allowed_driver_env,
    driver_command,
    expand_env,
)

log = logging.getLogger("dualtune.launchers.local")
STOP_GRACE_S = 15.0


LOG_TAIL_BYTES = 256 * 1024


def _ref(pid: int, started: float, submission_id: str) -> str:
    return f"local:{pid}:{started:.2f}:{submission_id}"


def _parse(ref: str) -> tuple[int, float]:
    _, pid, started, *_ = ref.split(":")
    return int(pid), float(started)


def parse_driver_command(cmdline: list[str]) -> tuple[str, str] | None:
    """``(sweep_id, submission_id)`` if ``cmdline`` is a dualtune driver's (``driver_command``)."""
    if "dualtune.worker" not in cmdline or "drive" not in cmdline:
        return None
    values = {}
    for flag in ("--sweep-id", "--submission-id"):
        if flag in cmdline[:-1]:
            values[flag] = cmdline[cmdline.index(flag) + 1]
    if "--sweep-id" not in values:
        return None
    return values["--sweep-id"], values.get("--submission-id", "")


class LocalLauncher:
    name = "local"

    def __init__(
        self,
        log_dir: Path,
        data_dir: Path,
        python: str = sys.executable,
        *,
        ray_head_env: Mapping[str, str] | None = None,
    ) -> None:
        """``ray_head_env``: what makes a driver join the stack's Ray head
        (``LocalRayHead.driver_env``)."""
        self.log_dir = log_dir
        self.data_dir = data_dir
        self.python = python
        self.ray_head_env = dict(ray_head_env or {})
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._stop_deadline: dict[str, float] = {}

    def _log_path(self, request: LaunchRequest) -> Path:
        return self.log_dir / f"{request.submission_id}.log"

    def driver_env(self, request: LaunchRequest) -> dict[str, str]:
        """The driver's whole environment: the allowed part of this process's, with the
        spec's ``runtime.env_vars`` over it (expanded against it, as Ray does), then the
        variables dualtune sets (``LaunchRequest.dualtune_env``, and the stack's Ray head)."""
        machine = {**allowed_driver_env(os.environ), "DUALTUNE_DATA_DIR": str(self.data_dir)}
        spec_env = {k: expand_env(v, machine) for k, v in request.runtime.env_vars.items()}
        return {
            **machine,
            **spec_env,
            **request.dualtune_env(),
            **self.ray_head_env,
            "PYTHONUNBUFFERED": "1",
        }

    def launch(self, request: LaunchRequest) -> str:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = self.driver_env(request)
        pip = request.runtime.pip
        try:
            with self._log_path(request).open("ab") as log_file:
                if pip:
                    note = (
                        f"dualtune: runtime.pip ({', '.join(pip)}) is not installed by the "
                        "local launcher; the driver runs in this machine's environment\n"
                    )
                    log.warning("sweep %s: %s", request.sweep_id, note.strip())
                    log_file.write(note.encode())
                    log_file.flush()
                child = subprocess.Popen(
                    driver_command(request, self.python),
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                )
        except OSError as exc:
            raise LauncherError(f"could not start the driver: {exc}") from exc
        started = psutil.Process(child.pid).create_time()
        ref = _ref(child.pid, started, request.submission_id)
        self._children[ref] = child
        return ref

    def state(self, ref: str) -> DriverState:
        child = self._children.get(ref)
        if child is not None:
            code = child.poll()
            if code is None:
                return DriverState.RUNNING
            return DriverState.EXITED if code == 0 else DriverState.FAILED
        pid, started = _parse(ref)
        try:
            process = psutil.Process(pid)
            if abs(process.create_time() - started) > 0.05:
                return DriverState.GONE  # the pid was reused
            if process.status() == psutil.STATUS_ZOMBIE:
                return DriverState.GONE
        except psutil.NoSuchProcess:
            return DriverState.GONE
        return DriverState.RUNNING

    def stop(self, ref: str) -> None:
        if self.state(ref) != DriverState.RUNNING:
            return
        pid, _ = _parse(ref)
        deadline = self._stop_deadline.setdefault(ref, time.monotonic() + STOP_GRACE_S)
        sig = signal.SIGTERM if time.monotonic() < deadline else signal.SIGKILL
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError as exc:
            raise LauncherError(f"cannot stop driver {ref}: {exc}") from exc

    def logs(self, ref: str) -> str:
        parts = ref.split(":")
        if len(parts) < 4:
            return ""
        path = self.log_dir / f"{parts[3]}.log"
        if not path.is_file():
            return ""
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - LOG_TAIL_BYTES))
            return f.read().decode(errors="replace")

    def running_drivers(self) -> list[DriverInfo]:
        found = []
        for process in psutil.process_iter(["pid", "cmdline", "create_time", "status"]):
            info = process.info
            if info["status"] == psutil.STATUS_ZOMBIE:
                continue
            parsed = parse_driver_command(info["cmdline"] or [])
            if parsed is not None:
                sweep_id, submission_id = parsed
                ref = _ref(info["pid"], info["create_time"], submission_id)
                found.append(DriverInfo(ref, sweep_id, submission_id))
        return found

    def check_ready(self) -> None:
        if not os.access(self.python, os.X_OK):
            raise Unavailable(f"the driver's Python {self.python} is not executable")
