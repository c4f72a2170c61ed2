"""The reconciler: brings every active sweep's drivers in line with the database.

Each round a replica process leases the active sweeps no other live process holds, asks the
launcher which drivers run (every launcher can enumerate them), then per sweep:

* **exactly one driver**: the driver of the sweep's recorded launch (its submission id) is
  the only one allowed; any other driver of the sweep is a stray and is stopped, and no
  launch starts while one is still alive. A launch is recorded before it is started, so a
  process that died in between is followed by one that adopts the driver it finds running
  under that submission id, or launches anew when there is none;
* launches pending sweeps; relaunches a running sweep whose driver is gone with trials left
  (the driver resumes its Tune experiment, so finished trials do not run again); closes a
  sweep whose trials are all final (``succeeded`` if one succeeded, else ``failed``);
* stops every driver of a cancelling sweep, in every state, and closes it cancelled once
  none is alive.

One sweep's failure is logged with its id, counted in ``/metrics`` and backed off; the round
goes on with the others.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import psutil
from pydantic import ValidationError

from dualtune.core.spec import Runtime
from dualtune.core.states import SWEEP_FINAL, SweepState, TrialState
from dualtune.service.api.metrics import ServiceMetrics
from dualtune.service.auth import new_worker_token
from dualtune.service.db.repository import Repository
from dualtune.service.errors import Conflict, ServiceError
from dualtune.service.faults import FINISH_BEGUN, LAUNCH_RECORDED, LAUNCH_STARTED, crash_point
from dualtune.service.launchers.base import DriverInfo, DriverState, Launcher, LaunchRequest
from dualtune.service.records import Sweep

log = logging.getLogger("dualtune.reconciler")


def default_replica_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def lease_owner(replica_id: str | None = None) -> str:
    """This process's name on the leases it holds: ``REPLICA@HOST:PID:START``.

    Per process, not per replica id: ``serve --workers N`` runs N reconcilers under one
    replica id (the chart's pod name), and two of them must never hold one sweep. The host,
    pid and start time let a process on the same host tell that a lease's holder is dead
    (the embedded stack restarted) and take its sweeps at once instead of waiting out the
    lease.
    """
    host, started = socket.gethostname(), psutil.Process().create_time()
    return f"{replica_id or host}@{host}:{os.getpid()}:{started:.2f}"


def holder_is_dead(holder: str) -> bool:
    """Whether the lease holder ``holder`` (a ``lease_owner``) is a process of this host that
    no longer runs. A holder on another host, or of another form, is not known dead: its
    lease runs out instead."""
    _, at, place = holder.rpartition("@")
    host, _, rest = place.partition(":")
    pid, _, started = rest.partition(":")
    if not at or host != socket.gethostname():
        return False
    try:
        return abs(psutil.Process(int(pid)).create_time() - float(started)) > 0.05
    except psutil.NoSuchProcess:
        return True
    except (ValueError, psutil.Error):
        return False


@dataclass
class _Backoff:
    failures: int
    until: datetime


@dataclass
class Reconciler:
    repo: Repository
    launcher: Launcher
    service_url: str
    tracking_uri: str
    owner: str = field(default_factory=lease_owner)
    lease_s: float = 30.0
    max_launches: int = 3
    max_launch_failures: int = 8
    """Refused launches in a row (backing off 1, 2, 4, … 60 s) before the sweep fails."""
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    driver_env: dict[str, str] = field(default_factory=dict)
    metrics: ServiceMetrics | None = None
    _backoff: dict[str, _Backoff] = field(default_factory=dict, repr=False)

    def step(self) -> int:
        """One round; returns the number of sweeps it holds."""
        dead = {h for h in self.repo.lease_holders() if h != self.owner and holder_is_dead(h)}
        sweeps = self.repo.claim(self.owner, lease_s=self.lease_s, dead_owners=dead)
        try:
            running = self.launcher.running_drivers()
        except ServiceError as exc:  # cannot tell which drivers run: change nothing
            self._error("the launcher cannot list its drivers", exc)
            return len(sweeps)
        drivers: dict[str, list[DriverInfo]] = defaultdict(list)
        for driver in running:
            drivers[driver.sweep_id].append(driver)
        held = {s.id for s in sweeps}
        self._stop_strays_of_closed_sweeps({k: v for k, v in drivers.items() if k not in held})
        unfinished = self.repo.unfinished_trials(
            [s.pk for s in sweeps if s.status == SweepState.RUNNING]
        )
        for sweep in sweeps:
            backoff = self._backoff.get(sweep.id)
            if backoff is not None and self.now() < backoff.until:
                continue
            try:
                self._reconcile(sweep, drivers.get(sweep.id, []), unfinished.get(sweep.pk, 0))
            except Conflict:
                pass  # another process took the lease over; it carries on
            except Exception as exc:  # one sweep's fault must not stop the others' round
                self._sweep_failed(sweep, exc)
            else:
                self._backoff.pop(sweep.id, None)
        return len(sweeps)

    def _sweep_failed(self, sweep: Sweep, exc: Exception) -> None:
        earlier = self._backoff.get(sweep.id)
        failures = earlier.failures + 1 if earlier else 1
        delay = min(2.0 ** (failures - 1), 60.0)
        self._backoff[sweep.id] = _Backoff(failures, self.now() + timedelta(seconds=delay))
        self._error(f"sweep {sweep.id} (try {failures}, next in {delay:.0f} s)", exc)

    def _error(self, where: str, exc: Exception) -> None:
        if self.metrics is not None:
            self.metrics.reconcile_errors.labels(type(exc).__name__).inc()
        if isinstance(exc, ServiceError):
            log.warning("%s: %s", where, exc.message)
        else:
            log.error("%s: %s", where, exc, exc_info=exc)

    def _reconcile(self, sweep: Sweep, drivers: list[DriverInfo], unfinished: int) -> None:
        if sweep.status == SweepState.CANCELLING:
            self._cancel(sweep, drivers)
            return
        launch = sweep.launch_submission_id
        current = [d for d in drivers if launch and d.submission_id == launch]
        strays = [d for d in drivers if d not in current]
        if len(current) > 1:  # one launch, several processes: keep none of them
            strays, current = drivers, []
        self._stop(strays, why="not the sweep's recorded launch")
        if sweep.status == SweepState.LAUNCHING and current:
            # the process that launched it died before it knew the driver: adopt it
            log.info("sweep %s: adopting driver %s", sweep.id, current[0].ref)
            self.repo.launched(sweep.id, self.owner, current[0].ref)
            return
        if current:
            return  # its one driver runs
        if sweep.status == SweepState.RUNNING:
            self._driver_ended(sweep, unfinished, strays)
        elif not strays:  # pending, or a recorded launch that never started
            self._launch(sweep)

    def _driver_ended(self, sweep: Sweep, unfinished: int, strays: list[DriverInfo]) -> None:
        state = self.launcher.state(sweep.launcher_ref) if sweep.launcher_ref else None
        if unfinished:  # counted before the driver ended: its last events may have landed since
            unfinished = self.repo.unfinished_trials([sweep.pk])[sweep.pk]
        if unfinished == 0:
            crash_point(FINISH_BEGUN)
            outcome = self.repo.close_done(sweep.id, self.owner)
            log.info("sweep %s: %s", sweep.id, outcome)
            return
        if strays:
            return  # relaunch once the strays are gone: never two drivers at once
        log.info("sweep %s: driver %s with %d trials left", sweep.id, state or "gone", unfinished)
        self._launch(sweep)

    def _cancel(self, sweep: Sweep, drivers: list[DriverInfo]) -> None:
        """Stop every driver of the sweep, whatever launch it belongs to; close it once none
        is left running."""
        alive = list(drivers)
        if sweep.launcher_ref and all(d.ref != sweep.launcher_ref for d in alive):
            with contextlib.suppress(ServiceError):  # found by ref only (a launcher's lag)
                if self.launcher.state(sweep.launcher_ref) == DriverState.RUNNING:
                    alive.append(
                        DriverInfo(sweep.launcher_ref, sweep.id, sweep.launch_submission_id or "")
                    )
        for driver in alive:
            self.launcher.stop(driver.ref)
        if any(self.launcher.state(d.ref) == DriverState.RUNNING for d in alive):
            return  # stopping takes a round or more; look again next time
        self.repo.finish(sweep.id, self.owner, SweepState.CANCELLED, trials=TrialState.CANCELLED)

    def _stop(self, drivers: Iterable[DriverInfo], *, why: str) -> None:
        for driver in drivers:
            log.warning("sweep %s: stopping driver %s (%s)", driver.sweep_id, driver.ref, why)
            self.launcher.stop(driver.ref)
            if self.metrics is not None:
                self.metrics.strays_stopped.inc()

    def _stop_strays_of_closed_sweeps(self, drivers: dict[str, list[DriverInfo]]) -> None:
        """Drivers of sweeps this process does not hold: stopped when their sweep has ended
        (a driver that outlived its sweep). Another live process's sweeps are its own
        business, and a sweep this database does not know belongs to another service."""
        if not drivers:
            return
        try:
            states = self.repo.sweep_states(list(drivers))
        except ServiceError as exc:
            self._error("looking up the sweeps of running drivers", exc)
            return
        for sweep_id, (state, _) in states.items():
            if state in SWEEP_FINAL:
                self._stop(drivers[sweep_id], why=f"its sweep is {state}")

    def _fail(self, sweep: Sweep, error: str) -> None:
        """End the sweep and its unfinished trials ``failed`` with ``error``."""
        self.repo.finish(
            sweep.id, self.owner, SweepState.FAILED, trials=TrialState.FAILED, error=error
        )

    def _launch(self, sweep: Sweep) -> None:
        if sweep.retry_launch_at is not None and self.now() < sweep.retry_launch_at:
            return  # the launcher refused recently; wait out the backoff
        if sweep.launch_failures >= self.max_launch_failures:
            self._fail(
                sweep, f"the launcher refused {sweep.launch_failures} launches: {sweep.error}"
            )
            return
        if sweep.launch_count >= self.max_launches:
            reason = sweep.error or "the driver kept stopping before the trials finished"
            self._fail(sweep, f"gave up after {sweep.launch_count} driver launches: {reason}")
            return
        try:
            runtime = Runtime.model_validate(sweep.spec.get("runtime") or {})
        except ValidationError as exc:  # validated when submitted; only a changed rule can
            self._fail(sweep, f"the spec's runtime section is no longer valid: {exc}")
            return
        token = new_worker_token()
        request = LaunchRequest(
            sweep_id=sweep.id,
            generation=sweep.generation,
            launch=sweep.launch_count + 1,
            service_url=self.service_url,
            worker_token=token,
            tracking_uri=self.tracking_uri,
            env=dict(self.driver_env),
            runtime=runtime,
        )
        self.repo.begin_launch(
            sweep.id,
            self.owner,
            token,
            launch=request.launch,
            submission_id=request.submission_id,
        )
        crash_point(LAUNCH_RECORDED)
        try:
            ref = self.launcher.launch(request)
        except ServiceError as exc:
            self.repo.launch_failed(sweep.id, self.owner, exc.message)
            self._count("failed")
            return
        crash_point(LAUNCH_STARTED)
        self.repo.launched(sweep.id, self.owner, ref)
        if sweep.status == SweepState.PENDING:
            self._count("launched")
            if self.metrics is not None:
                waited = (self.now() - sweep.updated_at).total_seconds()
                self.metrics.launch_latency.observe(max(0.0, waited))
        else:
            self._count("relaunched")

    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.launches.labels(outcome).inc()

    def run(self, stop: threading.Event, interval_s: float) -> None:
        """Rounds until ``stop`` is set (the app's background thread)."""
        while not stop.is_set():
            try:
                self.step()
            except ServiceError as exc:
                self._error("reconcile round failed", exc)
            except Exception as exc:  # keep reconciling: one bad round must not end the loop
                self._error("reconcile round failed", exc)
            stop.wait(interval_s)
        self.repo.release(self.owner)
