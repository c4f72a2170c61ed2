"""A process-table sampler: how many drivers of each sweep are alive at the same time.

A driver is a process whose command line is ``... dualtune.worker drive ... --sweep-id ID``
(contract 3 of issue 14). A process forked by a driver carries the driver's command line
until it execs; it is the same driver, not a second one, so a match whose parent is itself a
match of the same sweep is not counted.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import psutil


@dataclass(frozen=True)
class Driver:
    pid: int
    sweep_id: str
    submission_id: str | None


def describe(overlaps: list[tuple[float, tuple[Driver, ...]]], limit: int = 3) -> str:
    """The first ``limit`` overlaps, one line each: when, and which pids and submissions."""
    lines = [
        f"at {at:.1f} s: " + ", ".join(f"pid {d.pid} ({d.submission_id})" for d in alive)
        for at, alive in overlaps[:limit]
    ]
    return "; ".join(lines) + (f"; ... {len(overlaps)} samples in all" if overlaps else "")


@dataclass
class SweepDrivers:
    """What the sampler saw of one sweep's drivers over the whole run."""

    max_alive: int = 0
    pids: set[int] = field(default_factory=set)
    submission_ids: set[str] = field(default_factory=set)
    overlaps: list[tuple[float, tuple[Driver, ...]]] = field(default_factory=list)
    """The samples (seconds since the sampler started, the drivers) with more than one."""

    def __str__(self) -> str:
        return (
            f"max {self.max_alive} alive, pids {sorted(self.pids)}, submissions "
            f"{sorted(self.submission_ids)}; overlaps: {describe(self.overlaps) or 'none'}"
        )


def _flag(cmdline: list[str], name: str) -> str | None:
    for i, part in enumerate(cmdline[:-1]):
        if part == name:
            return cmdline[i + 1]
        if part.startswith(name + "="):
            return part.split("=", 1)[1]
    return None


def _is_driver(cmdline: list[str]) -> bool:
    return any("dualtune.worker" in part for part in cmdline) and "drive" in cmdline


def scan() -> dict[str, list[Driver]]:
    """The drivers alive now, by sweep id (zombies and a driver's own forks left out)."""
    found: dict[int, tuple[int, Driver]] = {}
    for p in psutil.process_iter(["pid", "ppid", "cmdline", "status"], ad_value=None):
        cmdline = p.info["cmdline"] or []
        if p.info["status"] == psutil.STATUS_ZOMBIE or not _is_driver(cmdline):
            continue
        sweep_id = _flag(cmdline, "--sweep-id")
        if sweep_id is None:
            continue
        driver = Driver(p.info["pid"], sweep_id, _flag(cmdline, "--submission-id"))
        found[driver.pid] = (p.info["ppid"] or 0, driver)
    by_sweep: dict[str, list[Driver]] = {}
    for ppid, driver in found.values():
        parent = found.get(ppid)
        if parent is not None and parent[1].sweep_id == driver.sweep_id:
            continue
        by_sweep.setdefault(driver.sweep_id, []).append(driver)
    return by_sweep


class DriverSampler:
    """Scans the process table every ``interval_s`` in a thread until stopped."""

    def __init__(self, interval_s: float = 0.1) -> None:
        self.interval_s = interval_s
        self.sweeps: dict[str, SweepDrivers] = {}
        self.samples = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="driver-sampler", daemon=True)

    def __enter__(self) -> DriverSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.record(scan())
            self._stop.wait(self.interval_s)

    def record(self, alive: dict[str, list[Driver]]) -> None:
        at = time.monotonic() - self._started
        with self._lock:
            self.samples += 1
            for sweep_id, drivers in alive.items():
                seen = self.sweeps.setdefault(sweep_id, SweepDrivers())
                seen.max_alive = max(seen.max_alive, len(drivers))
                seen.pids.update(d.pid for d in drivers)
                seen.submission_ids.update(d.submission_id for d in drivers if d.submission_id)
                if len(drivers) > 1:
                    seen.overlaps.append((round(at, 1), tuple(drivers)))

    def of(self, sweep_id: str) -> SweepDrivers:
        with self._lock:
            return self.sweeps.get(sweep_id, SweepDrivers())


def alive(sweep_id: str) -> list[Driver]:
    return scan().get(sweep_id, [])


def wait_until_no_driver(sweep_id: str, timeout_s: float) -> list[Driver]:
    """The drivers of ``sweep_id`` still alive after ``timeout_s`` (empty once they exit)."""
    deadline = time.monotonic() + timeout_s
    while (left := alive(sweep_id)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left
