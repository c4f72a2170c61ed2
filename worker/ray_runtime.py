"""How a driver reaches Ray: it joins a running runtime when it has an address for one, and
starts a local runtime of its own otherwise.

The address, first found wins: the driver's ``address`` argument, ``RAY_ADDRESS`` (set by
Ray for a driver that runs as a Ray job), ``DUALTUNE_RAY_ADDRESS`` (the embedded stack's
head, passed on by the local launcher; or the user's cluster). An address on this machine
that nobody answers on (the embedded stack's head died or was stopped) is not fatal: the
driver starts its own runtime, as it would without one, and says so in its log. A remote
address that cannot be joined is an error: running a cluster's sweep on this machine's
cores instead would surprise whoever gave it.

A runtime of this machine that the driver joins started its worker processes with its own
environment, not the driver's: the driver hands its environment to them as its job's
``runtime_env`` (``env_vars``), so a trial sees what it saw in a runtime the driver started
itself (the spec's ``runtime.env_vars``, the MLflow settings). A Ray job's driver, and one
on a remote cluster, has its ``runtime_env`` from whoever submitted it.

Whatever the runtime, each sweep gets its own Tune experiment and Ray job: joining a runtime
shares processes and start-up, not Tune state.

Measured and left out: a ``worker_process_setup_hook`` that imports torch, MLflow and the
trainable in each new worker made a unit's start slower, not faster (docs/service.md, "The
embedded Ray head"): Ray starts a job's workers when units need them, so the imports stay
on the unit's path, and the hook's runtime env keeps the head's prestarted workers from
being used. Reusing a finished unit's process for the next (``tune_config_overrides``) is
what removes the start-up from every unit after the first on each CPU.

Measured and left out too: starting Ray on a thread of the driver's while its main thread
imports torch and MLflow. On 2 cores it saved nothing (Ray's start is its processes' CPU
work, not waiting: 7.4 s instead of 4.6 s beside the imports, which took 8.4 s instead of
3.3 s), and the thread must live as long as the process (Ray ties a local runtime's
processes to the *thread* that started it by Linux's parent-death signal).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import ray

ADDRESS_ENV = "DUALTUNE_RAY_ADDRESS"
"""The Ray runtime a driver joins (``host:port`` of its GCS, or ``ray://host:10001``)."""
NUM_CPUS_ENV = "DUALTUNE_NUM_CPUS"
"""The CPUs of a runtime the driver starts itself (default: this machine's)."""
RAY_JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"
"""Set by Ray for a driver that runs as a Ray job: the job's ``runtime_env`` is its
submitter's (the ``ray`` launcher's), and one of the driver's own would be merged into it."""
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
CONNECT_PROBE_S = 2.0
NOT_FOR_WORKERS = ("RAY_", "DUALTUNE_WORKER_TOKEN")
"""Variables a joined runtime's workers do not take from the driver: Ray's own (the raylet
sets a worker's) and the driver's service token (trials never call the service)."""

log = logging.getLogger("dualtune.worker.ray_runtime")


_started_here: list[bool] = []
"""Holds ``True`` once this process started a local runtime of its own."""


def started_here() -> bool:
    """Whether the Ray runtime this process is connected to is one it started itself (its
    processes are this process's children and end with it)."""
    return bool(_started_here)


def ray_address(address: str | None = None) -> str | None:
    """The runtime to join (see the module's docstring), or ``None`` to start one."""
    return address or os.environ.get("RAY_ADDRESS") or os.environ.get(ADDRESS_ENV) or None


def _host_port(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of a ``host:port`` or ``scheme://host:port`` address; ``None`` for
    what is no such address (``auto``, ``local``)."""
    parsed = urlsplit(address if "://" in address else f"gcs://{address}")
    try:
        port = parsed.port
    except ValueError:
        return None
    if parsed.hostname is None or port is None:
        return None
    return parsed.hostname, port


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=CONNECT_PROBE_S):
            return True
    except OSError:
        return False


def _start_local() -> None:
    ray.init(
        # "local": a new runtime of our own, even when `ray start` left a cluster on this
        # machine (address=None would join that one).
        address="local",
        include_dashboard=False,
        log_to_driver=False,
        num_cpus=int(os.environ.get(NUM_CPUS_ENV, os.cpu_count() or 1)),
    )
    _started_here.append(True)


def connect_ray(address: str | None = None) -> None:
    """Join the Ray runtime at ``address`` (else ``RAY_ADDRESS``, else
    ``DUALTUNE_RAY_ADDRESS``), or start a local one. A Ray already initialised in this
    process is used as it is.

    Raises:
        ConnectionError: a remote ``address`` that does not answer.
    """
    if ray.is_initialized():
        return
    target = ray_address(address)
    if target is None:
        _start_local()
        return
    where = _host_port(target)
    if where is not None and not _answers(*where):
        if where[0] in LOCAL_HOSTS:
            log.warning(
                "no Ray runtime answers at %s (the embedded stack's head is gone?): "
                "starting a local runtime of this driver's own",
                target,
            )
            _start_local()
            return
        raise ConnectionError(f"no Ray runtime answers at {target}")
    log.info("joining the Ray runtime at %s", target)
    if where is not None and where[0] in LOCAL_HOSTS and RAY_JOB_ENV not in os.environ:
        ray.init(address=target, log_to_driver=False, runtime_env={"env_vars": job_env()})
    else:
        ray.init(address=target, log_to_driver=False)


def job_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The driver's environment, for the workers of a runtime it joins on this machine."""
    environ = os.environ if environ is None else environ
    return {k: v for k, v in environ.items() if not k.startswith(NOT_FOR_WORKERS)}


def tune_config_overrides() -> dict[str, Any]:
    """What the driver passes to ``tune.TuneConfig`` on top of its own settings.

    ``reuse_actors``: a unit that ends well hands its worker process (torch, MLflow and the
    trainable imported, an MLflow client open) to the next unit of the sweep instead of
    Tune starting a new one. Each unit stays its own trial: Tune resets the function
    trainable's session (trial id, directory, checkpoint) and the unit seeds its own RNGs
    and builds its own trainer; a unit that fails, or whose process is killed, is retried
    in a new process, as without reuse."""
    return {"reuse_actors": True}
