"""The launcher's health, checked in the background and never on a request.

Readiness must not hang on the launcher: a slow Ray head would take every API pod out of
its Service, and the drivers post their events to that Service. So a thread asks
``launcher.check_ready()`` every few seconds, with a deadline (a hung head cannot block it),
and keeps the last answer for ``/healthz`` and the ``dualtune_launcher_up`` gauge.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from dualtune.service.errors import ServiceError
from dualtune.service.launchers import Launcher

log = logging.getLogger("dualtune.launcher_health")


@dataclass(frozen=True)
class LauncherHealth:
    name: str
    up: bool
    detail: str
    checked_at: datetime | None
    """When the last check ended (None: none has yet)."""


class LauncherHealthMonitor:
    """The last answer of ``launcher.check_ready()``; ``run`` asks again every interval."""

    def __init__(
        self,
        launcher: Launcher,
        *,
        timeout_s: float,
        on_result: Callable[[bool], None] | None = None,
    ) -> None:
        self.launcher = launcher
        self.timeout_s = timeout_s
        self.on_result = on_result
        self._changed = threading.Condition()
        self._health = LauncherHealth(launcher.name, False, "not checked yet", None)
        self._checks = 0
        self._hung: threading.Thread | None = None
        self._hung_since = 0.0

    def health(self) -> LauncherHealth:
        with self._changed:
            return self._health

    def check(self) -> LauncherHealth:
        """Ask the launcher once, waiting at most ``timeout_s``; a check still hung from an
        earlier round is waited on again rather than joined by another thread."""
        if self._hung is not None and self._hung.is_alive():
            self._hung.join(self.timeout_s)
        if self._hung is not None and self._hung.is_alive():
            waited = time.monotonic() - self._hung_since
            return self._publish(False, f"check_ready has not answered for {waited:.0f} s")
        self._hung = None
        outcome: list[str | None] = []
        probe = threading.Thread(
            target=self._probe, args=(outcome,), name="dualtune-launcher-check", daemon=True
        )
        started = time.monotonic()
        probe.start()
        probe.join(self.timeout_s)
        if probe.is_alive():
            self._hung, self._hung_since = probe, started
            return self._publish(False, f"check_ready did not answer within {self.timeout_s:g} s")
        (problem,) = outcome
        return self._publish(problem is None, problem or "ready")

    def _probe(self, outcome: list[str | None]) -> None:
        try:
            self.launcher.check_ready()
        except ServiceError as exc:
            outcome.append(exc.message)
        except Exception as exc:  # any failure of a check is the launcher being down
            outcome.append(f"{type(exc).__name__}: {exc}")
        else:
            outcome.append(None)

    def _publish(self, up: bool, detail: str) -> LauncherHealth:
        health = LauncherHealth(self.launcher.name, up, detail, datetime.now(UTC))
        with self._changed:
            was, self._health = self._health, health
            self._checks += 1
            self._changed.notify_all()
        if was.checked_at is None or was.up != up:
            if up:
                log.info("launcher %s is up", health.name)
            else:
                log.warning("launcher %s is down: %s", health.name, detail)
        if self.on_result is not None:
            self.on_result(up)
        return health

    def wait_for_checks(self, count: int, timeout_s: float) -> bool:
        """Block until ``count`` checks have ended in all (tests; no polling)."""
        with self._changed:
            return self._changed.wait_for(lambda: self._checks >= count, timeout_s)

    def run(self, stop: threading.Event, interval_s: float) -> None:
        while True:
            self.check()
            if stop.wait(interval_s):
                return
