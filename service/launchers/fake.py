"""An in-memory launcher for the service's unit tests: drivers are records a test moves."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from dualtune.service.errors import LauncherError, Unavailable
from dualtune.service.launchers.base import DriverInfo, DriverState, LaunchRequest


@dataclass
class FakeDriver:
    request: LaunchRequest
    state: DriverState = DriverState.RUNNING
    stop_requests: int = 0


@dataclass
class FakeLauncher:
    name: str = "fake"
    drivers: dict[str, FakeDriver] = field(default_factory=dict)
    fail_launches: int = 0
    """Launches to refuse (with ``LauncherError``) before accepting again."""
    stop_exits: bool = True
    """Whether ``stop`` ends the driver at once (a real one takes a round or more)."""
    ready: bool = True
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def launch(self, request: LaunchRequest) -> str:
        with self._lock:
            if self.fail_launches > 0:
                self.fail_launches -= 1
                raise LauncherError("the fake launcher refused (as the test asked)")
            self.drivers[request.submission_id] = FakeDriver(request)
        return request.submission_id

    def state(self, ref: str) -> DriverState:
        driver = self.drivers.get(ref)
        return DriverState.GONE if driver is None else driver.state

    def stop(self, ref: str) -> None:
        driver = self.drivers.get(ref)
        if driver is not None:
            driver.stop_requests += 1
            if self.stop_exits:
                driver.state = DriverState.FAILED

    def logs(self, ref: str) -> str:
        return f"fake driver {ref}\n" if ref in self.drivers else ""

    def running_drivers(self) -> list[DriverInfo]:
        if not self.ready:
            raise Unavailable("the fake launcher is not ready (as the test asked)")
        return [
            DriverInfo(ref, d.request.sweep_id, d.request.submission_id)
            for ref, d in list(self.drivers.items())
            if d.state == DriverState.RUNNING
        ]

    def alive(self, sweep_id: str) -> list[FakeDriver]:
        """The sweep's drivers still running."""
        return [d for d in self.for_sweep(sweep_id) if d.state == DriverState.RUNNING]

    def check_ready(self) -> None:
        if not self.ready:
            raise Unavailable("the fake launcher is not ready (as the test asked)")

    # -- what tests do to drivers
    def for_sweep(self, sweep_id: str) -> list[FakeDriver]:
        return [d for d in self.drivers.values() if d.request.sweep_id == sweep_id]

    def vanish(self, sweep_id: str) -> None:
        for ref in [r for r, d in self.drivers.items() if d.request.sweep_id == sweep_id]:
            del self.drivers[ref]

    def exit(self, sweep_id: str, state: DriverState = DriverState.EXITED) -> None:
        for d in self.for_sweep(sweep_id):
            d.state = state
