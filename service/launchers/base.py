"""The launcher interface: what the reconciler needs of any place a driver can run."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from dualtune.core.spec import WORKER_TOKEN_ENV, Runtime


class DriverState(StrEnum):
    RUNNING = "running"
    EXITED = "exited"
    """Ended with exit status 0."""
    FAILED = "failed"
    """Ended with an error."""
    GONE = "gone"
    """Not found: the machine, the process or the Ray job vanished."""


@dataclass(frozen=True)
class DriverInfo:
    """A driver the launcher found running: its reference, sweep and launch."""

    ref: str
    sweep_id: str
    submission_id: str


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
    """The service's own variables for every driver (``DUALTUNE_DATA_DIR``, ...)."""
    runtime: Runtime = field(default_factory=Runtime)
    """The spec's ``runtime`` section: its pip requirements and environment variables."""

    @property
    def submission_id(self) -> str:
        return submission_id(self.sweep_id, self.generation, self.launch)

    def dualtune_env(self) -> dict[str, str]:
        """The variables dualtune sets for the driver: the service's (``env``), the worker
        token and the tracking URI. They win over the spec's ``runtime.env_vars``: a spec may
        not move the driver's data or tracking elsewhere, nor name the token (the spec's
        validation refuses ``RESERVED_ENV_VARS``)."""
        return {
            **self.env,
            WORKER_TOKEN_ENV: self.worker_token,
            "MLFLOW_TRACKING_URI": self.tracking_uri,
        }


def submission_id(sweep_id: str, generation: int, launch: int) -> str:
    """The name of launch ``launch`` of ``generation`` of a sweep, on every launcher: the Ray
    job's submission id, and on the local driver's command line."""
    return f"dualtune-{sweep_id}-g{generation}-l{launch}"


DRIVER_ENV_ALLOWED = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "TEMP",
        "TMP",
        "PYTHONPATH",
        "VIRTUAL_ENV",
        "CUDA_VISIBLE_DEVICES",
        "NVIDIA_VISIBLE_DEVICES",
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
        "SSL_CERT_FILE",
        "REQUESTS_CA_BUNDLE",
        # the driver's own knobs (worker/)
        "DUALTUNE_NUM_CPUS",
        "DUALTUNE_MAX_CONCURRENT",
        "DUALTUNE_TORCH_THREADS",
        "DUALTUNE_EVENTS_FLUSH_S",
        "DUALTUNE_HEARTBEAT_S",
        "DUALTUNE_REFUSED_GRACE_S",
        "DUALTUNE_MLFLOW_RETRY_BUDGET_S",
    }
)
DRIVER_ENV_ALLOWED_PREFIXES = ("LC_", "MLFLOW_", "AWS_")
"""What of the service's own environment a local driver inherits: the machine's basics, the
driver's own knobs, and the MLflow client's settings with the artifact store's credentials
(``AWS_*``: the driver writes the artifacts). Nothing else: the service's database URL, its
Ray token and any other secret stay with the service; the driver gets its sweep-scoped
worker token and the tracking URI from ``LaunchRequest.dualtune_env``."""
RAY_ADDRESS_ENV = "DUALTUNE_RAY_ADDRESS"
"""The Ray runtime a local driver joins (the embedded stack's head), set by the local launcher
itself: the service's own ``DUALTUNE_RAY_ADDRESS`` is the ``ray`` launcher's Jobs API, not
an address a driver joins, so it is not inherited."""


def allowed_driver_env(environ: Mapping[str, str]) -> dict[str, str]:
    return {
        k: v
        for k, v in environ.items()
        if k in DRIVER_ENV_ALLOWED or k.startswith(DRIVER_ENV_ALLOWED_PREFIXES)
    }


_REFERENCE = re.compile(r"\$\{([A-Za-z0-9_]+)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def expand_env(value: str, env: Mapping[str, str]) -> str:
    """``value`` with ``${NAME}`` and ``$NAME`` replaced by ``env``'s values, as Ray expands a
    ``runtime_env``'s ``env_vars`` (``PYTHONPATH: /plugins:${PYTHONPATH}``): an unset
    ``${NAME}`` becomes empty, an unset ``$NAME`` stays as written."""

    def substitute(match: re.Match[str]) -> str:
        braced, bare = match.group(1), match.group(2)
        name = braced or bare
        if name in env:
            return env[name]
        return "" if braced else match.group(0)

    return _REFERENCE.sub(substitute, value)


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
        "--submission-id",
        request.submission_id,
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

    def running_drivers(self) -> list[DriverInfo]:
        """Every dualtune driver this launcher can see running (started by this process or
        any other), so the reconciler can adopt the one it launched and stop strays. Raises
        ``Unavailable`` when it cannot look."""
        ...

    def check_ready(self) -> None:
        """Raise ``Unavailable`` if drivers cannot be launched now."""
        ...
