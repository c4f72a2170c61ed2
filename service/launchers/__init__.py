"""Launchers start, watch and stop a sweep's driver: ``local`` (a subprocess here), ``ray``
(Ray Jobs API) and ``fake`` (in memory, for the service's unit tests)."""

from service.launchers.base import DriverState, Launcher, LaunchRequest, driver_command
from service.launchers.fake import FakeLauncher
from service.launchers.local import LocalLauncher
from service.launchers.ray_jobs import RayJobsLauncher

__all__ = [
    "DriverState",
    "FakeLauncher",
    "LaunchRequest",
    "Launcher",
    "LocalLauncher",
    "RayJobsLauncher",
    "driver_command",
]
