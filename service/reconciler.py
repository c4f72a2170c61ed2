"""The reconciler: brings every active sweep's launcher state in line with the database.

Each round it leases the active sweeps no other live replica holds, then per sweep:
launches pending ones; relaunches a running sweep whose driver is gone with trials left (the
driver resumes its Tune experiment, so finished trials do not run again); closes a sweep
whose trials are all final; stops the driver of a cancelling sweep and closes it cancelled.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psutil
from pydantic import ValidationError

from dualtune.core.spec import Runtime
from dualtune.service.api.metrics import ServiceMetrics
from dualtune.service.auth import new_worker_token
from dualtune.service.db.repository import Repository
from dualtune.service.errors import Conflict, ServiceError
from dualtune.service.launchers.base import DriverState, Launcher, LaunchRequest
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


@dataclass
class Reconciler:
    repo: Repository
    launcher: Launcher
    service_url: str
    tracking_uri: str
    owner: str = field(default_factory=default_replica_id)
    lease_s: float = 30.0
    max_launches: int = 3
    max_launch_failures: int = 8
    """Refused launches in a row (backing off 1, 2, 4, … 60 s) before the sweep fails."""
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    driver_env: dict[str, str] = field(default_factory=dict)
    metrics: ServiceMetrics | None = None

    def step(self) -> int:
        """One round; returns the number of sweeps it looked at."""
        sweeps = self.repo.claim(self.owner, lease_s=self.lease_s)
        unfinished = self.repo.unfinished_trials([s.pk for s in sweeps if s.status == "running"])
        for sweep in sweeps:
            try:
                self._reconcile(sweep, unfinished.get(sweep.pk, 0))
            except Conflict:
                pass  # another replica took the lease over; it carries on
            except ServiceError as exc:
                log.warning("sweep %s: %s", sweep.id, exc.message)
        return len(sweeps)

    def _reconcile(self, sweep: Sweep, unfinished: int) -> None:
        if sweep.status in ("pending", "launching"):
            self._launch(sweep)
        elif sweep.status == "running":
            self._watch(sweep, unfinished)
        elif sweep.status == "cancelling":
            self._cancel(sweep)

    def _state(self, sweep: Sweep) -> DriverState:
        return self.launcher.state(sweep.launcher_ref) if sweep.launcher_ref else DriverState.GONE

    def _watch(self, sweep: Sweep, unfinished: int) -> None:
        state = self._state(sweep)
        if state == DriverState.RUNNING:
            return
        if unfinished:  # counted before the driver ended: its last events may have landed since
            unfinished = self.repo.unfinished_trials([sweep.pk])[sweep.pk]
        if unfinished == 0:
            self.repo.finish(sweep.id, self.owner, "succeeded", trials="failed")
            return
        log.info("sweep %s: driver %s with %d trials left", sweep.id, state, unfinished)
        self._launch(sweep)

    def _cancel(self, sweep: Sweep) -> None:
        if sweep.launcher_ref and self._state(sweep) == DriverState.RUNNING:
            self.launcher.stop(sweep.launcher_ref)
            if self._state(sweep) == DriverState.RUNNING:
                return  # stopping takes a round or more; look again next time
        self.repo.finish(sweep.id, self.owner, "cancelled", trials="cancelled")

    def _fail(self, sweep: Sweep, error: str) -> None:
        """End the sweep and its unfinished trials ``failed`` with ``error``."""
        self.repo.finish(sweep.id, self.owner, "failed", trials="failed", error=error)

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
        launching = self.repo.begin_launch(sweep.id, self.owner, token)
        request = LaunchRequest(
            sweep_id=sweep.id,
            generation=launching.generation,
            launch=launching.launch_count,
            service_url=self.service_url,
            worker_token=token,
            tracking_uri=self.tracking_uri,
            env=dict(self.driver_env),
            runtime=runtime,
        )
        try:
            ref = self.launcher.launch(request)
        except ServiceError as exc:
            self.repo.launch_failed(sweep.id, self.owner, exc.message)
            self._count("failed")
            return
        self.repo.launched(sweep.id, self.owner, ref)
        if sweep.status == "pending":
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
                log.warning("reconcile round failed: %s", exc.message)
            except Exception:  # keep reconciling: one bad round must not end the loop
                log.exception("reconcile round failed")
            stop.wait(interval_s)
        self.repo.release(self.owner)
