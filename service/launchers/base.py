"""The launcher interface: what the reconciler needs of any place a driver can run."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol


class DriverState(StrEnum):
    RUNNING = "running"
    EXITED = "exited"
    """Ended with exit status 0."""
    FAILED = "failed"
    """Ended with an error."""
    GONE = "gone"
    """Not found: the machine, the process or the Ray job vanished."""


@dataclass(frozen=True)
class LaunchRequest:
    sweep_id: str
    generation: int
    launch: int
    """The launch count within the generation: a relaunch gets a new number, a resubmission
    of the same launch (after a crash between submit and record) the same one."""
    service_url: str
    worker_token: str = field(repr=False)
    tracking_uri: str
    env: dict[str, str] = field(default_factory=dict)

    @property
    def submission_id(self) -> str:
        return f"dualtune-{self.sweep_id}-g{self.generation}-l{self.launch}"


def driver_command(request: LaunchRequest, python: str = "python") -> list[str]:
    """The driver's command line: it fetches its sweep from the service (the worker token
    travels in the environment, never on the command line)."""
    return [
        python,
        "-m",
        "dualtune.worker",
        "drive",
        "--service-url",
        request.service_url,
        "--sweep-id",
        request.sweep_id,
    ]


class Launcher(Protocol):
    name: str

    def launch(self, request: LaunchRequest) -> str:
        """Start the driver; returns a reference for ``state``/``stop``/``logs``. Raises
        ``LauncherError`` when it cannot."""
        ...

    def state(self, ref: str) -> DriverState: ...

    def stop(self, ref: str) -> None:
        """Ask the driver to stop (idempotent); called each round until it has."""
        ...

    def logs(self, ref: str) -> str: ...

    def check_ready(self) -> None:
        """Raise ``Unavailable`` if drivers cannot be launched now."""
        ...
