"""Launchers start, watch and stop a sweep's driver: ``local`` (a subprocess here), ``ray``
(Ray Jobs API) and ``fake`` (in memory, for the service's unit tests)."""

from dualtune.service.launchers.base import (
    DriverInfo,
    DriverState,
    Launcher,
    LaunchRequest,
    driver_command,
)
from dualtune.service.launchers.fake import FakeLauncher
from dualtune.service.launchers.local import LocalLauncher
from dualtune.service.launchers.ray_jobs import RayJobsLauncher

__all__ = [
    "DriverInfo",
    "DriverState",
    "FakeLauncher",
    "LaunchRequest",
    "Launcher",
    "LocalLauncher",
    "RayJobsLauncher",
    "driver_command",
]
